"""GPT-2 as nanoGPT's model.py computes it, in plain torch.nn.functional: what the e2e torch.compile
baselines compile.

model/gpt.py sends every op through a Backend (impl choice, fallbacks, profiler ranges, qkv layout checks
on data pointers), which dynamo cannot trace whole: compiled, a 2-layer model broke into 8 graphs. PlainGPT is
the same function with nothing between the ops, so dynamo captures the forward as one graph, as it does
nanoGPT's: LayerNorm with bias, tanh-GELU (the op the kernels implement; nanoGPT's nn.GELU is the erf
form), causal attention through F.scaled_dot_product_attention, tied wte/lm_head, cross-entropy over the
(fp32 under autocast) logits. The -1e20 mask floor of the eager fmha changes nothing here: a causal row
always sees its own key, so no row is fully masked.

It subclasses GPT for the parameters alone: same modules, names, initialisation (the same seed gives the
same weights), optimizer groups and FLOP count; only forward differs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.gpt import GPT


def _layer_norm(ln, x):
    return F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, 1e-5)


class PlainGPT(GPT):
    def forward(self, idx, targets=None):
        """(logits, loss) as nanoGPT returns them (with targets None: the last position's logits only)."""
        b, t = idx.shape
        if t > self.config.block_size:
            raise ValueError(f"sequence of length {t} > block size {self.config.block_size}")
        tr, drop = self.transformer, self.config.dropout
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = F.dropout(tr.wte(idx) + tr.wpe(pos), drop, self.training)
        for block in tr.h:
            x = x + self._attention(block.attn, _layer_norm(block.ln_1, x))
            mlp = block.mlp
            h = F.gelu(mlp.c_fc(_layer_norm(block.ln_2, x)), approximate="tanh")
            x = x + F.dropout(mlp.c_proj(h), drop, self.training)
        x = _layer_norm(tr.ln_f, x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)

    def _attention(self, attn, x):
        B, T, C = x.shape
        q, k, v = (u.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for u in attn.c_attn(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(attn.c_proj(y), self.config.dropout, self.training)
