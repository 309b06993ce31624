"""sweeps.yaml: validation errors name file, sweep and key; expansion, quick, tokens and shards."""
import os
import textwrap

import pytest

from bench import sweeps as sw
from kernels import registry

GOOD = """
sweeps:
  ln:
    op: layer_norm
    dtypes: [bf16, fp32]
    shapes:
      - {M: [7, 9], C: 65}
  att:
    op: fmha
    impls: [eager]
    shapes:
      - {tokens: 1024, T: [128, 512], H: 2, D: 16}
  both:
    include: [ln, att]
"""


def write(tmp_path, text):
    p = tmp_path / "sweeps.yaml"
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_repo_sweeps_file_is_valid():
    s = sw.load("sweeps.yaml")
    for name in ("fmha", "layer_norm", "gelu", "linear", "cross_entropy", "linear_cross_entropy", "all", "e2e"):
        assert name in s
    # `all` covers every op that has a sweep of its own name (an op with no sweep yet is not required)
    covered = {x.op for x in sw.resolve_names(s, ["all"])}
    assert covered >= {op for op in registry.OPS if op in s and s[op].op == op}, covered
    # the README's first command is a first look (~3 min on an H200); the full product is one name away
    first, full = s["fmha"], s["fmha_full"]
    assert first.dtypes == ["bf16"] and first.passes == ["fwd", "fwd+bwd"] and first.impls == full.impls
    assert len(sw.points(first, "cuda")) <= 40 < len(sw.points(full, "cuda"))


def test_expansion(tmp_path):
    s = sw.load(write(tmp_path, GOOD))
    pts = sw.points(s["ln"], "cpu")
    assert len(pts) == 2 * 2 * 2 * len(s["ln"].impls)
    att = sw.points(s["att"], "cpu")
    assert {(p["shape"]["B"], p["shape"]["T"]) for p in att} == {(8, 128), (2, 512)}
    assert list(att[0]["shape"]) == ["B", "H", "T", "D"]      # canonical order
    quick = sw.points(s["ln"], "cpu", quick=True)
    assert len(quick) == 2 * 1 * 2 * len(s["ln"].impls)
    assert len({p["point_id"] for p in pts}) == len(pts)


@pytest.mark.parametrize("bad,needle", [
    ("sweeps:\n  x:\n    op: layer_norm\n    dtype: [bf16]\n    shapes: [{M: 1, C: 2}]\n", "sweep 'x': key 'dtype': unknown key"),
    ("sweeps:\n  x:\n    op: nope\n    shapes: [{M: 1}]\n", "sweep 'x': key 'op': unknown op 'nope'"),
    ("sweeps:\n  x:\n    op: gelu\n    impls: [cuda_magic]\n    shapes: [{M: 1, C: 2}]\n", "key 'impls': unknown impl 'cuda_magic'"),
    ("sweeps:\n  x:\n    op: gelu\n    dtypes: bf16\n    shapes: [{M: 1, C: 2}]\n", "key 'dtypes': must be a list"),
    ("sweeps:\n  x:\n    op: gelu\n    shapes: [{M: 1, Q: 2}]\n", "unknown shape key 'Q'"),
    ("sweeps:\n  x:\n    op: gelu\n    shapes: [{M: 1.5, C: 2}]\n", "M must be an int"),
    ("sweeps:\n  x:\n    op: gelu\n    passes: [backward]\n    shapes: [{M: 1, C: 2}]\n", "unknown pass 'backward'"),
    ("sweeps:\n  x:\n    op: gelu\n    configs: {triton: {BLOCK: 64}}\n    shapes: [{M: 1, C: 2}]\n", "key 'configs'"),
    ("sweeps:\n  x:\n    include: [y]\n", "key 'include': unknown sweep 'y'"),
    ("sweeps:\n  x:\n    op: e2e\n    backends: [tritn]\n    shapes: [{model: tiny, B: 1, T: 8}]\n", "unknown backend 'tritn'"),
    ("sweeps:\n  x:\n    op: e2e\n    backends: ['cutile,linear=cublas9']\n    shapes: [{model: tiny, B: 1, T: 8}]\n",
     "unknown impl ['cublas9']"),
    ("sweeps: [1, 2]\n", "'sweeps' mapping"),
    ("sweeps:\n  x: {op: gelu\n", "not valid YAML"),
    ("extra: 1\nsweeps: {}\n", "unknown top-level key"),
])
def test_malformed_files_give_one_clear_line(tmp_path, bad, needle):
    with pytest.raises(sw.SweepError) as e:
        sw.load(write(tmp_path, bad))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and msg.startswith("sweeps.yaml")


def test_e2e_backends_take_a_per_op_mix(tmp_path):
    """The model's backend syntax (model/ops.py): a default plus per-op overrides, as one e2e point."""
    s = sw.load(write(tmp_path, "sweeps:\n  x:\n    op: e2e\n    backends: [triton, 'cutile,linear=eager']\n"
                                "    shapes: [{model: tiny, B: 1, T: 8}]\n"))
    assert {p["impl"] for p in sw.points(s["x"], "cpu")} == {"triton", "cutile,linear=eager"}


def test_unknown_sweep_lists_known_and_the_closest(tmp_path):
    s = sw.load(write(tmp_path, GOOD))
    with pytest.raises(sw.SweepError, match=r"unknown sweep 'nope' \(known: ln, att, both\)"):
        sw.resolve_names(s, ["nope"])
    with pytest.raises(sw.SweepError, match="unknown sweep 'atn'; did you mean 'att'"):
        sw.resolve_names(s, ["atn"])


def test_a_sweeps_yaml_in_the_working_directory_replaces_same_named_sweeps(tmp_path):
    (tmp_path / "sweeps.yaml").write_text("sweeps:\n  fmha:\n    op: gelu\n    impls: [eager]\n"
                                          "    shapes:\n      - {M: 4, C: 8}\n"
                                          "  mine:\n    op: gelu\n    shapes:\n      - {M: 4, C: 8}\n")
    s = sw.load_default(cwd=str(tmp_path))
    assert s["fmha"].op == "gelu" and "mine" in s and s["layer_norm"].op == "layer_norm"   # the rest still there
    assert sw.load_default()["fmha"].op == "fmha"


def test_shards_partition_the_sweep():
    s = sw.load("sweeps.yaml")
    pts = []
    for x in sw.resolve_names(s, ["all"]):
        pts += sw.points(x, "cuda")
    n = 4
    shards = [sw.shard(pts, i, n) for i in range(n)]
    ids = [p["point_id"] for sh in shards for p in sh]
    assert sorted(ids) == sorted(p["point_id"] for p in pts)     # the union is the sweep, no point twice
    assert all(len(sh) > 0 for sh in shards)


@pytest.mark.parametrize("body, key, words", [
    ("op: fmha\n    shapes:\n      - {B: 2, H: 4, T: 128}", "shapes", "lacks 'D'"),
    ("op: fmha\n    shapes:\n      - {tokens: 512, H: 4, D: 64}", "shapes", "needs T and no B"),
    ("op: fmha\n    shapes:\n      - {tokens: 512, B: 2, T: 128, H: 4, D: 64}", "shapes", "needs T and no B"),
    ("op: layer_norm\n    impls: [triton]\n    shapes:\n      - {M: 4, C: 8}\n    configs: {triton: {BLOCK_Q: [1]}}",
     "configs", "no tile parameter 'BLOCK_Q'"),
    ("op: layer_norm\n    impls: [triton]\n    shapes:\n      - {M: 4, C: 8}\n    configs: {triton: {ROWS: [3]}}",
     "configs", "ROWS=3 not in"),
    ("op: layer_norm\n    impls: [triton]\n    shapes:\n      - {M: 4, C: 8}\n    presets: {triton: [volta]}",
     "presets", "no preset 'volta'"),
    ("op: layer_norm\n    impls: [eager]\n    shapes:\n      - {M: 4, C: 8}\n    presets: {triton: [hopper]}",
     "presets", "not in this sweep's impls"),
])
def test_bad_shapes_configs_and_presets_fail_on_load(tmp_path, body, key, words):
    """What would otherwise crash mid-run (a shape lacking a key) or turn every point into `error` (a
    misspelt tile parameter or preset) is one line at load time, naming file, sweep and key."""
    with pytest.raises(sw.SweepError) as e:
        sw.load(write(tmp_path, f"sweeps:\n  bad:\n    {body}\n"))
    msg = str(e.value)
    assert "\n" not in msg and "sweeps.yaml" in msg and "'bad'" in msg and f"'{key}'" in msg and words in msg


def test_timer_is_part_of_a_points_identity():
    """Launch-timed and graph-timed rows of one point are two points: --resume and the report keep them apart."""
    from bench import sweeps as sw
    s = sw.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sweeps.yaml"))
    plain = sw.points(s["layer_norm"], "cuda")
    graph = sw.points(s["layer_norm"], "cuda", mode="graph")
    assert {p["timer"] for p in plain} == {"cuda_events"} and {p["timer"] for p in graph} == {"cuda_graph"}
    assert not {p["point_id"] for p in plain} & {p["point_id"] for p in graph}
    assert {p["timer"] for p in sw.points(s["layer_norm"], "cpu", mode="graph")} == {"cpu_clock"}


def test_quick_takes_the_default_config_not_the_first_preset():
    from bench import sweeps as sw
    s = sw.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sweeps.yaml"))
    pts = sw.points(s["presets_layer_norm"], "cuda", quick=True)
    assert pts and {p["config_label"] for p in pts} == {"default"} and all(p["config"] == {} for p in pts)


# what the message names -> (the sweep's body, the key it names)
NOT_POSITIVE = {
    "M=0": ("op: gelu\n    shapes:\n      - {M: 0, C: 8}", "shapes"),
    "B=-2": ("op: fmha\n    shapes:\n      - {B: -2, H: 4, T: 128, D: 64}", "shapes"),
    "B=0": ("op: fmha\n    shapes:\n      - {B: [1, 0], H: 4, T: 128, D: 64}", "shapes"),
    "tokens=0": ("op: fmha\n    shapes:\n      - {tokens: 0, T: 128, H: 4, D: 64}", "shapes"),
    "C=-1": ("op: gelu\n    shapes:\n      - {M: 4, C: 8}\n    cpu_shapes:\n      - {M: 4, C: -1}", "cpu_shapes"),
    "e2e B=0": ("op: e2e\n    shapes:\n      - {model: tiny, B: 0, T: 8}", "shapes"),
    "T=-8": ("op: e2e\n    shapes:\n      - {model: tiny, B: 1, T: -8}", "shapes"),
    "steps 0": ("op: e2e\n    steps: 0\n    shapes:\n      - {model: tiny, B: 1, T: 8}", "steps"),
    "-5": ("op: e2e\n    converge_iters: -5\n    shapes:\n      - {model: tiny, B: 1, T: 8}", "converge_iters"),
}


@pytest.mark.parametrize("words", list(NOT_POSITIVE))
def test_sizes_and_step_counts_must_be_positive(tmp_path, words):
    """A size of 0 or below is a typo, not a point: one line at load time (it used to run and fail as `error`)."""
    body, key = NOT_POSITIVE[words]
    words = words.split()[-1]
    with pytest.raises(sw.SweepError) as e:
        sw.load(write(tmp_path, f"sweeps:\n  bad:\n    {body}\n"))
    msg = str(e.value)
    assert "\n" not in msg and "sweeps.yaml" in msg and "'bad'" in msg and f"'{key}'" in msg and words in msg
    assert "> 0" in msg


def test_options_are_not_sizes(tmp_path):
    """fmha's causal: false and linear's part: 0 (the whole op) are options, not sizes of 0."""
    s = sw.load(write(tmp_path, "sweeps:\n  att:\n    op: fmha\n    impls: [eager]\n    shapes:\n"
                                "      - {B: 1, H: 2, T: 16, D: 8, causal: [true, false]}\n"
                                "  mm:\n    op: linear\n    impls: [eager]\n    shapes:\n"
                                "      - {M: 4, N: 8, K: 8, part: [0, 3]}\n"))
    assert {p["shape"]["causal"] for p in sw.points(s["att"], "cpu")} == {True, False}
    assert {p["shape"]["part"] for p in sw.points(s["mm"], "cpu")} == {0, 3}


# --- sweeps.yaml (what users run) and tuning/*.yaml (the experiments behind the defaults) ---------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNING_FILES = sorted(f for f in os.listdir(os.path.join(ROOT, "tuning")) if f.endswith(".yaml"))


def test_every_user_sweep_has_a_one_line_description():
    s = sw.load(os.path.join(ROOT, "sweeps.yaml"))
    missing = [n for n, x in s.items() if not x.description]
    assert not missing, f"sweeps.yaml: no description for {missing}"
    assert all("\n" not in x.description and len(x.description) <= 120 for x in s.values())
    assert not any(x.tuning for x in s.values())


def test_user_sweeps_name_presets_not_tuning_configs():
    """A tuning config is an experiment: a sweep users run names presets (per-generation configs) only."""
    for s in sw.load(os.path.join(ROOT, "sweeps.yaml")).values():
        for impl, names in s.presets.items():
            declared = sw._declared_impl(s.op, impl)
            if declared is not None:
                assert set(names) <= set(declared.presets), (s.name, impl, names)


@pytest.mark.parametrize("name", TUNING_FILES)
def test_every_tuning_file_says_its_question_last_run_and_outcome(name):
    """Each tuning file is headed by a comment block: the question it asks, when it last ran and what it moved."""
    import re
    text = open(os.path.join(ROOT, "tuning", name)).read()
    head = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        head.append(line)
    keys = [ln.split(":", 1)[0] for ln in head if re.match(r"# [A-Z][a-z]+( [a-z]+)?:", ln)]
    assert keys[:3] == ["# Question", "# Last run", "# Outcome"], (name, keys)
    last = next(ln for ln in head if ln.startswith("# Last run:"))
    assert re.search(r"\d{4}-\d{2}-\d{2}", last) and ("on an H" in last or "not run on a GPU yet" in last), last
    s = sw.load(os.path.join(ROOT, "tuning", name))
    assert s and all(x.tuning for x in s.values())


def test_default_set_is_sweeps_yaml_and_every_tuning_file_each_name_once():
    files = sw.default_files()
    assert os.path.basename(files[0]) == "sweeps.yaml"
    assert [os.path.basename(f) for f in files[1:]] == TUNING_FILES
    everything = sw.load_default()
    per_file = [sw.load(f) for f in files]
    assert sum(map(len, per_file)) == len(everything)        # unique names: nothing shadowed
    assert {n for n, x in everything.items() if x.tuning} == {n for s in per_file[1:] for n in s}
    for name in ("fmha_tune", "gemm_triton_new", "gemm_cutile_knobs", "tune_gelu", "gemm"):   # still by name
        assert everything[name].tuning and sw.resolve_names(everything, [name])


def test_every_sweeps_cpu_points_expand():
    """Every sweep of both kinds still expands on a CPU, each preset or tuning config it names found."""
    def resolver(op, name):
        return sw._declared_impl(op, name)
    everything = sw.load_default()
    for s in sw.resolve_names(everything, list(everything)):
        pts = sw.points(s, "cpu", resolver=resolver)
        assert pts, s.name
        assert not [p for p in pts if "__missing_preset__" in p["config"]], s.name
        assert len({p["point_id"] for p in pts}) == len(pts), s.name


def _tree(tmp_path, user, tuning):
    (tmp_path / "tuning").mkdir()
    (tmp_path / "sweeps.yaml").write_text(textwrap.dedent(user))
    for name, text in tuning.items():
        (tmp_path / "tuning" / name).write_text(textwrap.dedent(text))
    return str(tmp_path)


def test_a_name_defined_twice_names_both_files(tmp_path):
    one = "sweeps:\n  g:\n    op: gelu\n    impls: [eager]\n    shapes: [{M: 4, C: 8}]\n"
    root = _tree(tmp_path, one, {"a.yaml": "sweeps: {}\n", "b.yaml": one})
    with pytest.raises(sw.SweepError) as e:
        sw.load_default(root)
    msg = str(e.value)
    assert "'g'" in msg and "sweeps.yaml" in msg and "tuning/b.yaml" in msg and "\n" not in msg


def test_tuning_files_load_with_sweeps_yaml_and_include_across_files(tmp_path):
    root = _tree(tmp_path, "sweeps:\n  g:\n    op: gelu\n    impls: [eager]\n    shapes: [{M: 4, C: 8}]\n",
                 {"t.yaml": "sweeps:\n  t:\n    op: gelu\n    impls: [eager]\n    shapes: [{M: 5, C: 8}]\n"
                            "  both:\n    include: [g, t]\n"})
    s = sw.load_default(root)
    assert [x.name for x in sw.resolve_names(s, ["both"])] == ["g", "t"]
    assert not s["g"].tuning and s["t"].tuning and s["both"].tuning
    # --sweeps-file: that file alone, whose include of another file's sweep is then unknown
    with pytest.raises(sw.SweepError, match=r"tuning/t.yaml: sweep 'both': key 'include': unknown sweep 'g'"):
        sw.load(os.path.join(root, "tuning", "t.yaml"))


def test_presets_may_name_a_tuning_config(tmp_path):
    """A sweep's presets take an impl's presets and its tuning configs (both labelled preset:NAME); an unknown
    name is one line listing both kinds."""
    pytest.importorskip("triton")
    from kernels.fmha import triton as ft
    good = write(tmp_path, "sweeps:\n  t:\n    op: fmha\n    impls: [triton]\n"
                           "    shapes: [{B: 1, H: 2, T: 65, D: 64}]\n    presets: {triton: [hopper, tune_lpt]}\n")
    s = sw.load(good)["t"]
    cfgs = dict(sw.expand_configs(s, "triton", ft.IMPL))
    assert cfgs == {"preset:hopper": ft.PRESETS["hopper"], "preset:tune_lpt": ft.TUNING["tune_lpt"]}
    assert ft.IMPL.config(cfgs["preset:tune_lpt"])["LPT"] is True
    bad = write(tmp_path, "sweeps:\n  t:\n    op: fmha\n    impls: [triton]\n"
                          "    shapes: [{B: 1, H: 2, T: 65, D: 64}]\n    presets: {triton: [tune_nope]}\n")
    with pytest.raises(sw.SweepError) as e:
        sw.load(bad)
    msg = str(e.value)
    assert "no preset 'tune_nope'" in msg and "presets: hopper" in msg and "tuning: tune_lpt" in msg
