"""The whole training step as one CUDA graph: forward, backward, gradient clipping and the AdamW step.

At shakespeare_char sizes (B=64, T=256) a step is hundreds of small kernels and the GPU waits on Python
launching them; replaying a captured graph launches them all at once. What that takes:

- static input/target buffers: each step copies its batch into them, then replays;
- warm-up steps on a side stream first (Triton/cuTile JIT, autotuning, cuBLAS workspaces, the optimizer's
  state), which are real training steps on real batches;
- AdamW with capturable=True (its step count stays on the device) and the learning rate as a device
  tensor updated in place, so the schedule goes on working inside the graph;
- clip_grad_norm_(foreach=True) is captured as is: the norm and the clamp stay on the device (no sync
  unless error_if_nonfinite, which is off);
- autocast with cache_enabled=False, as torch.cuda.graphs requires.

Not captured, so refused with one line (refusal()): the CPU, fp16 (GradScaler checks for inf on the host
and skips steps), DDP (its all-reduce hooks), and torch.compile (mode="reduce-overhead" graphs by itself).
Gradient accumulation is captured: the graph holds every micro-step.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch

from kernels.registry import DTYPES


def refusal(device: str, dtype: str, world: int = 1, compile: bool = False) -> str | None:
    """None if the step can be captured with these settings, else the one-line reason it cannot."""
    if not str(device).startswith("cuda"):
        return f"--cuda-graph needs a CUDA device (device is {device})"
    if not torch.cuda.is_available():
        return "--cuda-graph needs a CUDA device (torch.cuda.is_available() is False)"
    if dtype == "fp16":
        return ("--cuda-graph with dtype fp16 is not supported: GradScaler checks for inf/NaN on the host and "
                "skips steps, which a graph cannot; use --dtype bf16 or fp32")
    if world > 1:
        return f"--cuda-graph under DDP ({world} processes) is not supported: its all-reduce hooks are not captured"
    if compile:
        return "--cuda-graph with --compile is not supported: use one or the other (or compile mode reduce-overhead)"
    return None


def make_capturable(optimizer, device) -> None:
    """AdamW state the graph can hold: capturable groups, lr as a device tensor, step counts on the device.
    Done after any checkpoint restore (load_state_dict brings back the saved groups' settings)."""
    for g in optimizer.param_groups:
        g["capturable"] = True
        lr = g["lr"]
        g["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=device)
    for st in optimizer.state.values():
        step = st.get("step")
        if isinstance(step, torch.Tensor) and step.device != torch.device(device):
            st["step"] = step.to(device=device, dtype=torch.float32)


class GraphedStep:
    """Call with the step's micro-batches [(x, y), ...] and its learning rate; returns the step's loss (a
    device scalar, the sum of the micro-steps' loss / accum, as Trainer.step returns).

    The first `warmup` calls run eagerly on a side stream; the next captures the step and replays it (a
    capture does not execute anything); every later call copies its batch in and replays."""

    def __init__(self, model, optimizer, params, B: int, T: int, accum: int, grad_clip: float, dtype: str,
                 device, warmup: int = 3, log=None):
        self.model, self.optimizer, self.params = model, optimizer, list(params)
        self.accum, self.grad_clip, self.warmup = accum, grad_clip, max(1, warmup)
        self.device, self.log = device, log or (lambda m: None)
        self.x = torch.zeros((accum, B, T), dtype=torch.long, device=device)
        self.y = torch.zeros((accum, B, T), dtype=torch.long, device=device)
        dev_type = torch.device(device).type
        self.ctx = (torch.autocast(dev_type, dtype=DTYPES[dtype], cache_enabled=False) if dtype != "fp32"
                    else nullcontext())
        self.side = None
        self.graph = None
        self.loss = None
        self.calls = 0
        self.capture_s = None
        make_capturable(optimizer, device)
        self.lrs = [g["lr"] for g in optimizer.param_groups]

    def _body(self) -> torch.Tensor:
        total = torch.zeros((), device=self.device)
        for m in range(self.accum):
            with self.ctx:
                _, loss = self.model(self.x[m], self.y[m])
                loss = loss / self.accum
            loss.backward()
            total += loss.detach().float()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.optimizer.step()
        return total

    def __call__(self, batches, lr: float) -> torch.Tensor:
        if len(batches) != self.accum:
            raise ValueError(f"{len(batches)} micro-batches for a graph of {self.accum}")
        for m, (x, y) in enumerate(batches):
            self.x[m].copy_(x, non_blocking=True)
            self.y[m].copy_(y, non_blocking=True)
        for t in self.lrs:
            t.fill_(lr)                       # in place: the graph reads this tensor's memory
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            side = self.side = self.side or torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.optimizer.zero_grad(set_to_none=True)
                total = self._body()
            torch.cuda.current_stream(self.device).wait_stream(side)
            return total
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.loss.clone()              # the static loss is overwritten by the next replay

    def _capture(self) -> None:
        t0 = time.perf_counter()
        # gradients are allocated inside the capture, from the graph's pool, and stay there: replays
        # overwrite them (the first micro-step's backward writes, later ones accumulate), so nothing
        # may zero or free them between replays
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self._body()
        torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - t0
        self.log(f"cuda graph: whole step captured after {self.calls - 1} warm-up steps "
                 f"({self.capture_s:.2f} s, {self.accum} micro-step(s))")
