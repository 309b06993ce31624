"""A first run that respects the user's time: the ETA knows what each impl costs, third-party prints go to
the row's log, peers' autotuning is capped and says so, and a stopped run leaves a readable report."""
import io
import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from bench.measure import progress, tunecap

from bench import sweeps
from tests.helpers import gelu_sweeps_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGINS = "gelu:chatty=tests.plugin_impls:CHATTY,gelu:slow=tests.plugin_impls:SLOW"


def _pt(impl, M):
    p = {"op": "gelu", "impl": impl, "shape": {"M": M, "C": 8}, "dtype": "fp32", "pass": "fwd", "config": {},
         "config_label": "default"}
    p["point_id"] = sweeps.point_id(p)
    return p


def test_eta_charges_each_impl_what_it_has_cost():
    pts = [_pt("eager", m) for m in (1, 2, 3)] + [_pt("tilegym", m) for m in (1, 2, 3)]
    bar = progress.Progress(pts, stream=io.StringIO())
    try:
        assert bar.eta_s() is None
        bar.update({**pts[0], "status": "ok", "duration_s": 1.0})
        assert bar.eta_s() == pytest.approx(5 * 1.0)          # nothing known of tilegym yet: the overall mean
        bar.update({**pts[3], "status": "ok", "duration_s": 100.0})
        # 2 eager points at 1 s, 2 tilegym points at 100 s (a flat mean would say 4 x 50.5 = 202 s)
        assert bar.eta_s() == pytest.approx(2 * 1.0 + 2 * 100.0)
        bar.update({**pts[3], "status": "ok", "duration_s": 100.0})   # a replicated point: counted down once more
        assert bar.eta_s() == pytest.approx(2 * 1.0 + 2 * 100.0)
    finally:
        bar.close()


def test_progress_line_per_point():
    out = io.StringIO()
    pts = [_pt("eager", 1), _pt("eager", 2)]
    bar = progress.Progress(pts, stream=out)
    bar.update({**pts[0], "status": "ok", "median_ms": 1.25, "gbps": 3.0, "duration_s": 0.5, "shape_label": "M1 C8"})
    bar.update({**pts[1], "status": "unavailable", "message": "no GPU", "duration_s": 0.0})
    bar.close()
    text = out.getvalue()
    assert "1/2" in text and "gelu/eager fp32 fwd M1 C8  ok 1.25 ms 3 GB/s" in text
    assert "unavailable: no GPU" in text


class _FakeTuning:
    def __init__(self, config):
        self.best = types.SimpleNamespace(config=config, mean_us=12.5)


def _fake_search(calls):
    def exhaustive_search(space, stream, grid_fn, kernel, args_fn, hints_fn=None, *, quiet=False, **kw):
        calls.append({"n": len(space), "quiet": quiet})
        tried = []
        for cfg in space:           # as cuda.tile.tune does: every candidate compiled and timed in turn
            time.sleep(0.05)
            tried.append(cfg)
        if not quiet:
            print("tuning table")
        return _FakeTuning(tried[-1])
    return exhaustive_search


def test_autotune_cap_stops_the_search_and_is_recorded(monkeypatch):
    import cuda.tile.tune as tune
    calls = []
    monkeypatch.setattr(tune, "exhaustive_search", _fake_search(calls))
    # a peer that imported the name before the harness wrapped it (TileGym does `from ... import`)
    peer = types.ModuleType("fake_peer_module")
    peer.exhaustive_search = tune.exhaustive_search
    monkeypatch.setitem(sys.modules, "fake_peer_module", peer)
    with tunecap.capped(0.12) as log:
        res = peer.exhaustive_search(list(range(40)), None, None, None, None)
    assert calls == [{"n": 40, "quiet": True}]      # the tuner sees its whole space's size, and runs quietly
    assert len(log) == 1 and log[0]["capped"] and 2 <= log[0]["tried"] < 10 and log[0]["candidates"] == 40
    assert res.best.config == log[0]["tried"] - 1 and "12.5 us" in log[0]["best"]
    row = {}
    tunecap.into_row(row, log, 0.12)
    assert row["autotune_capped"] and row["autotune_cap_s"] == 0.12
    # no cap: every candidate; outside a point: the tuner as shipped (not quiet, nothing recorded)
    with tunecap.capped(None) as log:
        tune.exhaustive_search(list(range(4)), None, None, None, None)
    assert log[0]["tried"] == 4 and not log[0]["capped"]
    tune.exhaustive_search(list(range(2)), None, None, None, None)
    assert calls[-1]["quiet"] is False


def test_the_battery_tunes_one_config_and_keeps_it_out_of_the_points_record(monkeypatch):
    import cuda.tile.tune as tune
    calls = []
    monkeypatch.setattr(tune, "exhaustive_search", _fake_search(calls))
    monkeypatch.delenv(tunecap.TILEGYM_SWITCH, raising=False)
    with tunecap.capped(30) as log:
        with tunecap.one_config():
            res = tune.exhaustive_search(list(range(6)), None, None, None, None)
            assert os.environ[tunecap.TILEGYM_SWITCH] == "1"     # TileGym's own switch: its first config, no search
        assert tunecap.TILEGYM_SWITCH not in os.environ
        assert res.best.config == 0 and log == []                # one candidate, the first; not the point's record
        tune.exhaustive_search(list(range(6)), None, None, None, None)
    assert log[0]["tried"] == 6 and not log[0]["capped"]        # the point's own search: its whole space
    monkeypatch.setenv(tunecap.TILEGYM_SWITCH, "0")
    with tunecap.capped(30) as log:
        with pytest.raises(RuntimeError):
            with tunecap.one_config():
                raise RuntimeError("a stress case that raises")
        assert os.environ[tunecap.TILEGYM_SWITCH] == "0"         # a user's own setting comes back, whatever happened
        tune.exhaustive_search(list(range(3)), None, None, None, None)
    assert log[-1]["tried"] == 3                                 # and the point's own deadline and record


def _cli(*args, env_extra=None, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", TILEBENCH_PLUGINS_ENV: PLUGINS, **(env_extra or {})}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, os.path.join(REPO, "run_bench.py"), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300, **kw)


TILEBENCH_PLUGINS_ENV = "TILEBENCH_PLUGINS"


def _sweeps_file(tmp_path, impls, Ms):
    return gelu_sweeps_file(tmp_path, impls, Ms, C=64)


def test_third_party_prints_go_to_the_rows_log(tmp_path):
    s = _sweeps_file(tmp_path, ["chatty"], [17])
    r = _cli("--sweeps-file", str(s), "--sweep", "g", "--device", "cpu", "--out", str(tmp_path / "res"),
             "--budget", "0.02", "--no-report")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "chatty:" not in r.stdout + r.stderr        # the console has the harness's lines only
    row = json.loads((tmp_path / "res" / "results.jsonl").read_text().splitlines()[0])
    assert row["status"] == "ok"
    for line in ("chatty: tuning table row", "chatty: a line from C on fd 2", "chatty: a warning on stderr"):
        assert line in row["log"]


def test_sigterm_leaves_a_readable_report(tmp_path):
    s = _sweeps_file(tmp_path, ["eager"], list(range(20, 44)))
    out, rep = tmp_path / "res", tmp_path / "rep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.Popen([sys.executable, "run_bench.py", "--sweeps-file", str(s), "--sweep", "g", "--device",
                             "cpu", "--out", str(out), "--report-dir", str(rep), "--budget", "0.3"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (results.exists() and len(results.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    done = len(results.read_text().splitlines())
    assert 2 <= done < 24, "the run should have been stopped midway"
    index = rep / "index.html"
    assert f"report (rebuilt as points finish): {index}" in stderr.splitlines()[1]    # said at the start
    assert "terminated (SIGTERM)" in stderr and f"report: {index}" in stderr
    page = index.read_text()
    assert "Who wins where" in page and page.rstrip().endswith("</html>")
    assert page.count("M20 C64") >= 1          # the finished points are in it
