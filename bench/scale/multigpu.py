"""One worker process per GPU of this host, points handed out largest first as workers free up.

A worker that dies (OOM killer, a kernel fault that poisons its CUDA context, a kill) costs only the
point it held: that point is recorded as `error` and a fresh worker takes its GPU."""
from __future__ import annotations

import dataclasses
import json
import os
import selectors
import subprocess
import sys
import time

from bench import child_env
from bench.measure.progress import Progress
from bench.measure.runner import keep
from kernels import registry

NOMINAL_TFLOPS, NOMINAL_GBPS = 800.0, 3000.0


def expected_cost(point: dict) -> float:
    """Seconds, roughly: the roofline time of one call times a fixed repeat count, plus a fixed overhead."""
    if point["op"] == "e2e":
        return 60.0
    try:
        spec = registry.spec_of(point["op"])
        shape = spec.full_shape(point["shape"])
        t = max(spec.flops(shape, point["pass"]) / (NOMINAL_TFLOPS * 1e12),
                spec.bytes(shape, point["dtype"], point["pass"]) / (NOMINAL_GBPS * 1e9))
    except (KeyError, TypeError, ValueError):   # a malformed point: it reports its own error when it runs
        t = 0.0
    return 0.2 + 200 * t


@dataclasses.dataclass
class _Worker:
    gpu: int
    proc: subprocess.Popen
    point: dict | None = None
    buf: bytes = b""


def gpu_indices(spec: str) -> list[int]:
    import torch
    n = torch.cuda.device_count()
    if spec == "all":
        return list(range(n))
    idx = [int(x) for x in spec.split(",") if x.strip()]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"--gpus {spec}: GPU {bad[0]} not present (this host has {n})")
    return idx


def run(points: list[dict], gpus: list[int], store, opts, log_dir: str, replicate: bool = False,
        progress: bool = True, worker_device: str = "cuda:0", on_row=None) -> list[dict]:
    """Run points across GPUs (each once, or on every GPU with replicate) into one store."""
    queues = {g: [] for g in gpus}
    shared = sorted(points, key=expected_cost, reverse=True)
    if replicate:
        for g in gpus:
            queues[g] = list(shared)
    os.makedirs(log_dir, exist_ok=True)
    sel = selectors.DefaultSelector()
    workers: dict[int, _Worker] = {}
    rows: list[dict] = []
    bar = Progress(points * (len(gpus) if replicate else 1)) if progress else None
    opts_json = json.dumps(dataclasses.asdict(opts))

    def start(g):
        env = {**child_env(), "CUDA_VISIBLE_DEVICES": str(g), "PYTHONUNBUFFERED": "1"}   # this copy, from the user's dir
        log = open(os.path.join(log_dir, f"worker-gpu{g}.log"), "a")
        proc = subprocess.Popen([sys.executable, "-m", "bench.scale.worker", "--device", worker_device, "--gpu", str(g),
                                 "--opts", opts_json], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                env=env)
        w = _Worker(g, proc)
        workers[g] = w
        sel.register(proc.stdout, selectors.EVENT_READ, w)
        os.set_blocking(proc.stdout.fileno(), False)

    def next_point(g):
        q = queues[g] if replicate else shared
        return q.pop(0) if q else None

    def feed(w):
        p = next_point(w.gpu)
        w.point = p
        if p is None:
            w.proc.stdin.close()
            return
        w.proc.stdin.write((json.dumps(p) + "\n").encode())
        w.proc.stdin.flush()

    def record(row):
        keep(row, store, rows, bar, on_row)

    for g in gpus:
        start(g)
    while workers:
        for key, _ in sel.select(timeout=1.0):
            w = key.data
            try:
                chunk = os.read(w.proc.stdout.fileno(), 1 << 20)
            except BlockingIOError:
                continue
            w.buf += chunk
            while b"\n" in w.buf:
                line, w.buf = w.buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text == "READY":
                    feed(w)
                elif text.startswith("ROW "):
                    record(json.loads(text[4:]))
                    feed(w)
            if not chunk:       # EOF: the worker exited
                _reap(w, sel, workers, record, start, queues, shared, replicate)
        for w in list(workers.values()):
            if w.proc.poll() is not None and w.gpu in workers and workers[w.gpu] is w:
                _reap(w, sel, workers, record, start, queues, shared, replicate)
    # workers that could not even start leave points behind: record them rather than drop them silently
    left = [p for q in ([shared] if not replicate else queues.values()) for p in q]
    for p in left:
        record({**p, "status": "error", "message": "no worker left to run this point (see worker-gpu*.log)"})
    if bar:
        bar.close()
    return rows


def _reap(w, sel, workers, record, start, queues, shared, replicate):
    if workers.get(w.gpu) is not w:
        return
    try:
        sel.unregister(w.proc.stdout)
    except (KeyError, ValueError):
        pass
    code = w.proc.wait()
    del workers[w.gpu]
    if w.point is not None:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        record({**w.point, "status": "error", "message": f"worker on GPU {w.gpu} died ({how}) running this point; "
                "restarted", "gpu_index": w.gpu, "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())})
        remaining = queues[w.gpu] if replicate else shared
        if remaining:
            start(w.gpu)
