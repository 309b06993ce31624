"""run_bench.py end to end on the CPU, as a user meets it."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, os.path.join(REPO, "run_bench.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_fmha_quick_on_cpu_reports(tmp_path):
    r = run("--sweep", "fmha", "--quick", "--device", "cpu", "--out", str(tmp_path / "res"),
            "--report-dir", str(tmp_path / "rep"), "--budget", "0.05")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fastest" in r.stdout and "not run here:" in r.stdout
    assert "fmha/sdpa_cudnn" in r.stdout          # every other impl listed with its reason
    res = rows(tmp_path / "res" / "results.jsonl")
    assert {x["status"] for x in res} >= {"ok", "unavailable"}
    assert any(x["impl"] == "eager" and x["status"] == "ok" and x["median_ms"] > 0 for x in res)
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Who wins where" in html and "why not available" in html
    assert list((tmp_path / "rep").glob("tput_fmha_*.png"))


def test_malformed_sweeps_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweeps:\n  x:\n    op: gelu\n    shapez: []\n")
    r = run("--sweeps-file", str(bad), "--sweep", "x")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bad.yaml: sweep 'x': key 'shapez'" in lines[0]


def test_unknown_sweep_and_impl_exit_2():
    r = run("--sweep", "nope")
    assert r.returncode == 2 and "unknown sweep 'nope'" in r.stderr and "fmha" in r.stderr
    r = run("--sweep", "gelu", "--impl", "magic")
    assert r.returncode == 2 and "unknown impl 'magic'" in r.stderr


def test_list_shows_availability():
    r = run("--list", "--device", "cpu")
    assert r.returncode == 0
    assert "fmha" in r.stdout and "eager" in r.stdout and "unavailable: " in r.stdout
    # user sweeps first, each beside its description; then the tuning sweeps under a heading, with their file
    out = r.stdout
    assert out.index("\nsweeps:") < out.index("\ntuning sweeps") < out.index("\nops and impls:")
    user, tuning = out.split("\ntuning sweeps")[0], out.split("\ntuning sweeps")[1].split("\nops and impls:")[0]
    assert "first look" in next(ln for ln in user.splitlines() if ln.startswith("  fmha "))
    assert "tuning/fmha.yaml" in next(ln for ln in tuning.splitlines() if ln.startswith("  fmha_tune_fwd "))
    assert "fmha_tune" not in user and "  layer_norm " not in tuning


def test_killed_sweep_resumes_without_redoing_points(tmp_path):
    sweeps = tmp_path / "s.yaml"
    sweeps.write_text(textwrap.dedent("""
        sweeps:
          g:
            op: gelu
            impls: [eager]
            dtypes: [fp32]
            passes: [fwd]
            shapes:
              - {M: [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22], C: 33}
    """))
    out = tmp_path / "res"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "run_bench.py", "--sweeps-file", str(sweeps), "--sweep", "g",
                             "--device", "cpu", "--out", str(out), "--budget", "0.4", "--no-report"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if results.exists() and len(rows(results)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = rows(results)
    assert 3 <= len(before) < 12, "the run should have been killed midway"
    r = run("--sweeps-file", str(sweeps), "--sweep", "g", "--device", "cpu", "--out", str(out), "--budget", "0.02",
            "--resume", "--no-report")
    assert r.returncode == 0, r.stderr[-1000:]
    assert f"{len(before)} points already done" in r.stderr
    after = rows(results)
    ids = [x["point_id"] for x in after]
    assert len(ids) == len(set(ids)) == 12                 # complete, no point twice
    assert after[: len(before)] == before                   # nothing measured was lost or redone


def test_report_merges_files(tmp_path):
    from bench.report import pages
    base = {"op": "gelu", "shape_label": "M8 C8", "x": 64.0, "dtype": "bf16", "pass": "fwd", "status": "ok",
            "bound": "memory", "config_label": "default", "mode": "kernel", "roofline_frac": 0.5}
    files = []
    for dev, scale in (("GPU A", 1.0), ("GPU B", 0.7)):
        p = tmp_path / dev.replace(" ", "") / "results.jsonl"
        p.parent.mkdir()
        with open(p, "w") as f:
            for impl, ms, kind in (("eager", 2.0, "baseline"), ("triton", 1.0, "ours"), ("liger", 1.5, "peer")):
                row = {**base, "impl": impl, "impl_kind": kind, "median_ms": ms * scale, "gbps": 1 / (ms * scale),
                       "device_name": dev, "point_id": f"{impl}", "date": "2026-11-24T00:00:00+00:00"}
                f.write(json.dumps(row) + "\n")
        files.append(str(p))
    r = run("--report", *files, "--report-dir", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Across devices" in html and "GPU A" in html and "GPU B" in html
    w = pages.winners(pages.best_configs(pages.load(files)))
    assert set(w["winner"]) == {"triton"} and all(abs(v - 2.0) < 1e-9 for v in w["vs eager"])
    assert all(abs(v - 1.5) < 1e-9 for v in w["ours vs best peer"])


@pytest.mark.parametrize("args,needle", [(("--report", "/nonexistent/x.jsonl"), "no such results"),
                                         (("--static", "--arch", "hopper"), "not an arch"),
                                         (("--sweep", "fmha", "--device", "gpu"), "expected cpu, cuda or cuda:N")])
def test_bad_arguments_are_one_line(args, needle):
    r = run(*args)
    assert r.returncode == 2 and needle in r.stderr


def test_report_draws_training_logs_side_by_side(tmp_path):
    """`model.train --log-json` files are report inputs too: their loss curves are drawn together."""
    for backend, last in (("eager", 2.0), ("triton", 2.1)):
        log = {"status": "ok", "backend": backend, "device_name": "GPU A", "date": "2026-11-24T00:00:00Z",
               "iter": 3, "config": {"model": "tiny", "batch_size": 4, "block_size": 8, "dtype": "bf16"},
               "train": [[0, 4.2], [1, 3.0], [2, last]],
               "summary": {"last_loss": last, "median_ms_per_step": 1.5, "median_tokens_per_s": 100.0}}
        (tmp_path / f"converge_{backend}.json").write_text(json.dumps(log))
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 65}))   # not a training log: skipped
    r = run("--report", str(tmp_path), "--report-dir", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Loss curves" in html and (tmp_path / "rep" / "e2e_losses.png").stat().st_size > 1000
    from bench.report import pages
    df = pages.load([str(tmp_path / "converge_eager.json"), str(tmp_path / "meta.json")])
    assert list(df["impl"]) == ["eager"] and df["losses"][0][-1] == [2, 2.0]


def test_report_shows_each_preset_on_each_gpu(tmp_path):
    """Points of a `presets` sweep from two GPUs become one table: every (device, preset) a column."""
    import pandas as pd

    from bench.report import pages
    base = {"op": "gelu", "shape_label": "M8 C8", "dtype": "bf16", "pass": "fwd", "status": "ok", "impl": "triton",
            "timer": "cuda_graph"}
    rows = [{**base, "device_name": dev, "config_label": f"preset:{p}", "median_ms": ms}
            for dev, p, ms in (("GPU A", "hopper", 1.0), ("GPU A", "blackwell", 1.2), ("GPU B", "hopper", 0.9),
                               ("GPU B", "blackwell", 0.8))]
    rows.append({**base, "device_name": "GPU A", "config_label": "default", "median_ms": 0.5})   # not a preset
    t = pages.presets_compare(pd.DataFrame(rows))
    assert len(t) == 1
    assert t.loc[0, "GPU A preset:blackwell"] == 1.2 and t.loc[0, "GPU B preset:blackwell"] == 0.8
    assert not any("default" in c for c in t.columns)
    assert pages.presets_compare(pd.DataFrame([rows[-1]])).empty


@pytest.mark.parametrize("status, code", [("oom", 1), ("wrong", 1), ("compile_error", 1), ("unavailable", 0)])
def test_strict_fails_on_every_failure_status(tmp_path, monkeypatch, status, code):
    from bench import cli
    from bench.measure import runner

    def fake_run(points, device, store, opts, on_row=None):   # every point ends with `status`
        for p in points:
            store.append({**p, "status": status, "message": "x", "shape_label": "s"})
    monkeypatch.setattr(runner, "run", fake_run)
    args = ["--sweep", "gelu", "--quick", "--impl", "eager", "--device", "cpu", "--out", str(tmp_path), "--no-report"]
    assert cli.main(args) == 0
    assert cli.main(args + ["--strict"]) == code


@pytest.mark.parametrize("args, needle", [
    (("--sweep", "gelu", "--budget", "-1"), "--budget -1: expected seconds > 0"),
    (("--sweep", "gelu", "--budget", "0"), "--budget 0: expected seconds > 0"),
    (("--sweep", "gelu", "--budget", "nan"), "--budget nan: expected seconds > 0"),
    (("--sweep", "gelu", "--compile-timeout", "0"), "--compile-timeout 0: expected seconds > 0"),
    (("--report", "x.jsonl", "--budget", "-1"), "--budget -1"),      # a negative value is an error anywhere
])
def test_budget_and_compile_timeout_must_be_positive(tmp_path, capsys, args, needle):
    from bench import cli
    assert cli.main([*args, "--device", "cpu", "--impl", "eager", "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("run_bench.py: error: ")
    assert not (tmp_path / "res").exists()            # checked before any work


def _result_row(impl="eager", ms=1.0):
    return {"op": "gelu", "impl": impl, "status": "ok", "shape_label": "M8 C8", "dtype": "fp32", "pass": "fwd",
            "bound": "memory", "config_label": "default", "mode": "kernel", "median_ms": ms, "gbps": 1 / ms,
            "device_name": "CPU", "point_id": impl, "impl_kind": "baseline"}


@pytest.mark.parametrize("text, why", [
    ('{"a": 1}\n{"b": 2}\n', "no result rows (a result row has op, impl, status)"),
    ("", "empty file"),
    ("\x00\x01 this is not json\n", "not JSON lines"),
])
def test_report_on_a_file_without_result_rows_is_one_line(tmp_path, capsys, text, why):
    from bench import cli
    bad = tmp_path / "x.jsonl"
    bad.write_text(text)
    assert cli.main(["--report", str(bad), "--report-dir", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"run_bench.py: error: {bad}: {why}")
    assert not (tmp_path / "rep").exists()


def test_report_keeps_the_good_files_and_warns_once_per_bad_one(tmp_path, capsys):
    from bench import cli
    good = tmp_path / "good" / "results.jsonl"
    good.parent.mkdir()
    good.write_text("".join(json.dumps(_result_row(i, ms)) + "\n" for i, ms in (("eager", 2.0), ("triton", 1.0))))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n')
    notes = tmp_path / "notes.json"                   # named on the command line: not a training log
    notes.write_text('{"vocab_size": 65}')
    assert cli.main(["--report", str(good), str(bad), str(notes), "--report-dir", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("warning: ") for line in err)
    assert f"{bad}: no result rows" in err[0] and f"{notes}: not a training log" in err[1]
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Who wins where" in html and "triton" in html


@pytest.mark.parametrize("argv", [["--sweep", "fmha", "--report", "x"], ["--list", "--static"],
                                  ["--compare", "a", "b", "--table", "targets", "x"], ["--doctor", "--sweep", "fmha"]])
def test_two_modes_are_one_line_not_one_ignored(argv, capsys):
    from bench import cli
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "are two modes: give one" in err


def test_help_has_examples(capsys):
    from bench import cli
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "run_bench.py --sweep fmha" in out and "one at a time" in out
