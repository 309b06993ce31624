"""GPT-2 as nanoGPT writes it, every op through a Backend (model/ops.py) instead of torch.nn.functional.

Parameters live in ordinary nn.Linear / nn.Embedding modules, so state_dict names match nanoGPT's; the
forward pass reads their weights and hands them to the backend's layer_norm, linear, gelu, fmha and
linear_cross_entropy (the lm_head and the loss; nanoGPT's linear then cross_entropy when that op is eager).
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels.fmha.layout import split_qkv
from model.config import GPTConfig
from model.ops import Backend

# Dense bf16 tensor-core peaks (TFLOP/s) for MFU when nothing measured is given.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0,
               "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0}


def peak_tflops_for(name: str) -> float | None:
    """A datasheet peak for a GPU name ("NVIDIA H100 80GB HBM3" -> 989), or None if unknown."""
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS[key]
    return None


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x, ops):
        return ops.layer_norm(x, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)   # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout

    def forward(self, x, ops):
        B, T, C = x.shape
        qkv = ops.linear(x, self.c_attn.weight, self.c_attn.bias)
        # (B, T, C) views -> (B, nh, T, hs), left non-contiguous: the fmha contract takes strided views
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in split_qkv(qkv, C))
        y = ops.fmha(q, k, v, causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return ops.residual_branch(y, self.c_proj.weight, self.c_proj.bias, self.dropout, self.training)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x, ops):
        x = ops.linear_gelu(x, self.c_fc.weight, self.c_fc.bias)
        return ops.residual_branch(x, self.c_proj.weight, self.c_proj.bias, self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, branch, ops):
        """nanoGPT's x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)), with each residual add done where the next
        LayerNorm reads it: `branch` is the previous block's MLP output, still to be added (None in the first
        block). ops.add_layer_norm may fuse the add, the LayerNorm and the branch's bias into one kernel."""
        x, h = ops.add_layer_norm(x, branch, self.ln_1.weight, self.ln_1.bias)
        x, h = ops.add_layer_norm(x, self.attn(h, ops), self.ln_2.weight, self.ln_2.bias)
        return x, self.mlp(h, ops)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, backend: Backend | str = "eager"):
        super().__init__()
        self.config = config
        self.ops = backend if isinstance(backend, Backend) else Backend(backend)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: one Parameter for the token embedding and the output projection
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def get_num_params(self, non_embedding=True) -> int:
        """Parameters; without the position embeddings by default (wte counts: it is the lm_head too)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, return_logits=False):
        """(logits, loss). With targets, a fused linear_cross_entropy impl computes the loss without ever
        holding the logits: logits is then None, unless return_logits asks for them (one more lm_head
        matmul, outside the loss; for tests). The eager backend returns them as nanoGPT does."""
        b, t = idx.shape
        if t > self.config.block_size:
            raise ValueError(f"sequence of length {t} > block size {self.config.block_size}")
        ops = self.ops
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        x = F.dropout(x, self.config.dropout, self.training)
        branch = None
        for block in self.transformer.h:
            x, branch = block(x, branch, ops)
        ln_f = self.transformer.ln_f
        x = ops.add_layer_norm(x, branch, ln_f.weight, ln_f.bias)[1]
        if targets is not None:
            loss, logits = ops.linear_cross_entropy(x, self.lm_head.weight, targets, ignore_index=-1)
            if logits is None and return_logits:
                logits = ops.linear(x, self.lm_head.weight)
        else:
            # inference: only the last position's logits are needed
            logits = ops.linear(x[:, [-1], :], self.lm_head.weight)
            loss = None
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, fused=None, capturable=False):
        """AdamW with weight decay on the 2-D tensors (matmul weights, embeddings) only; fused on CUDA.
        capturable: its step can be captured in a CUDA graph (model/cuda_graph.py)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if fused is None:
            fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if fused else {}
        if capturable:
            extra["capturable"] = True
        opt = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)
        opt.fused_adamw = bool(fused)   # for the logs
        return opt

    def flops_per_token(self, T: int | None = None) -> float:
        """Training FLOPs per token (fwd + bwd) as in the PaLM paper and nanoGPT: 6N + 12 L H Q T
        (the attention term counts the full T x T scores, causal or not)."""
        cfg = self.config
        L, H, Q = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
        T = T or cfg.block_size
        return 6 * self.get_num_params() + 12 * L * H * Q * T

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float, T: int | None = None, peak_tflops: float = 989.0):
        """Model FLOPs utilisation: achieved FLOP/s over a peak (TFLOP/s; default H100 dense bf16)."""
        T = T or self.config.block_size
        flops = self.flops_per_token(T) * T * fwdbwd_per_iter
        return flops / dt / (peak_tflops * 1e12)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
        """Append max_new_tokens sampled tokens to idx (B, T), feeding back each prediction."""
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :].float() / max(temperature, 1e-8)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx
