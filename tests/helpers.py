import contextlib
import textwrap

from kernels import registry


@contextlib.contextmanager
def fake_gelu_impls():
    """Register tests.fake_impls under op gelu for the duration of a test."""
    import kernels.gelu as pkg
    from tests import fake_impls
    saved = dict(pkg.IMPLS)
    pkg.IMPLS.update({k: f"tests.fake_impls:{v}" for k, v in
                      [(name, [n for n, o in vars(fake_impls).items() if o is impl][0]) for name, impl in fake_impls.ALL.items()]})
    pkg.IMPLS["f_gone"] = fake_impls.GONE
    _clear()
    try:
        yield
    finally:
        pkg.IMPLS.clear()
        pkg.IMPLS.update(saved)
        _clear()


def _clear():
    registry.resolve.cache_clear()
    registry._import_impl.cache_clear()


def gelu_sweeps_file(tmp_path, impls=("eager",), ms=(11, 12, 13, 14, 15, 16), C=33):
    """A sweeps file with one sweep `g`: gelu fp32 fwd at M in ms, C columns, for the given impls."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""
        sweeps:
          g:
            op: gelu
            impls: [{', '.join(impls)}]
            dtypes: [fp32]
            passes: [fwd]
            shapes:
              - {{M: [{', '.join(map(str, ms))}], C: {C}}}
    """))
    return path
