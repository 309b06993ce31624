import contextlib

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
