"""On a GPU: do the harness's two timers measure what they say? Prints a table, exits 1 on a miss.

    source .devpack/setup.sh && PYTHONPATH=.:$PYTHONPATH python tools/timer_probes.py

1. Host spin: a call that spends 20/50/100 us on the host, then launches one tiny kernel. The harness's
   host-inclusive time (timing.measure_host) must be within 10 % of a synchronised wall clock written here,
   independently; the kernel timer (flushed events) is printed beside it to show what it leaves out.
2. Fresh gradients under graphs: eager LayerNorm fwd+bwd (16384x768 bf16 and 16384x3072) graph-timed by the
   harness must be within 5 % of the same call timed with fresh gradients (grad=None before each rep, events),
   not the accumulate-into-.grad time the capture of a warm call used to record.
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from bench.measure import timing


def spin_call(us: float, x: torch.Tensor):
    def f():
        t_end = time.perf_counter() + us * 1e-6
        while time.perf_counter() < t_end:
            pass
        x.add_(1.0)
    return f


def wall_ms(f, reps=200) -> float:
    """Synchronised wall time per call, median: the independent reference."""
    for _ in range(10):
        f()
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        f()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def ln_fwd_bwd(M, C):
    x = torch.randn(M, C, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(C, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(C, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(M, C, device="cuda", dtype=torch.bfloat16)

    def f():
        F.layer_norm(x, (C,), w, b).backward(g)

    def setup():
        for t in (x, w, b):
            t.grad = None
    return f, setup


def main() -> int:
    misses = 0
    print(f"{'probe':38s} {'harness ms':>11s} {'reference ms':>13s} {'ratio':>6s}  note")
    x = torch.zeros(256, device="cuda")
    for us in (20, 50, 100):
        f = spin_call(us, x)
        # interleaved rounds, median of each: the VM's host jitters between rounds by more than within one
        hosts, refs, noflush = [], [], []
        for _ in range(5):
            hosts.append(timing.measure_host(f, "cuda", budget_s=0.5).median_ms)
            noflush.append(timing.measure_host(f, "cuda", budget_s=0.5, flush_l2=False).median_ms)
            refs.append(wall_ms(f))
        host, ref = statistics.median(hosts), statistics.median(refs)
        print(f"  host spin {us} us: host-inclusive without the L2 flush {statistics.median(noflush):.4f} ms")
        kern = timing.measure(f, "cuda", budget_s=1.0).median_ms
        ok = abs(host / ref - 1) <= 0.10
        misses += not ok
        print(f"{'host spin ' + str(us) + ' us: host-inclusive':38s} {host:11.4f} {ref:13.4f} {host / ref:6.3f}  "
              f"{'ok' if ok else 'MISS'} (kernel timer says {kern:.4f} ms)")
    for M, C in ((16384, 768), (16384, 3072)):
        f, setup = ln_fwd_bwd(M, C)
        graph = timing.measure(f, "cuda", setup=setup, budget_s=1.0, mode="graph").median_ms
        fresh = timing.measure(f, "cuda", setup=setup, budget_s=1.0).median_ms
        ok = abs(graph / fresh - 1) <= 0.05
        misses += not ok
        print(f"{f'LN fwd+bwd {M}x{C} bf16: graph vs fresh':38s} {graph:11.4f} {fresh:13.4f} {graph / fresh:6.3f}  "
              f"{'ok' if ok else 'MISS'}")
    print(f"trust probes: {'all within bounds' if not misses else str(misses) + ' missed'}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
