"""One training step of a GPT on fixed random batches: what the harness times (bench/measure/e2e.py) and what
auto's whole-step trials time (model/auto_step.py), so both measure the same step."""
from contextlib import nullcontext

import torch
from torch.profiler import record_function

from kernels.registry import DTYPES


def batches(vocab_size, B, T, device, seed, n=2) -> list:
    """n (inputs, targets) batches of random tokens: a step's cost does not depend on the values."""
    gen = torch.Generator(device=device).manual_seed(seed)
    data = [torch.randint(vocab_size, (B, T + 1), generator=gen, device=device) for _ in range(n)]
    return [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]


def autocast(device, dtype):
    return torch.autocast(torch.device(device).type, dtype=DTYPES[dtype]) if dtype != "fp32" else nullcontext()


def train_step_fn(model, fwd, opt, ctx, clip, data, mark_step=False):
    """step(i): one training step on batch i (cycling), returning its loss (detached)."""
    def step(i):
        x, y = data[i % len(data)]
        if mark_step:   # cudagraph trees (mode reduce-overhead): each iteration a new step
            torch.compiler.cudagraph_mark_step_begin()
        with ctx:
            _, loss = fwd(x, y)
        loss.backward()
        if clip:
            with record_function("step:clip"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        with record_function("step:optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step
