"""The report answers "which impl is fastest here, and by how much against the best peer?": the speed-up table's
reference and ratios, unsettled points flagged, one colour per impl in every chart, readable configs, and notes only
where they apply."""
import json
import re

import pytest

from bench.report import charts, colors, pages, plotly_charts, speedup

DEVICE = "NVIDIA H100 80GB HBM3"
# (impl, kind, ms at M=64, ms at M=128): two peers; the best of them differs between the two shapes
TIMES = [("cutile", "ours", 1.0, 2.0), ("triton", "ours", 1.2, 2.2), ("liger", "peer", 1.1, 1.8),
         ("torch_compile", "peer", 1.5, 1.6), ("eager", "baseline", 3.0, 6.0)]


def _row(impl, kind, M, ms, **kw):
    samples = [ms * f for f in (0.99, 1.0, 1.0, 1.01, 0.995, 1.005)]
    r = {"op": "gelu", "impl": impl, "impl_kind": kind, "shape": {"M": M, "C": 768}, "shape_label": f"M{M} C768",
         "x": float(M), "dtype": "bf16", "pass": "fwd", "config": {}, "config_label": "default",
         "timer": "cuda_graph", "status": "ok", "bound": "memory", "median_ms": ms, "q1_ms": ms * 0.995,
         "q3_ms": ms * 1.005, "iqr_rel": 0.01, "reps": 50, "samples_ms": samples, "gbps": 100 / ms,
         "roofline_frac": 0.1 / ms, "device": "cuda", "device_name": DEVICE, "mode": "kernel",
         "date": "2026-12-06T00:00:00+00:00", "git_commit": "abc1234", "schema_version": 1}
    r["point_id"] = f"{impl}-{M}"
    r.update(kw)
    return r


def _rows():
    rows = []
    for impl, kind, a, b in TIMES:
        rows.append(_row(impl, kind, 64, a))
        extra = {"iqr_rel": 0.08, "q1_ms": b * 0.96, "q3_ms": b * 1.04} if impl == "triton" else {}   # never settled
        if impl == "cutile":
            extra = {"config": {"BLOCK_M": 128, "num_warps": 8}, "config_label": "BLOCK_M=128,num_warps=8",
                     "picked_config": {"BLOCK_M": 128, "num_warps": 8, "LPT": None},
                     "stress_declined": ["one_row"]}
        rows.append(_row(impl, kind, 128, b, **extra))
    # a third shape where no peer ran: eager is the reference
    rows += [_row("cutile", "ours", 256, 2.0), _row("eager", "baseline", 256, 8.0)]
    return rows


@pytest.fixture
def results(tmp_path):
    f = tmp_path / "results.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return str(f)


def test_speedup_against_the_best_peer(results):
    df = pages.load([results])
    best = pages.best_configs(df[df["status"] == "ok"])
    sp = speedup.table(best).set_index(["shape_label", "impl"])
    # M=64: liger (1.1 ms) is the best peer; M=128: torch_compile (1.6 ms); eager never, while a peer ran
    assert set(sp.loc["M64 C768", "ref_impl"]) == {"liger"}
    assert set(sp.loc["M128 C768", "ref_impl"]) == {"torch_compile"}
    assert sp.loc[("M64 C768", "cutile"), "ratio"] == pytest.approx(1.1)
    assert sp.loc[("M64 C768", "triton"), "ratio"] == pytest.approx(1.1 / 1.2)
    assert sp.loc[("M128 C768", "cutile"), "ratio"] == pytest.approx(0.8)
    assert sp.loc[("M128 C768", "eager"), "ratio"] == pytest.approx(1.6 / 6.0)
    assert sp.loc[("M128 C768", "torch_compile"), "is_ref"] and sp.loc[("M128 C768", "torch_compile"), "ratio"] == 1
    # the interval comes from the samples and holds the ratio
    r = sp.loc[("M64 C768", "cutile")]
    assert r["ci"] == "bootstrap" and r["lo"] <= r["ratio"] <= r["hi"] and r["hi"] / r["lo"] < 1.05
    # the unsettled point, and only it, is flagged
    flagged = set(sp.index[sp["unsettled"]])
    assert ("M128 C768", "triton") in flagged and all(s == "M128 C768" for s, _ in flagged)
    assert not sp.loc[("M64 C768", "triton"), "unsettled"]
    # where no peer ran, eager is the reference and says so
    assert tuple(sp.loc[("M256 C768", "cutile"), ["ref_impl", "ref_kind"]]) == ("eager", "eager")
    assert sp.loc[("M256 C768", "cutile"), "ratio"] == pytest.approx(4.0)
    w = pages.winners(best).set_index("shape")
    assert w.loc["M64 C768", "best peer"] == "liger" and w.loc["M64 C768", "ours vs best peer"] == pytest.approx(1.1)
    assert not w.loc["M128 C768", "unsettled"] and pd_isna(w.loc["M256 C768", "best peer"])   # cutile settled


def pd_isna(v):
    return v is None or v != v


def test_page_writes_ratios_coloured_and_flags_what_applies(results, tmp_path):
    page = open(pages.build([results], str(tmp_path / "rep"))).read()
    assert re.search(r'class="num up"[^>]*>1\.10×<', page)               # cutile vs liger at M=64
    assert re.search(r'class="num down"[^>]*>0\.80×', page)              # cutile vs torch_compile at M=128
    assert re.search(r'class="num down unsettled"[^>]*>0\.73× ~<', page)  # triton's unsettled ratio
    assert "BLOCK_M=128, num_warps=8" in page and "{&#39;BLOCK_M&#39;" not in page and "{'BLOCK_M'" not in page
    assert "Stress cases declined" in page and "one_row" in page
    assert "never settled" in page
    # the notes that apply, and only those: a graph-timed GPU run
    assert "Timer cuda_graph" in page and "Timer cuda_events" not in page and "TRITON_INTERPRET" not in page
    assert (tmp_path / "rep" / "speedup_gelu_NVIDIA_H100_80GB_HBM3.png").stat().st_size > 5000


def test_cpu_rows_get_the_cpu_note(tmp_path):
    rows = [_row(i, k, 64, a, timer="cpu_clock", device="cpu", device_name="CPU") for i, k, a, _ in TIMES]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = open(pages.build([str(f)], str(tmp_path / "rep"))).read()
    assert "TRITON_INTERPRET" in page and "Timer cpu_clock" in page


def test_one_colour_per_impl_across_every_chart(results, tmp_path, monkeypatch):
    pytest.importorskip("plotly")
    figs = []

    def keep(fig, outdir):
        figs.append(fig)
        return "<div></div>"
    monkeypatch.setattr(plotly_charts, "div", keep)
    pages.build([results], str(tmp_path / "rep"))
    assert len(figs) >= 2                  # the speed-up and the throughput charts
    seen: dict[str, set] = {}
    in_figs: dict[str, int] = {}
    for fig in figs:
        names = set()
        for t in fig.data:
            m = t.marker
            c = m.line.color if t.type == "scatter" else m.color
            if t.name:
                seen.setdefault(t.name, set()).add(c if isinstance(c, str) else None)
                names.add(t.name)
        for n in names:
            in_figs[n] = in_figs.get(n, 0) + 1
    for impl, cs in seen.items():
        assert cs == {colors.impl_color(impl)}, (impl, cs)
    assert in_figs["cutile"] >= 2 and in_figs["liger"] >= 2
    # a fixed map: known impls keep their colour, and an unknown name gets the same colour every time
    assert colors.impl_color("cutile") == colors.KNOWN["cutile"] != colors.impl_color("triton")
    assert colors.impl_color("my_plugin") == colors.impl_color("my_plugin") and colors.impl_color("triton +graph") == \
        colors.impl_color("triton")


def test_impls_far_below_the_best_peer_are_named_not_drawn(results, tmp_path):
    rows = _rows() + [_row("sdpa_math", "peer", 64, 50.0)]
    df = pages.load([])  # noqa: F841 - empty input is an empty frame
    import pandas as pd
    best = pages.best_configs(pages.frame(rows).pipe(lambda d: d[d["status"] == "ok"]))
    sp = speedup.table(best)
    c = charts.speedup(sp[sp["op"] == "gelu"], "t", str(tmp_path), "x", interactive=False)
    assert "sdpa_math" in c.note and c.png and isinstance(sp, pd.DataFrame)


def test_each_gpu_has_its_own_best_peer(tmp_path):
    """A report merging two GPUs: a point's speed-ups are against the best peer on the same GPU, never another's."""
    rows = [_row("cutile", "ours", 64, 1.0, device_name="GPU A"), _row("liger", "peer", 64, 2.0, device_name="GPU A"),
            _row("cutile", "ours", 64, 1.0, device_name="GPU B"), _row("liger", "peer", 64, 0.5, device_name="GPU B")]
    for r in rows:
        r["point_id"] += r["device_name"]
    df = pages.frame(rows)
    sp = speedup.table(pages.best_configs(df)).set_index(["device_name", "impl"])
    assert sp.loc[("GPU A", "cutile"), "ratio"] == pytest.approx(2.0)
    assert sp.loc[("GPU B", "cutile"), "ratio"] == pytest.approx(0.5)
