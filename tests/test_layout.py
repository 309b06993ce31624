"""The code's shape: kernels -> model -> bench, no import climbs back up and no module imports itself round a
circle, counting imports inside functions too (a lazy import is still a dependency)."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("kernels", "model", "bench")
LAYER = {"kernels": 0, "model": 1, "bench": 2}


def _modules() -> dict[str, str]:
    """module name -> file, for every .py of the project's packages."""
    out = {}
    for pkg in PACKAGES:
        for root, _, names in os.walk(os.path.join(ROOT, pkg)):
            for n in names:
                if n.endswith(".py"):
                    rel = os.path.relpath(os.path.join(root, n), ROOT)[:-3].replace(os.sep, ".")
                    out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(root, n)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (at top level or in a function)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        is_pkg = path.endswith("__init__.py")
        for node in ast.walk(ast.parse(open(path).read(), path)):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:   # relative: resolve against this module's package
                    parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                while t and t not in mods:      # `from pkg import mod` names a module; `from mod import fn` not
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):   # a package's own __init__ is no edge
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each as the path that closes it (Tarjan's strongly connected components)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_circle():
    assert cycles(import_graph()) == []


def test_no_import_climbs_a_layer():
    up = [(m, d) for m, deps in import_graph().items() for d in deps
          if LAYER[d.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert up == []


def test_the_check_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    g = import_graph()
    assert "kernels.rows" in g["bench.report.compare"] and "bench.measure.check" in g["bench.measure.stress"]


@pytest.mark.parametrize("axis", __import__("kernels.rows", fromlist=["POINT_AXES"]).POINT_AXES)
def test_two_rows_differing_in_one_axis_are_two_points_everywhere(axis, tmp_path):
    """A point id, a --compare key, a report group (best config picks within it: config axes excepted) and
    --resume all tell the two rows apart."""
    from bench.measure.store import ResultStore
    from bench.report import compare, pages
    from kernels.rows import TUNING_AXES, group_key, point_id, point_key
    base = {"op": "gelu", "impl": "eager", "shape": {"M": 8, "C": 16}, "dtype": "bf16", "pass": "fwd",
            "config": {}, "config_label": "default", "timer": "cuda_events", "extra": {},
            "status": "ok", "median_ms": 1.0, "device_name": "GPU X"}
    other = {"op": "layer_norm", "impl": "triton", "shape": {"M": 9, "C": 16}, "dtype": "fp16", "pass": "fwd+bwd",
             "config": {"BLOCK": 64}, "config_label": "BLOCK=64", "timer": "cuda_graph", "extra": {"steps": 3}}
    a, b = dict(base), {**base, axis: other[axis]}
    for r in (a, b):
        r["point_id"] = point_id(r)
    assert a["point_id"] != b["point_id"]
    assert compare.key_of(a) != compare.key_of(b) and point_key(a) != point_key(b)
    if axis not in TUNING_AXES:
        assert group_key(a) != group_key(b)
        assert len(pages.best_configs(pages.frame([a, b]))) == 2     # neither row stands in for the other
    store = ResultStore(str(tmp_path / "results.jsonl"))
    store.append(a)
    store.append(b)
    assert store.done_ids() == {a["point_id"], b["point_id"]}
    assert len(pages.frame([a, b]).drop_duplicates(subset=["point_id"])) == 2
