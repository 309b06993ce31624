"""Sample text from a trained checkpoint.

    python -m model.sample --out-dir out/shakespeare_char --start "ROMEO:" --num-samples 2 --max-new-tokens 300
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from model.config import GPTConfig
from model.data import Codec
from model.gpt import GPT
from model.ops import Backend


def load_model(out_dir, device="cpu", backend="eager") -> tuple[GPT, dict]:
    ckpt = torch.load(Path(out_dir) / "ckpt.pt", map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**ckpt["model_config"]), Backend(backend))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def sample(out_dir, start="\n", num_samples=1, max_new_tokens=200, temperature=0.8, top_k=200,
           seed=1337, device="cpu", backend="eager", dtype="fp32") -> list[str]:
    model, ckpt = load_model(out_dir, device, backend)
    codec = Codec(ckpt["meta"])
    if start.startswith("FILE:"):
        start = Path(start[5:]).read_text(encoding="utf-8")
    ids = codec.encode(start) or [0]
    x = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    ctx = torch.autocast(torch.device(device).type, dtype=dt) if dt else torch.autocast("cpu", enabled=False)
    with ctx:
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, generator=gen)
    return [codec.decode(row.tolist()) for row in y]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="out/shakespeare_char")
    ap.add_argument("--start", default="\n", help='prompt, or "FILE:path"')
    ap.add_argument("--num-samples", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=300)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default="eager")
    ap.add_argument("--dtype", default="bf16" if torch.cuda.is_available() else "fp32")
    a = ap.parse_args(argv)
    for i, text in enumerate(sample(a.out_dir, a.start, a.num_samples, a.max_new_tokens, a.temperature, a.top_k,
                                    a.seed, a.device, a.backend, a.dtype)):
        print(text)
        if i < a.num_samples - 1:
            print("-" * 40)


if __name__ == "__main__":
    main()
