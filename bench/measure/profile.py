"""--profile: what a point really ran. After a point is timed, torch.profiler captures its checked call
(the full op: forward, and backward for fwd+bwd) and a few timed calls; the row gets a per-kernel table
(name, calls, total us, share of the captured kernel time, the library it came from) and the Chrome
trace is written beside the results (open it in https://ui.perfetto.dev or chrome://tracing).

On a GPU the table lists device kernels (so torch.compile's own Triton kernels, cuDNN's or flash's are
told apart from aten's); on a CPU, the aten ops by self time."""
from __future__ import annotations

import os

TIMED_CALLS = 3
TOP = 25                  # rows kept in the table: a row is one JSON line
RANGES = ("checked call", "timed call")

# (substring of the lower-cased kernel name, where it comes from); first match wins
SOURCES = (("triton_", "Triton (torch.compile)"), ("cudnn", "cuDNN"), ("flash", "flash-attention"),
           ("cutlass", "CUTLASS"), ("nvjet", "cuBLAS"), ("xmma", "cuBLAS"), ("gemm", "cuBLAS"),
           ("cublas", "cuBLAS"), ("at::native", "aten"), ("aten::", "aten"))


def kernel_source(name: str) -> str:
    low = name.lower()
    return next((src for needle, src in SOURCES if needle in low), "")


def kernel_table(prof, on_gpu: bool) -> list[dict]:
    """Per kernel: calls, total us and share, largest first; the harness's own ranges left out."""
    from torch.autograd import DeviceType
    rows = []
    for e in prof.key_averages():
        if e.key in RANGES:
            continue
        if on_gpu:
            if e.device_type != DeviceType.CUDA:
                continue
            us = e.self_device_time_total
        else:
            us = e.self_cpu_time_total
        if us > 0:
            rows.append({"kernel": e.key, "calls": int(e.count), "total_us": round(float(us), 3)})
    total = sum(r["total_us"] for r in rows) or 1.0
    rows.sort(key=lambda r: -r["total_us"])
    for r in rows:
        r["share"] = round(r["total_us"] / total, 4)
        r["source"] = kernel_source(r["kernel"])
    return rows[:TOP]


def capture(row: dict, checked_call, timed_call, setup, device: str, trace_dir: str) -> None:
    """Profile one checked call and TIMED_CALLS timed calls (setup() before each, untimed); put the table
    in row["profile"] and the trace's path in row["profile_trace"]. A profiler failure is recorded in
    row["profile_error"] and costs the point nothing else."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function
    on_gpu = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    try:
        with profile(activities=activities) as prof:
            with record_function(RANGES[0]):
                checked_call()
            for _ in range(TIMED_CALLS):
                if setup:
                    setup()
                with record_function(RANGES[1]):
                    timed_call()
            if on_gpu:
                torch.cuda.synchronize()
        row["profile"] = kernel_table(prof, on_gpu)
        os.makedirs(trace_dir, exist_ok=True)
        path = os.path.join(os.path.abspath(trace_dir), f"{row.get('point_id', 'point')}.json")
        prof.export_chrome_trace(path)
        row["profile_trace"] = path
    except Exception as e:  # noqa: BLE001 - shown in the report; the point's measured time must survive
        row["profile_error"] = f"{type(e).__name__}: {str(e).strip()[:300]}"


def report_items(df) -> dict | None:
    """What the report shows of --profile (bench/report/templates/report.html): per profiled point a one-line head,
    its kernel table and its trace's path; the points the profiler failed on. None without profiled rows."""
    from bench.report import cells
    import pandas as pd
    if "profile" not in df or not df["profile"].map(lambda p: isinstance(p, list)).any():
        return None
    points = []
    for _, r in df[df["profile"].map(lambda p: isinstance(p, list))].iterrows():
        t = pd.DataFrame(r["profile"])
        top = t.iloc[0] if not t.empty else None
        sources = ", ".join(sorted({s for s in t.get("source", []) if s})) or "?"
        what = f"{r['op']}/{r['impl']} {r.get('shape_label', '')} {r.get('dtype', '')} {r.get('pass', '')}"
        if r.get("config_label") not in (None, "default"):
            what += f" [{r['config_label']}]"
        head = f"{what}: {len(t)} kernels ({sources})" + \
            (f", top {top['kernel'][:80]} {top['share']:.0%}" if top is not None else "")
        points.append({"head": head, "table": cells.from_df(t), "trace": str(r.get("profile_trace", ""))})
    errors = []
    if "profile_error" in df:
        errors = [f"{r['op']}/{r['impl']} {r.get('shape_label', '')}: {r['profile_error']}"
                  for _, r in df[df["profile_error"].notna()].iterrows()]
    return {"timed_calls": TIMED_CALLS, "points": points, "errors": errors}
