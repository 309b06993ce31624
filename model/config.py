"""Model configs: the GPTConfig dataclass and the named presets the harness and the trainer use."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304   # GPT-2's 50257 padded up to a multiple of 64 for the lm_head matmul
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0      # on embeddings and residual branches; the fmha op has no attention dropout
    bias: bool = True         # biases in Linears and LayerNorms, as GPT-2 (and the kernels' signatures) have

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict] = {
    # GPT-2 small: 124M parameters
    "gpt2_124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304),
    # shakespeare_char at GPT-2 width: the convergence and e2e model (D=64 heads like GPT-2)
    "shakespeare_6x768": dict(n_layer=6, n_head=12, n_embd=768, block_size=256, vocab_size=65),
    # nanoGPT's config/train_shakespeare_char.py model
    "shakespeare_6x384": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65),
    # CPU tests and the e2e --quick sweep: seconds per step on a laptop core
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=65),
}


def preset(name: str, **overrides) -> GPTConfig:
    """A named config; overrides with a None value are ignored (handy for argparse defaults)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    kw = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return GPTConfig(**kw)
