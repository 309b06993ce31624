"""--profile: a point's kernel table and Chrome trace; the report shows them; NVTX ranges name the ops of an
e2e step; the report's charts are interactive where plotly is installed and PNG-only otherwise."""
import json

import pytest

from bench.measure import profile, runner

from bench.report import pages

from bench import sweeps


def _point(pass_="fwd+bwd"):
    p = {"sweep": "t", "op": "gelu", "impl": "eager", "shape": {"M": 64, "C": 256}, "dtype": "fp32", "pass": pass_,
         "config": {}, "config_label": "default"}
    p["point_id"] = sweeps.point_id(p)
    return p


def test_profile_of_an_eager_cpu_point_lists_aten_kernels(tmp_path):
    opts = runner.Options(budget_s=0.05, measure_peaks=False, profile_dir=str(tmp_path / "profiles"))
    row = runner.run_point(_point(), "cpu", opts)
    assert row["status"] == "ok" and row["median_ms"] > 0, row["message"]
    table = row["profile"]
    names = [r["kernel"] for r in table]
    assert any(n.startswith("aten::gelu") for n in names), names          # the forward
    assert any("gelu_backward" in n for n in names), names                # and the backward of fwd+bwd
    assert all(r["source"] == "aten" for r in table if r["kernel"].startswith("aten::"))
    assert sum(r["share"] for r in table) == pytest.approx(1.0, abs=0.02)
    assert all(r["calls"] >= 1 and r["total_us"] > 0 for r in table)
    assert not any(r["kernel"] in profile.RANGES for r in table)          # the harness's own ranges left out
    trace = json.load(open(row["profile_trace"]))
    assert row["profile_trace"].startswith(str(tmp_path / "profiles"))
    assert any(e.get("name") == "timed call" for e in trace["traceEvents"])
    # the report shows it
    res = tmp_path / "r.jsonl"
    res.write_text(json.dumps({**row, "device_name": "CPU"}, default=str) + "\n")
    page = open(pages.build([str(res)], str(tmp_path / "rep"))).read()
    assert "What each point ran (--profile)" in page and "aten::gelu" in page and row["profile_trace"] in page


def test_a_profiler_failure_keeps_the_measured_time(monkeypatch, tmp_path):
    def broken(*a, **k):
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")
    monkeypatch.setattr("torch.profiler.profile", broken)
    opts = runner.Options(budget_s=0.05, measure_peaks=False, profile_dir=str(tmp_path))
    row = runner.run_point(_point("fwd"), "cpu", opts)
    assert row["status"] == "ok" and row["median_ms"] > 0 and "CUPTI" in row["profile_error"]


@pytest.mark.parametrize("name,src", [("triton_poi_fused_gelu_0", "Triton (torch.compile)"),
                                      ("cudnn_generated_fort_native_sdpa_sm90", "cuDNN"),
                                      ("void pytorch_flash::flash_fwd_kernel<...>", "flash-attention"),
                                      ("nvjet_tst_128x256_64x4", "cuBLAS"),
                                      ("void at::native::vectorized_elementwise_kernel<4, ...>", "aten"),
                                      ("_fmha_fwd", "")])
def test_kernel_sources(name, src):
    assert profile.kernel_source(name) == src


def _ok_rows(tmp_path):
    rows = []
    for impl, ms in (("eager", 2.0), ("triton", 1.0)):
        for M in (64, 128):
            p = {**_point("fwd"), "impl": impl, "shape": {"M": M, "C": 256}}
            rows.append({**p, "point_id": sweeps.point_id(p), "status": "ok", "device_name": "NVIDIA H200",
                         "shape_label": f"M{M} C256", "x": M, "bound": "memory", "median_ms": ms, "q1_ms": ms * 0.99,
                         "q3_ms": ms * 1.01, "reps": 50, "gbps": 100 / ms, "tflops": 0.1, "impl_kind": "ours",
                         "mode": "kernel", "config_label": "BLOCK=64" if impl == "triton" else "default"})
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(f)


def test_report_charts_hover_with_config_median_and_quartiles(tmp_path):
    pytest.importorskip("plotly")
    page = open(pages.build([_ok_rows(tmp_path)], str(tmp_path / "rep"))).read()
    assert '<script src="plotly.min.js"></script>' in page and (tmp_path / "rep" / "plotly.min.js").exists()
    assert "config BLOCK=64" in page and "median 1 ms (quartiles 0.99 .. 1.01 ms, 50 reps)" in page
    assert "2x eager" in page
    assert list((tmp_path / "rep").glob("tput_gelu_*.png"))           # the PNGs stay


def test_report_without_plotly_is_png_only_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("bench.report.plotly_charts.plotly_or_none", lambda: None)
    page = open(pages.build([_ok_rows(tmp_path)], str(tmp_path / "rep"))).read()
    assert "need plotly" in page and "plotly.min.js" not in page
    assert 'src="tput_gelu_' in page


def test_e2e_op_ranges_are_nvtx_ranges_too(monkeypatch):
    import torch

    from model import ranges
    from model.ops import Backend
    opened, ended = {}, []

    def start(name):
        opened[len(opened) + 1] = name
        return len(opened)
    monkeypatch.setattr(ranges, "nvtx_enabled", lambda: True)        # as on a CUDA machine
    monkeypatch.setattr(torch.cuda.nvtx, "range_start", start)
    monkeypatch.setattr(torch.cuda.nvtx, "range_end", ended.append)
    b = Backend("eager")
    b.profile_ranges = True                                            # what bench/e2e sets while profiling
    x = torch.randn(8, 32, requires_grad=True)
    w, bias = torch.ones(32, requires_grad=True), torch.zeros(32, requires_grad=True)
    with torch.profiler.profile() as prof:
        b.layer_norm(x, w, bias).sum().backward()
    assert sorted(opened.values()) == ["op:layer_norm", "op:layer_norm:bwd"]
    assert sorted(ended) == sorted(opened)                              # every range closed
    assert {"op:layer_norm", "op:layer_norm:bwd"} <= {e.key for e in prof.key_averages()}   # and still profiled
