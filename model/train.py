"""Train GPT on a prepared dataset, one GPU or many (DDP under torchrun), with any kernel backend.

    python -m model.data shakespeare_char                       # once: data/shakespeare_char/{train,val}.bin
    python -m model.train --config shakespeare_char --backend triton --out-dir out/sc_triton \\
        --log-json out/sc_triton/log.json
    torchrun --standalone --nproc_per_node=2 -m model.train --config shakespeare_char
    srun --ntasks-per-node=2 --gpus-per-task=1 python -m model.train --config shakespeare_char   # on Slurm
    python -m model.train --out-dir out/sc_triton --resume --max-iters 1000   # exact resume
    python -m model.sample --out-dir out/sc_triton

--config is a preset name (see TRAIN_PRESETS) or a JSON file of TrainConfig fields; flags override it.
Exit status: 0 done, 3 stopped on a NaN/inf loss (the last good checkpoint is kept), 2 bad arguments or data.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import random
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from kernels.device import name as device_name
from kernels.registry import DTYPES
from model import auto_step, cuda_graph, measure, slurm_env
from model.config import preset
from model.data import Batches, DataError
from model.gpt import GPT, peak_tflops_for
from model.ops import Backend


@dataclasses.dataclass
class TrainConfig:
    # model
    model: str = "shakespeare_6x768"
    n_layer: int | None = None            # overrides of the preset
    n_head: int | None = None
    n_embd: int | None = None
    dropout: float | None = None
    # data
    data_dir: str = "data/shakespeare_char"
    batch_size: int = 64                  # per GPU, per micro-step
    block_size: int | None = None         # T; default the model's block size
    grad_accum: int = 1                   # micro-steps per iteration, over all GPUs (as nanoGPT)
    # optimizer and schedule
    max_iters: int = 500
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None     # default max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0                # 0 turns clipping off
    # evaluation, logging, checkpoints
    eval_interval: int = 100              # 0: only at the end
    eval_iters: int = 50                  # batches per split per evaluation; 0: no evaluation
    log_interval: int = 10
    out_dir: str = "out/shakespeare_char"
    save_checkpoints: bool = True         # ckpt.pt at every evaluation and at the end
    resume: bool = False
    log_json: str | None = None           # the loss curve, throughput and fallbacks as JSON
    # system
    backend: str = "eager"                # eager | triton | cutile | auto[:results.jsonl] | op=impl,...
    results: str | None = None            # results file(s) for backend auto
    auto_trials: bool | None = None       # auto's whole-step trials (model/auto_step.py); None: on CUDA, one process
    fuse_gelu: bool | None = None         # linear's fused GELU epilogue: default when linear and gelu share an impl
    dtype: str = "bf16"                   # autocast dtype: bf16 | fp16 (with GradScaler) | fp32
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    compile: bool = False                 # torch.compile the model (meant for the eager backend)
    cuda_graph: bool = False              # capture the whole step (fwd, bwd, clip, AdamW) in one CUDA graph
    graph_warmup: int = 3                 # eager steps (side stream) before the capture
    peak_tflops: float | None = None      # for MFU; default the GPU's datasheet bf16 peak
    seed: int = 1337
    debug_nan_at: int = -1                # test hook: report a NaN loss at this iteration
    debug_nan_weights_at: int = -1        # test hook: a NaN weight after this iteration's (finite-loss) step


AUTO_TRIALS_UNDER_DDP = ("--auto-trials under DDP: each rank would time its own trials and might pick another "
                         "backend; run them once on one GPU and pass the winner as --backend")


TRAIN_PRESETS: dict[str, dict] = {
    # the issue's convergence run: 6 x 768, B=64, T=256, 500 iterations on shakespeare_char
    "shakespeare_char": dict(model="shakespeare_6x768"),
    # nanoGPT's baby GPT (config/train_shakespeare_char.py, dropout off, schedule cut to 500 iterations)
    "shakespeare_6x384": dict(model="shakespeare_6x384"),
    # GPT-2 small at its training shape; on the char data unless a BPE dataset is given
    "gpt2_124m": dict(model="gpt2_124m", batch_size=16, block_size=1024, learning_rate=6e-4, min_lr=6e-5,
                      warmup_iters=100, beta2=0.95, out_dir="out/gpt2_124m"),
    # CPU tests
    "tiny": dict(model="tiny", batch_size=8, block_size=32, max_iters=40, learning_rate=3e-3, min_lr=3e-4,
                 warmup_iters=5, eval_interval=20, eval_iters=4, log_interval=5, dtype="fp32", device="cpu",
                 out_dir="out/tiny"),
}


def load_config(name_or_path: str | None, overrides: dict | None = None) -> TrainConfig:
    base = {}
    if name_or_path:
        if name_or_path in TRAIN_PRESETS:
            base = dict(TRAIN_PRESETS[name_or_path])
            base.setdefault("out_dir", f"out/{name_or_path}")
        elif os.path.isfile(name_or_path):
            base = json.loads(Path(name_or_path).read_text())
        else:
            raise ValueError(f"--config {name_or_path!r} is neither a preset ({', '.join(TRAIN_PRESETS)}) nor a file")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = {**base, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = set(merged) - fields
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    return TrainConfig(**merged)


class NonFiniteLoss(RuntimeError):
    pass


class Trainer:
    def __init__(self, cfg: TrainConfig, log=print):
        cfg = dataclasses.replace(cfg)   # a copy: defaults get filled in below
        self.cfg, self._print = cfg, log
        if cfg.dtype not in DTYPES:
            raise ValueError(f"dtype {cfg.dtype!r}: use bf16, fp16 or fp32")
        # --- processes and devices: DDP only when torchrun starts more than one
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if cfg.cuda_graph:   # before any process group or CUDA state exists
            why = cuda_graph.refusal(cfg.device, cfg.dtype, self.world, cfg.compile)
            if why:
                raise ValueError(why)
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.ddp = self.world > 1
        dev = cfg.device
        if dev.startswith("cuda"):
            if not torch.cuda.is_available():
                raise RuntimeError("device cuda requested but torch.cuda.is_available() is False (use --device cpu)")
            # modulo: a Slurm task bound to its own GPU (--gpus-per-task) sees that one GPU alone, as cuda:0
            dev = f"cuda:{self.local_rank % torch.cuda.device_count()}" \
                if (self.ddp or "LOCAL_RANK" in os.environ or dev == "cuda") else dev
            torch.cuda.set_device(dev)
        self.device, self.device_type = dev, dev.split(":")[0]
        if cfg.lr_decay_iters is None:   # fixed now, so a resumed run with more iterations keeps the schedule
            cfg.lr_decay_iters = cfg.max_iters
        if self.ddp:
            import torch.distributed as dist
            dist.init_process_group(backend="nccl" if self.device_type == "cuda" else "gloo")
        self.master = self.rank == 0
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

        # --- data, model, optimizer
        repo_data = Path(__file__).resolve().parents[1] / cfg.data_dir
        if not Path(cfg.data_dir).is_dir() and repo_data.is_dir():   # e.g. data/... run from elsewhere
            cfg.data_dir = str(repo_data)
        self.batches = Batches(cfg.data_dir, seed=cfg.seed + 1000 * self.rank)
        ckpt = self._load_checkpoint() if cfg.resume else None
        if ckpt is not None:
            mcfg = preset(cfg.model)
            mcfg = dataclasses.replace(mcfg, **ckpt["model_config"])
        else:
            mcfg = preset(cfg.model, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                          dropout=cfg.dropout, block_size=cfg.block_size)
        self.T = cfg.block_size or mcfg.block_size
        if self.T > mcfg.block_size:
            raise ValueError(f"block_size {self.T} > the model's {mcfg.block_size}")
        vocab = self.batches.meta.get("vocab_size")
        if vocab and vocab > mcfg.vocab_size:
            raise ValueError(f"dataset vocabulary {vocab} > model vocab_size {mcfg.vocab_size}")
        self.mcfg = mcfg
        # grad_accum is the global count of micro-batches, split over the ranks (nanoGPT's rule): the global
        # batch must not grow with the number of GPUs, or a 2-GPU curve is not comparable with a 1-GPU one
        if cfg.grad_accum % self.world:
            raise ValueError(f"--grad-accum {cfg.grad_accum} is not a multiple of the {self.world} processes: "
                             f"each rank runs grad_accum / world micro-batches")
        self.accum = cfg.grad_accum // self.world
        self.tokens_per_iter = self.accum * self.world * cfg.batch_size * self.T

        torch.manual_seed(cfg.seed)                   # the same init on every rank
        self.backend = Backend(cfg.backend, results=cfg.results, dtype=cfg.dtype, fuse_gelu=cfg.fuse_gelu,
                               log=self.log, graphed=cfg.cuda_graph)
        self.raw_model = GPT(mcfg, self.backend).to(self.device)
        if self.backend.mode == "auto":   # no results for this GPU yet: rank 0 measures the model's op shapes once
            if self.master:
                measure.ensure_results(self.backend, self.raw_model, cfg.batch_size, self.T, self.device)
            if self.ddp:
                torch.distributed.barrier()
        self.backend.resolve_auto(self.device)
        self.auto_trials = None
        # a resumed auto run keeps what its trials chose; another backend named on resume is that backend
        self.auto_winner = (ckpt or {}).get("auto_winner") if self.backend.mode == "auto" else None
        if self.auto_winner not in (None, "mix"):
            self.backend = auto_step.single(self.auto_winner, self.backend)
            self.raw_model.ops = self.backend
            self.log(f"auto: {self.auto_winner}, as the trials of the run resumed chose")
        elif self.auto_winner is None and self._auto_trials():   # whole steps of auto's mix, triton, cutile, eager
            self.backend, self.auto_trials = auto_step.choose(self.raw_model, self.backend, cfg.batch_size, self.T,
                                                              cfg.dtype, self.device, cfg.cuda_graph, cfg.grad_clip)
            self.auto_winner = self.auto_trials.winner
            self.raw_model.ops = self.backend
        self.optimizer = self.raw_model.configure_optimizers(cfg.weight_decay, cfg.learning_rate,
                                                             (cfg.beta1, cfg.beta2), self.device_type,
                                                             capturable=cfg.cuda_graph)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=(cfg.dtype == "fp16"))
        self.iter, self.best_val = 0, math.inf
        self.history = {"train": [], "eval": [], "perf": []}
        torch.manual_seed(cfg.seed + self.rank)       # dropout differs per rank
        if ckpt is not None:
            self._restore(ckpt)
        self.model = self.raw_model
        if cfg.compile:
            if cfg.backend != "eager":
                self.log(f"note: torch.compile over backend {cfg.backend!r}: custom kernels may graph-break")
            self.model = torch.compile(self.model)
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.model = DDP(self.model, device_ids=[self.local_rank] if self.device_type == "cuda" else None)
        if self.device_type == "cuda" or cfg.dtype != "fp32":
            self.ctx = torch.autocast(self.device_type, dtype=DTYPES[cfg.dtype], enabled=cfg.dtype != "fp32")
        else:
            self.ctx = nullcontext()
        self.graphed = None      # the CUDA-graph step, built at the first step (after any checkpoint restore)
        self.peak = cfg.peak_tflops or (peak_tflops_for(device_name(self.device)) if self.device_type == "cuda" else None)
        self.status, self.message = "running", ""

    # --- helpers -----------------------------------------------------------------------------------
    def _auto_trials(self) -> bool:
        """auto's trials: asked, or by default on a CUDA device in a single process (under DDP the ranks would
        have to agree on one winner) and without --compile (a compile per candidate)."""
        c = self.cfg
        if self.backend.mode != "auto":
            return False
        if c.auto_trials and self.ddp:
            raise ValueError(AUTO_TRIALS_UNDER_DDP)
        if c.auto_trials is not None:
            return c.auto_trials
        return self.device_type == "cuda" and not self.ddp and not c.compile

    def log(self, msg: str, force: bool = False) -> None:
        if self.master or force:
            self._print(msg if self.master else f"[rank {self.rank}] {msg}")

    def get_lr(self, it: int) -> float:
        """Linear warm-up, then cosine decay to min_lr at lr_decay_iters."""
        c = self.cfg
        decay_iters = c.lr_decay_iters or c.max_iters
        if it < c.warmup_iters:
            return c.learning_rate * (it + 1) / (c.warmup_iters + 1)
        if it >= decay_iters:
            return c.min_lr
        ratio = (it - c.warmup_iters) / max(1, decay_iters - c.warmup_iters)
        return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c.learning_rate - c.min_lr)

    def _sync(self):
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- one optimizer step (model/cuda_graph.py captures the same step, replayed by _graph_step) ------
    def step(self, it: int) -> torch.Tensor:
        c = self.cfg
        lr = self.get_lr(it)
        if c.cuda_graph:
            return self._graph_step(it, lr)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        total = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            x, y = self.batches.get_batch("train", c.batch_size, self.T, self.device)
            # DDP all-reduces gradients on the last micro-step only
            sync = self.model.no_sync() if self.ddp and micro < self.accum - 1 else nullcontext()
            with sync:
                with self.ctx:
                    _, loss = self.model(x, y)
                    loss = loss / self.accum
                self.scaler.scale(loss).backward()
            total += loss.detach().float()
        if c.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if it == c.debug_nan_at:
            total = total * float("nan")
        if it == c.debug_nan_weights_at:
            with torch.no_grad():
                next(self.raw_model.parameters()).view(-1)[0] = float("nan")
        return total

    def _graph_step(self, it: int, lr: float) -> torch.Tensor:
        """The same step as a CUDA-graph replay: same batches (same order), same schedule, same clipping."""
        c = self.cfg
        if self.graphed is None:
            self.graphed = cuda_graph.GraphedStep(self.raw_model, self.optimizer, self.raw_model.parameters(),
                                                  c.batch_size, self.T, self.accum, c.grad_clip, c.dtype,
                                                  self.device, warmup=c.graph_warmup, log=self.log)
        batches = [self.batches.get_batch("train", c.batch_size, self.T, self.device) for _ in range(self.accum)]
        total = self.graphed(batches, lr)
        if it == c.debug_nan_at:
            total = total * float("nan")
        return total

    @torch.no_grad()
    def evaluate(self, it: int) -> dict:
        """Mean loss over eval_iters batches per split, from a generator of its own (training's stream is
        untouched, so evaluating or not never changes a run)."""
        self.raw_model.eval()
        out = {}
        for s, split in enumerate(("train", "val")):
            g = torch.Generator().manual_seed(self.cfg.seed * 7919 + it * 2 + s)
            losses = []
            for _ in range(self.cfg.eval_iters):
                x, y = self.batches.get_batch(split, self.cfg.batch_size, self.T, self.device, generator=g)
                with self.ctx:
                    losses.append(self.raw_model(x, y)[1].float())
            out[split] = torch.stack(losses).mean().item()
        self.raw_model.train()
        return out

    # --- checkpoints -----------------------------------------------------------------------------------
    def _ckpt_path(self) -> Path:
        return Path(self.cfg.out_dir) / "ckpt.pt"

    def _rng_state(self) -> dict:
        st = {"torch": torch.get_rng_state(), "python": random.getstate(), "data": self.batches.state_dict()}
        if self.device_type == "cuda":
            st["cuda"] = torch.cuda.get_rng_state(self.device)
        return st

    def save_checkpoint(self) -> None:
        """Everything a resumed run needs to continue bit for bit; written atomically by rank 0."""
        states = [self._rng_state()]
        if self.ddp:
            import torch.distributed as dist
            states = [None] * self.world
            dist.all_gather_object(states, self._rng_state())
        if not self.master:
            return
        ckpt = {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iter": self.iter,
            "best_val_loss": self.best_val,
            "model_config": self.mcfg.to_dict(),
            "train_config": dataclasses.asdict(self.cfg),
            "rng": states,
            "world_size": self.world,
            "meta": self.batches.meta,
            "history": self.history,
            "auto_winner": self.auto_winner,
        }
        path = self._ckpt_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pt.tmp")
        torch.save(ckpt, tmp)
        os.replace(tmp, path)

    def _load_checkpoint(self) -> dict:
        path = self._ckpt_path()
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        return torch.load(path, map_location="cpu", weights_only=True)

    def _restore(self, ckpt: dict) -> None:
        self.raw_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.iter, self.best_val = ckpt["iter"], ckpt["best_val_loss"]
        self.history = ckpt.get("history", self.history)
        states = ckpt["rng"]
        if ckpt.get("world_size", 1) != self.world or self.rank >= len(states):
            self.log(f"warning: checkpoint from {ckpt.get('world_size')} processes, now {self.world}: "
                     "RNG and data order restart from the seed (resume is not exact)", force=True)
            return
        st = states[self.rank]
        torch.set_rng_state(st["torch"])
        random.setstate(st["python"])
        self.batches.load_state_dict(st["data"])
        if "cuda" in st and self.device_type == "cuda":
            torch.cuda.set_rng_state(st["cuda"], self.device)
        self.log(f"resumed from {self._ckpt_path()} at iter {self.iter}")

    # --- the loop --------------------------------------------------------------------------------------
    def _flush(self, pending, t0, n_timed):
        """One sync for the losses since the last log: record them, stop on NaN/inf, print progress."""
        if not pending:
            return
        vals = torch.stack([l for _, l in pending]).tolist()
        self._sync()
        dt = (time.perf_counter() - t0) / max(1, n_timed)
        bad = next(((it, v) for (it, _), v in zip(pending, vals) if not math.isfinite(v)), None)
        flag = torch.tensor([1.0 if bad else 0.0], device=self.device)
        if self.ddp:   # every rank stops together
            import torch.distributed as dist
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        for (it, _), v in zip(pending, vals):
            self.history["train"].append([it, v])
        if flag.item() > 0:
            where = f"iter {bad[0]}" if bad else "another rank"
            raise NonFiniteLoss(f"loss is {bad[1] if bad else 'non-finite'} at {where} (backend {self.cfg.backend}, "
                                f"dtype {self.cfg.dtype}, lr {self.get_lr(bad[0] if bad else self.iter):.3g}): "
                                f"stopping; {self._kept()}")
        it, loss = pending[-1][0], vals[-1]
        tok_s = self.tokens_per_iter / dt
        mfu = None
        if self.peak:
            mfu = self.raw_model.estimate_mfu(self.cfg.batch_size * self.accum, dt, self.T, self.peak)
        self.history["perf"].append({"iter": it, "ms_per_step": dt * 1e3, "tokens_per_s": tok_s, "mfu": mfu})
        mfu_s = f", mfu {mfu * 100:.1f}%" if mfu is not None else ""
        self.log(f"iter {it}: loss {loss:.4f}, lr {self.get_lr(it):.2e}, {dt * 1e3:.2f} ms/step, "
                 f"{tok_s:,.0f} tok/s{mfu_s}")
        pending.clear()

    def _kept(self) -> str:
        last = self._ckpt_path()
        return f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was saved before it"

    def _eval_and_save(self, it: int) -> None:
        if self.cfg.eval_iters > 0 and self.master:
            t = time.perf_counter()
            ev = self.evaluate(it)
            self.history["eval"].append({"iter": it, **ev})
            self.best_val = min(self.best_val, ev["val"])
            self.log(f"step {it}: train loss {ev['train']:.4f}, val loss {ev['val']:.4f} ({time.perf_counter() - t:.1f} s)")
        if self.cfg.save_checkpoints:
            # a backward can send NaN/inf into the weights while the loss logged before it was finite: such
            # a state must never replace the last good checkpoint (every rank holds the same weights, so
            # every rank decides alike and the checkpoint's collectives stay matched)
            finite = torch.stack([torch.isfinite(p).all() for p in self.raw_model.parameters()]).all().item()
            if not finite:
                raise NonFiniteLoss(f"non-finite weights at iter {it} (backend {self.cfg.backend}, dtype "
                                    f"{self.cfg.dtype}): not saving, stopping; {self._kept()}")
            self.save_checkpoint()
        self.write_log()

    def train(self) -> dict:
        c = self.cfg
        self.log(f"model {c.model}: {self.raw_model.get_num_params() / 1e6:.2f}M params, backend {c.backend} "
                 f"[{self.backend.describe()}], device {self.device} ({device_name(self.device)}), dtype {c.dtype}, "
                 f"{self.world} process(es), {self.tokens_per_iter:,} tokens/iter, "
                 f"fused AdamW {getattr(self.optimizer, 'fused_adamw', False)}"
                 + (f", whole-step CUDA graph after {c.graph_warmup} warm-up steps" if c.cuda_graph else ""))
        start = self.iter
        pending, t0, n = [], time.perf_counter(), 0
        try:
            while self.iter < c.max_iters:
                it = self.iter
                if c.eval_interval and it % c.eval_interval == 0 and not (it == start and c.resume):
                    self._flush(pending, t0, n)
                    self._eval_and_save(it)
                    t0, n = time.perf_counter(), 0
                pending.append((it, self.step(it)))
                self.iter, n = it + 1, n + 1
                if self.iter % c.log_interval == 0 or self.iter == c.max_iters:
                    self._flush(pending, t0, n)
                    t0, n = time.perf_counter(), 0
            self._flush(pending, t0, n)
            if self.iter > start or not c.resume:
                self._eval_and_save(self.iter)
            self.status = "ok"
        except NonFiniteLoss as e:
            self.status, self.message = "nonfinite", str(e)
            self.log(f"STOP: {e}", force=True)
        self.write_log()
        return self.result()

    def result(self) -> dict:
        perf = [p for p in self.history["perf"][1:]] or self.history["perf"]   # the first window compiles
        med = lambda k: statistics.median(p[k] for p in perf) if perf and all(p[k] is not None for p in perf) else None
        return {
            "status": self.status, "message": self.message,
            "config": dataclasses.asdict(self.cfg), "model_config": self.mcfg.to_dict(),
            "device": self.device, "device_name": device_name(self.device), "world_size": self.world,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "backend": self.cfg.backend, "backend_choice": self.backend.describe(),
            "fallbacks": list(self.backend.fallbacks), "notes": list(self.backend.notes),
            "auto_trials": self.auto_trials.as_row() if self.auto_trials else None,
            "tokens_per_iter": self.tokens_per_iter, "iter": self.iter,
            "cuda_graph_capture_s": self.graphed.capture_s if self.graphed is not None else None,
            "train": self.history["train"], "eval": self.history["eval"], "perf": self.history["perf"],
            "summary": {
                "first_loss": self.history["train"][0][1] if self.history["train"] else None,
                "last_loss": self.history["train"][-1][1] if self.history["train"] else None,
                "last_val_loss": self.history["eval"][-1]["val"] if self.history["eval"] else None,
                "median_ms_per_step": med("ms_per_step"), "median_tokens_per_s": med("tokens_per_s"),
                "median_mfu": med("mfu"),
            },
        }

    def write_log(self) -> None:
        if self.cfg.log_json and self.master:
            path = Path(self.cfg.log_json)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(self.result(), default=str))
            os.replace(tmp, path)

    def close(self) -> None:
        if self.ddp:
            import torch.distributed as dist
            if not dist.is_initialized():
                return
            # DDP's reducer holds the process group, and the trainer lives in reference cycles, so without this the
            # gloo group and its worker threads outlive destroy_process_group into interpreter exit, where a worker
            # touching a Python object aborts the process ("terminate called without an active exception", exit
            # -6) after a run that succeeded. No barrier first: a rank whose peer failed would wait on it.
            self.model = None
            gc.collect()
            dist.destroy_process_group()


def run(cfg: TrainConfig, log=print) -> dict:
    """Train with cfg in this process; returns the run's record (also written to cfg.log_json)."""
    t = Trainer(cfg, log)
    try:
        return t.train()
    finally:
        t.close()


def _resume_config(out_dir: str, overrides: dict) -> TrainConfig:
    """A resumed run keeps its checkpoint's config; flags given now (e.g. --max-iters) override it."""
    ckpt = torch.load(Path(out_dir) / "ckpt.pt", map_location="cpu", weights_only=True)
    saved = {k: v for k, v in ckpt["train_config"].items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    return TrainConfig(**{**saved, **{k: v for k, v in overrides.items() if v is not None}, "resume": True})


def parse_args(argv=None) -> TrainConfig:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help=f"preset ({', '.join(TRAIN_PRESETS)}) or JSON file")
    bools = {"save_checkpoints", "compile", "cuda_graph", "resume", "fuse_gelu", "auto_trials"}
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in bools:
            ap.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            typ = {"int": int, "float": float, "str": str}[
                next(t for t in ("int", "float", "str") if t in str(f.type))]
            ap.add_argument(flag, dest=f.name, type=typ, default=None)
    a = vars(ap.parse_args(argv))
    name = a.pop("config")
    if a.get("resume") and not name:
        out = a.get("out_dir") or TrainConfig.out_dir
        if (Path(out) / "ckpt.pt").is_file():
            return _resume_config(out, a)
    return load_config(name, a)


def main(argv=None) -> int:
    try:
        slurm_env.setup()    # under srun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_* as torchrun sets them
        cfg = parse_args(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.cuda_graph:
        why = cuda_graph.refusal(cfg.device, cfg.dtype, int(os.environ.get("WORLD_SIZE", "1")), cfg.compile)
        if why:
            print(f"error: {why}", file=sys.stderr)
            return 2
    if cfg.auto_trials and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print(f"error: {AUTO_TRIALS_UNDER_DDP}", file=sys.stderr)
        return 2
    try:
        res = run(cfg)
    except DataError as e:      # the data folder, found only once the trainer opens it
        print(f"error: {e}", file=sys.stderr)
        return 2
    if res["status"] == "ok" and int(os.environ.get("RANK", "0")) == 0:
        s = res["summary"]
        f = lambda v, spec: "n/a" if v is None else format(v, spec)
        print(f"done: {res['iter']} iters, last loss {f(s['last_loss'], '.4f')}, val loss {f(s['last_val_loss'], '.4f')}, "
              f"median {f(s['median_ms_per_step'], '.2f')} ms/step, {f(s['median_tokens_per_s'], ',.0f')} tok/s"
              + (f", mfu {s['median_mfu'] * 100:.1f}%" if s["median_mfu"] else "")
              + (f"; {len(res['fallbacks'])} fallbacks: " + " | ".join(res["fallbacks"]) if res["fallbacks"] else ""))
    return 0 if res["status"] == "ok" else 3


if __name__ == "__main__":
    sys.exit(main())
