"""run_bench.py --table NAME RESULTS...: each table from small hand-made result rows (the keys the sweeps write), a
run folder read as its file is, and the one-line errors."""
import json
import os
import subprocess
import sys

import pytest

from bench import cli
from bench.report import tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS = 16 * 1024          # B * T of the e2e rows


def e2e(impl, ms, graph=False, status="ok", **kw):
    """A whole-step row as the e2e sweeps write it (tokens/s from ms/step)."""
    return {"sweep": "e2e_graph" if graph else "e2e", "op": "e2e", "impl": impl, "backend": impl,
            "model": kw.pop("model", "gpt2_124m"), "B": 16, "T": 1024, "dtype": "bf16", "pass": "train_step",
            "shape": {"model": "gpt2_124m", "B": 16, "T": 1024}, "config": {"cuda_graph": True} if graph else {},
            "config_label": "cuda_graph" if graph else "default", "cuda_graph": graph, "status": status,
            "message": kw.pop("message", ""), "timer": "cuda_graph" if graph else "cuda_events",
            "ms_per_step": ms, "tokens_per_s": TOKENS / (ms * 1e-3) if ms else None, "device_name": "NVIDIA H100",
            **kw}


def op(op_, impl, shape, ms, pass_="fwd", label="default", config=None, status="ok", **kw):
    """A kernel point's row as a sweep writes it."""
    return {"sweep": "s", "op": op_, "impl": impl, "shape": shape, "dtype": "bf16", "pass": pass_,
            "config": config or {}, "config_label": label, "timer": "cuda_graph", "status": status,
            "message": kw.pop("message", ""), "median_ms": ms if status == "ok" else None,
            "device_name": "NVIDIA H100", **kw}


FMHA = {"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True}
C_FC_FWD = {"M": 16384, "N": 3072, "K": 768, "part": 1}
ROWS = [
    # whole steps: the best compile mode is max-autotune (90 ms); eager_sdpa is nanoGPT's eager model
    e2e("torch_compile", 100.0),
    e2e("torch_compile_max_autotune", 90.0),
    e2e("eager_sdpa", 120.0),
    e2e("triton", 80.0, host_median_ms=83.0,
        breakdown={"linear": 50.0, "fmha": 14.0, "idle": 1.5, "unattributed": 0.25},
        breakdown_detail={"linear:fwd": 20.0, "linear:bwd": 30.0, "fmha:fwd": 5.0, "fmha:bwd": 9.0},
        top_kernels=[["sm90_xmma_gemm_bf16bf16_bf16f32", 12.5]]),
    e2e("triton", 75.0, graph=True),
    e2e("auto", 78.0, impls_used={"fmha": ["cutile"], "linear": ["eager", "triton"]}),
    e2e("cutile", None, status="error", message="CUDA error: misaligned address"),
    # fmha at GPT-2's shape: triton beats cuDNN by 1.25x, cutile does not
    op("fmha", "sdpa_cudnn", FMHA, 0.5, impl_kind="peer"),
    op("fmha", "triton", FMHA, 0.4, label="BLOCK_M=64", config={"BLOCK_M": 64}),
    op("fmha", "triton", FMHA, 0.45, label="BLOCK_M=128", config={"BLOCK_M": 128}),
    op("fmha", "cutile", FMHA, 0.6, label="autotune", config={"autotune": True}, picked_config={"TILE_M": 128}),
    op("fmha", "tilegym", FMHA, None, status="wrong", message="dq: rel-L2 0.31 > 0.032"),
    # c_fc's forward matmul alone: triton within the target, cutile not, one triton config failed to compile
    op("linear", "eager", C_FC_FWD, 1.0),
    op("linear", "triton", C_FC_FWD, 1.0 / 0.96, label="hopper"),
    op("linear", "triton", C_FC_FWD, None, label="hopper_ws", status="compile_error",
       message="out of shared memory"),
    op("linear", "cutile", C_FC_FWD, 1.25, label="hopper"),
]


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def results(tmp_path):
    return write(tmp_path / "run" / "results.jsonl", ROWS)


def table(capsys, *args):
    """(exit code, stdout, stderr lines) of run_bench.py --table ARGS..."""
    code = cli.main(["--table", *args])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def line_of(out, *words):
    """The one output line holding every word."""
    found = [ln for ln in out.splitlines() if all(w in ln for w in words)]
    assert len(found) == 1, (words, out)
    return found[0]


def test_every_table_is_registered_with_a_description():
    assert list(tables.TABLES) == ["e2e-summary", "e2e-breakdown", "targets", "gemm", "configs"]
    assert all(t.about and "\n" not in t.about for t in tables.TABLES.values())


def test_e2e_summary_speedups_over_the_best_compile_mode_and_eager(capsys, results):
    code, out, _ = table(capsys, "e2e-summary", results)
    assert code == 0
    assert "x compile" in out and "x eager_sdpa" in out
    # 90 ms (max-autotune, the best mode) / 80 ms, and 120 / 80
    assert line_of(out, " triton ", " no ").split()[-2:] == ["1.125", "1.500"]
    best = line_of(out, "torch_compile_best (torch_compile_max_autotune)")
    assert "1.000" in best and "182,044" in best
    assert "fmha=cutile, linear=eager/triton" in line_of(out, " auto ")        # what auto ran, per op
    assert "misaligned address" in line_of(out, " cutile ")
    assert "yes" in line_of(out, " triton ", "yes")                             # the graphed step is a row of its own


def test_e2e_breakdown_ms_per_op_side_by_side(capsys, results):
    code, out, _ = table(capsys, "e2e-breakdown", results)
    assert code == 0
    assert "gpt2_124m/triton" in line_of(out, "ms per step")
    assert line_of(out, "step (timer median)").split()[-1] == "80.00"
    assert line_of(out, "host-inclusive median").split()[-1] == "83.00"
    lines = out.splitlines()
    assert lines.index(line_of(out, "linear:bwd")) < lines.index(line_of(out, "fmha:fwd"))   # the largest first
    assert line_of(out, "linear:bwd").split()[-1] == "30.000"
    assert line_of(out, "idle").split()[-1] == "1.500" and line_of(out, "unattributed").split()[-1] == "0.250"
    assert "12.500" in line_of(out, "sm90_xmma_gemm_bf16bf16_bf16f32")


def test_targets_hit_and_miss(capsys, results):
    code, out, _ = table(capsys, "targets", results)
    assert code == 0
    best = line_of(out, "gpt2_124m step, best backend")
    assert best.endswith("| triton+graph 75.00 ms | torch_compile_max_autotune 90.00 ms | 1.200x | hit |")
    assert "| auto 78.00 ms | torch_compile_max_autotune 90.00 ms | 1.154x | hit |" in \
        line_of(out, "without a whole-step CUDA graph")                    # auto is ours too
    assert "not measured" in line_of(out, "gpt2_124m step, `cutile` alone")
    assert "not measured" in line_of(out, "shakespeare_6x768 step, best backend")
    assert line_of(out, "| triton fwd (BLOCK_M=64, cuda_graph)").endswith("| 0.4000 | 0.5000 | 1.250x | hit |")
    assert line_of(out, "| cutile fwd").endswith("| 0.833x | MISS |")
    assert line_of(out, "| c_fc fwd |") == "| c_fc fwd | 1.0000 | 0.960x hit (hopper) | 0.800x MISS (hopper) |"


def test_targets_no_graph_peer_memory_and_compiled_alone(capsys, tmp_path):
    """Without a graph the peer is the fastest compile mode that has none; memory is the best step's against the
    best compile's; `triton alone` may be our GPT compiled around it."""
    rows = [e2e("torch_compile", 40.0, peak_mem_bytes=12e9), e2e("torch_compile_graphs", 30.0, peak_mem_bytes=14e9),
            e2e("triton", 28.0, graph=True, peak_mem_bytes=8e9), e2e("compile+triton", 36.0, peak_mem_bytes=9e9)]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    code, out, _ = table(capsys, "targets", str(path))
    assert code == 0
    assert line_of(out, "without a whole-step CUDA graph").endswith(
        "| compile+triton 36.00 ms | torch_compile 40.00 ms | 1.111x | hit |")      # not reduce-overhead's 30 ms
    assert line_of(out, "peak memory").endswith("| triton+graph 8.00 GB | torch_compile_graphs 14.00 GB | 0.571x | hit |")
    assert "| triton+graph 28.00 ms |" in line_of(out, "`triton` alone")
    # what the lines chose among, so a run cut after one backend of ours does not read as a full table
    assert line_of(out, "- gpt2_124m, chosen among:") == ("- gpt2_124m, chosen among: compile+triton, torch_compile, "
                                                          "torch_compile_graphs, triton+graph")
    # inductor's own graphs are a graph; our GPT compiled with eager kernels is not ours
    rows += [e2e("compile_graphs+triton", 20.0), e2e("compile+eager", 10.0, peak_mem_bytes=1e9),
             e2e("cutile", None, status="error")]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    out = table(capsys, "targets", str(path))[1]
    assert line_of(out, "- gpt2_124m, chosen among:").endswith("; not ok: cutile (error)")
    assert "| compile+triton 36.00 ms |" in line_of(out, "without a whole-step CUDA graph")
    assert "| compile_graphs+triton 20.00 ms |" in line_of(out, "gpt2_124m step, best backend")


def test_gemm_ours_over_cublas_and_best_config(capsys, results):
    code, out, _ = table(capsys, "gemm", results)
    assert code == 0
    assert "c_fc M16384 fwd bf16  cuBLAS 1.0000 ms" in out
    assert line_of(out, "triton", "hopper ").split()[-3:] == ["1.0417ms", "0.96x", "ok"]
    assert line_of(out, "cutile", "hopper").split()[-3:] == ["1.2500ms", "0.80x", "MISS"]
    assert "compile_error  out of shared memory" in line_of(out, "hopper_ws")
    best = line_of(out, "c_fc M16384 fwd bf16", "0.960x")
    assert best.split()[-4:] == ["0.800x", "hopper", "0.960x", "hopper"]       # cutile, then triton


def test_configs_fastest_first_vs_the_fastest_or_a_peer(capsys, results):
    code, out, _ = table(capsys, "configs", results)
    assert code == 0
    head = line_of(out, "fmha B=16,H=12,T=1024,D=64,causal=True bf16 fwd (cuda_graph)")
    group = out.split(head)[1].splitlines()[1:6]
    assert [ln.split()[3] for ln in group[:4]] == ["triton", "triton", "sdpa_cudnn", "cutile"]
    assert group[0].split()[2] == "1.000"                          # the fastest row divides
    assert "picked {'TILE_M': 128}" in group[3]
    assert "wrong" in group[4] and "rel-L2 0.31" in group[4]
    assert "linear" in out and "e2e" not in out                    # whole steps have no tile configs

    code, out, _ = table(capsys, "configs", results, "--peer", "sdpa_cudnn")
    assert code == 0
    assert "sdpa_cudnn 0.5000 ms" in line_of(out, "fmha B=16")
    assert line_of(out, "0.4000 ms").split()[2] == "1.250"
    assert "no sdpa_cudnn row" in line_of(out, "linear M=16384")


def test_a_run_folder_reads_as_its_file_and_shards_merge(capsys, tmp_path, results):
    for name in tables.TABLES:
        assert table(capsys, name, results)[1] == table(capsys, name, os.path.dirname(results))[1]
    # a Slurm run folder: one results.jsonl per shard, read together
    write(tmp_path / "slurm" / "shard-0-of-2" / "results.jsonl", ROWS[:7])
    write(tmp_path / "slurm" / "shard-1-of-2" / "results.jsonl", ROWS[7:])
    assert table(capsys, "targets", str(tmp_path / "slurm"))[1] == table(capsys, "targets", results)[1]


@pytest.mark.parametrize("args, needle", [
    (("gem", "x.jsonl"), "unknown table 'gem'; did you mean gemm? tables: e2e-summary, e2e-breakdown, targets, "),
    (("x.jsonl",), "unknown table 'x.jsonl'; tables: e2e-summary, "),      # the name forgotten
    ((), "--table needs a NAME; tables: "),
    (("gemm",), "--table gemm RESULTS...: name result files or run folders"),
    (("gemm", "/nonexistent/results.jsonl"), "no such results file or folder"),
    (("gemm", "{results}", "--peer", "sdpa_cudnn"), "--peer goes with --table configs, not --table gemm"),
    (("gemm", "{results}", "--sweep", "fmha"), "--sweep and --table are two modes: give one"),
    (("gemm", "{results}", "--report", "{results}"), "--report and --table are two modes"),
    (("gemm", "{results}", "--compare", "{results}", "{results}"), "--compare and --table are two modes"),
])
def test_bad_table_arguments_exit_2_with_one_line(capsys, results, args, needle):
    code, out, err = table(capsys, *(a.format(results=results) for a in args))
    assert code == 2 and not out
    assert len(err) == 1 and err[0].startswith("run_bench.py: error: ") and needle in err[0]


def test_rows_a_table_cannot_show_are_one_line(capsys, tmp_path):
    only_e2e = write(tmp_path / "e2e.jsonl", ROWS[:3])
    code, _, err = table(capsys, "gemm", only_e2e)
    assert code == 2 and err == [f"run_bench.py: error: {only_e2e}: no linear rows (the gemm sweeps)"]
    (tmp_path / "empty").mkdir()
    code, _, err = table(capsys, "e2e-summary", str(tmp_path / "empty"))
    assert code == 2 and err == [f"run_bench.py: error: no result rows in {tmp_path / 'empty'}"]
    assert cli.main(["--peer", "sdpa_cudnn", "--sweep", "fmha"]) == 2      # --peer belongs to --table


def test_table_from_the_command_line(results):
    r = subprocess.run([sys.executable, os.path.join(REPO, "run_bench.py"), "--table", "targets", results],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "| gpt2_124m step, best backend | >= 1.15x |" in r.stdout

