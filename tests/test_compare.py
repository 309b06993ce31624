"""--compare: two runs point by point, a ratio with a confidence interval and a verdict per point, and a
CI gate (--fail-above) that fails on a confident slowdown only."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bench.report import compare, compare_page

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(impl="triton", M=64, median=1.0, samples=None, status="ok", timer="cuda_events", label="default", **kw):
    r = {"op": "gelu", "impl": impl, "shape": {"M": M, "C": 64}, "shape_label": f"M{M} C64", "dtype": "bf16",
         "pass": "fwd", "config": {}, "config_label": label, "timer": timer, "status": status,
         "device_name": "NVIDIA H200", "point_id": f"{M:016x}"}
    if status == "ok":
        s = samples if samples is not None else [median] * 5
        r.update(median_ms=float(np.median(s)), q1_ms=float(np.percentile(s, 25)), q3_ms=float(np.percentile(s, 75)),
                 samples_ms=list(map(float, s)))
    r.update(kw)
    return r


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _noisy(center, n=200, rel=0.01, seed=0):
    return center * (1 + rel * np.random.default_rng(seed).standard_normal(n))


@pytest.mark.parametrize("ratio,lo,hi,want", [
    (1.10, 1.08, 1.12, "slower"), (0.90, 0.88, 0.92, "faster"), (1.005, 0.995, 1.015, "same"),
    (1.10, 0.95, 1.30, "noisy"),          # beyond the band but the interval holds 1
    (1.01, 1.005, 1.015, "same"),         # confidently slower by 1 %: within the band
    (1.015, 1.01, 1.04, "noisy"),         # confidently slower, maybe beyond 2 %, maybe not
])
def test_verdicts(ratio, lo, hi, want):
    assert compare.verdict(ratio, lo, hi) == want


def test_bootstrap_interval_from_samples(tmp_path):
    base = [_row(M=64, samples=_noisy(1.0, seed=1)), _row(M=65, samples=_noisy(1.0, seed=2)),
            _row(M=66, samples=_noisy(1.0, rel=0.3, seed=3))]
    new = [_row(M=64, samples=_noisy(1.10, seed=4)), _row(M=65, samples=_noisy(1.0, seed=5)),
           _row(M=66, samples=_noisy(1.0, rel=0.3, seed=6))]
    c = compare.compare(_write(tmp_path / "a.jsonl", base), _write(tmp_path / "b.jsonl", new))
    by = c.points.set_index("shape")
    assert by.loc["M64 C64", "verdict"] == "slower" and by.loc["M64 C64", "ci_lo"] < 1.10 < by.loc["M64 C64", "ci_hi"]
    assert by.loc["M65 C64", "verdict"] == "same"
    assert by.loc["M66 C64", "verdict"] == "noisy"     # 30 % spread: cannot tell
    assert set(by["ci"]) == {"bootstrap"}
    assert c.per_impl.iloc[0]["geomean ratio"] == pytest.approx((1.10 * 1.0 * 1.0) ** (1 / 3), rel=0.02)
    assert list(c.over(0.05)["shape"]) == ["M64 C64"] and c.over(0.15).empty
    again = compare.compare(str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert again.points.equals(c.points)                # the same interval on every run


def test_join_by_every_axis_and_status_changes(tmp_path):
    base = [_row(M=64), _row(M=64, timer="cuda_graph"), _row(M=64, label="BLOCK=128", config={"BLOCK": 128}),
            _row(M=70), _row(M=71), _row(M=73, status="unavailable", message="no GPU")]
    new = [_row(M=64, median=0.5), _row(M=64, timer="cuda_graph", median=1.0), _row(M=72),
           _row(M=70, status="wrong", message="rel-L2 0.3"), _row(M=71, status="unsupported", impl="triton"),
           _row(M=73, status="unavailable", message="no GPU")]
    c = compare.compare(_write(tmp_path / "a.jsonl", base), _write(tmp_path / "b.jsonl", new))
    assert sorted(c.points["timer"]) == ["cuda_events", "cuda_graph"]      # graph and events never paired
    assert c.points.set_index("timer").loc["cuda_events", "verdict"] == "faster"
    assert len(c.only_base) == 1 and "[BLOCK=128]" in c.only_base[0]
    assert len(c.only_new) == 1 and "M72" in c.only_new[0]
    assert len(c.status_changed) == 2                      # unavailable in both runs is no news
    st = c.status_changed.set_index("new status")
    assert st.loc["wrong", "base status"] == "ok" and "rel-L2" in st.loc["wrong", "new message"]
    assert list(c.newly_broken()["new status"]) == ["wrong"]                # unsupported is not broken
    text = compare.text(c, fail_above=0.05)
    assert "only in BASE (1)" in text and "FAIL: 0 point(s) slower" in text and "1 point(s) ok in BASE and broken" in text


def test_host_time_falls_back_to_kernel_time_in_old_rows(tmp_path):
    base = [_row(M=64, median=1.0)]                                       # an old file: no host_* fields
    new = [_row(M=64, median=1.0, host_median_ms=3.0, host_q1_ms=3.0, host_q3_ms=3.0, host_samples_ms=[3.0] * 5)]
    c = compare.compare(_write(tmp_path / "a.jsonl", base), _write(tmp_path / "b.jsonl", new), time="host")
    assert c.points.iloc[0]["ratio"] == pytest.approx(3.0) and c.points.iloc[0]["verdict"] == "slower"


def test_rows_without_samples_get_the_wider_quartile_interval(tmp_path):
    old = _row(M=64, median=1.0, q1_ms=0.98, q3_ms=1.02)
    old.pop("samples_ms")
    new = _row(M=64, median=1.2, q1_ms=1.18, q3_ms=1.22)
    new.pop("samples_ms")
    c = compare.compare(_write(tmp_path / "a.jsonl", [old]), _write(tmp_path / "b.jsonl", [new]))
    p = c.points.iloc[0]
    assert p["ci"] == "quartiles" and p["ci_lo"] == pytest.approx(1.18 / 1.02) and p["verdict"] == "slower"


def test_compare_page_without_plotly_still_has_its_chart(tmp_path, monkeypatch):
    c = compare.compare(_write(tmp_path / "a.jsonl", [_row(M=64), _row(M=65)]),
                        _write(tmp_path / "b.jsonl", [_row(M=64, median=2.0), _row(M=65)]))
    monkeypatch.setattr("bench.report.plotly_charts.plotly_or_none", lambda: None)
    page = open(compare_page.write(c, str(tmp_path / "page"), fail_above=0.05)).read()
    assert "need plotly" in page and 'src="compare.png"' in page and (tmp_path / "page" / "compare.png").exists()
    assert "FAIL" in page and "plotly.min.js" not in page


def test_threshold_parsing():
    assert compare.parse_threshold("5%") == pytest.approx(0.05) and compare.parse_threshold("2.5") == pytest.approx(0.025)
    with pytest.raises(compare.CompareError, match="percentage"):
        compare.parse_threshold("five")


def _cli(*args, sleep_ms="0"):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TILEBENCH_PLUGINS": "gelu:slow=tests.plugin_impls:SLOW",
           "TILEBENCH_TEST_SLEEP_MS": sleep_ms}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, os.path.join(REPO, "run_bench.py"), *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)


def test_compare_two_cpu_runs_one_slowed(tmp_path):
    sweeps = tmp_path / "s.yaml"
    sweeps.write_text(textwrap.dedent("""
        sweeps:
          g:
            op: gelu
            impls: [eager, slow]
            dtypes: [fp32]
            passes: [fwd]
            shapes:
              - {M: [32, 48], C: 64}
    """))
    common = ("--sweeps-file", str(sweeps), "--sweep", "g", "--device", "cpu", "--budget", "0.1", "--no-report")
    for name, sleep in (("base", "0"), ("new", "3")):
        r = _cli(*common, "--out", str(tmp_path / name), sleep_ms=sleep)
        assert r.returncode == 0, r.stderr[-2000:]
    page_dir = tmp_path / "page"
    r = _cli("--compare", str(tmp_path / "base"), str(tmp_path / "new"), "--fail-above", "5%",
             "--report-dir", str(page_dir))
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    slow_lines = [ln for ln in r.stdout.splitlines() if "gelu/slow" in ln]
    assert len(slow_lines) == 2 and all(ln.rstrip().endswith("slower") for ln in slow_lines)
    # (the eager points may read slower too: two CPU runs on a shared machine drift apart)
    assert "FAIL: " in r.stdout and "point(s) slower than +5.0% with 95% confidence" in r.stdout
    assert f"compare page: {page_dir / 'index.html'}" in r.stdout
    page = (page_dir / "index.html").read_text()
    assert "gelu/slow" in page and "slower" in page and (page_dir / "compare.png").exists()
    # a run against itself passes the gate
    r = _cli("--compare", str(tmp_path / "base"), str(tmp_path / "base" / "results.jsonl"), "--fail-above", "5%",
             "--report-dir", str(tmp_path / "self"))
    assert r.returncode == 0 and "pass: no point slower" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (("--compare", "/nonexistent/a", "/nonexistent/b"), "/nonexistent/a: no such results file or folder"),
    (("--fail-above", "5%", "--sweep", "gelu"), "--fail-above goes with --compare"),
])
def test_compare_usage_errors_are_one_line(args, needle):
    r = _cli(*args)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_nothing_in_common_is_an_error_not_a_pass(tmp_path, capsys):
    """Two runs with no point in both (other sweeps, another timer) compare nothing: exit 2, not `pass`."""
    from bench import cli
    a = _write(tmp_path / "a.jsonl", [_row(M=64), _row(M=65), _row(M=66)])
    b = _write(tmp_path / "b.jsonl", [_row(M=64, timer="cuda_graph"), _row(M=65, timer="cuda_graph")])
    with pytest.raises(compare.CompareError, match="no point is in both runs"):
        compare.compare(a, b)
    assert cli.main(["--compare", a, b, "--fail-above", "5%", "--report-dir", str(tmp_path / "page")]) == 2
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and "nothing compared" in err[0] and "BASE has 3 points, NEW has 2" in err[0]
    assert "pass" not in out.out and not (tmp_path / "page").exists()


def test_a_capped_autotune_that_picked_otherwise_is_retuned_not_slower():
    """Two runs of a peer whose autotuning was cut off at the time cap timed different configs: that is listed as
    `retuned`, not failed by --fail-above (the rows' autotune says what each run tried)."""
    from bench.report import compare as cmp
    base = {"op": "fmha", "impl": "tilegym", "shape": {"T": 8}, "dtype": "bf16", "pass": "fwd", "status": "ok",
            "median_ms": 1.0, "samples_ms": [1.0, 1.001, 0.999, 1.0], "timer": "cuda_events",
            "autotune": [{"candidates": 6, "tried": 6, "capped": False, "best": "namespace(TILE_M=64, TILE_N=64) 111.1 us"}],
            "autotune_capped": False}
    new = {**base, "median_ms": 1.1, "samples_ms": [1.1, 1.101, 1.099, 1.1], "autotune_capped": True,
           "autotune": [{"candidates": 6, "tried": 1, "capped": True, "best": "namespace(TILE_M=64, TILE_N=32) 176.2 us"}]}
    c = cmp.compare_rows([base], [new], "a", "b")
    assert list(c.points["verdict"]) == ["retuned"] and c.over(0.05).empty
    same_pick = {**new, "autotune": base["autotune"]}
    assert list(cmp.compare_rows([base], [same_pick], "a", "b").points["verdict"]) == ["slower"]
