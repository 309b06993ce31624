"""Datasets laid out as nanoGPT does: train.bin / val.bin of uint16 token ids plus meta.json (the vocabulary),
read back through np.memmap as random (B, T) batches.

    python -m model.data shakespeare_char [--input input.txt] [--out data/shakespeare_char]
    python -m model.data bpe --input any.txt --out data/any     # GPT-2 BPE via tiktoken
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import urllib.request
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]   # the checkout, where there is one (an installed copy: site-packages)
DATA = Path("data")                          # prepared data and downloads: under the working directory
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def local_shakespeare() -> Path | None:
    """A tinyshakespeare input.txt already on this machine (the shared data folder, or an earlier download)."""
    for p in (DATA / "tinyshakespeare/input.txt", REPO.parent / "shared/data/tinyshakespeare/input.txt",
              REPO / "shared/data/tinyshakespeare/input.txt", REPO / "data/tinyshakespeare/input.txt"):
        if p.is_file():
            return p
    return None


def read_text(input_path: str | os.PathLike | None = None, url: str | None = SHAKESPEARE_URL) -> str:
    """The text of input_path; without one, a local tinyshakespeare, else a download of `url`."""
    path = Path(input_path) if input_path else local_shakespeare()
    if path is not None:
        return path.read_text(encoding="utf-8")
    if not url:
        raise FileNotFoundError("no input text given and none found locally")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            text = r.read().decode("utf-8")
    except OSError as e:
        raise FileNotFoundError(f"no local tinyshakespeare and the download of {url} failed: {e}") from e
    cache = DATA / "tinyshakespeare/input.txt"   # /data/ is git-ignored in a checkout
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(text, encoding="utf-8")
    return text


def _write_split(ids: np.ndarray, out_dir: Path, meta: dict, train_frac: float) -> dict:
    if ids.size and int(ids.max()) >= 2**16:
        raise ValueError(f"token id {int(ids.max())} does not fit uint16")
    out_dir.mkdir(parents=True, exist_ok=True)
    n = int(len(ids) * train_frac)
    ids[:n].astype(np.uint16).tofile(out_dir / "train.bin")
    ids[n:].astype(np.uint16).tofile(out_dir / "val.bin")
    meta = {**meta, "train_tokens": n, "val_tokens": int(len(ids) - n)}
    (out_dir / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))
    return meta


def prepare_char(out_dir, input_path=None, url: str | None = SHAKESPEARE_URL, train_frac: float = 0.9) -> dict:
    """Character-level dataset: the sorted set of characters is the vocabulary; first 90% train, rest val."""
    text = read_text(input_path, url)
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.fromiter((stoi[c] for c in text), dtype=np.int64, count=len(text))
    return _write_split(ids, Path(out_dir), {"kind": "char", "vocab_size": len(chars), "itos": chars}, train_frac)


def prepare_bpe(input_path, out_dir, encoding: str = "gpt2", train_frac: float = 0.9, encoder=None) -> dict:
    """GPT-2 BPE dataset of any text file (tiktoken; `encoder` replaces it in tests)."""
    if encoder is None:
        import tiktoken
        encoder = tiktoken.get_encoding(encoding)
    text = Path(input_path).read_text(encoding="utf-8")
    ids = np.asarray(encoder.encode_ordinary(text), dtype=np.int64)
    meta = {"kind": "bpe", "encoding": encoding, "vocab_size": int(encoder.n_vocab)}
    return _write_split(ids, Path(out_dir), meta, train_frac)


class DataError(ValueError):
    """A data folder that cannot be used as it is; the training CLI says it in one line (exit 2)."""


class _PlainUnpickler(pickle.Unpickler):
    """Plain data only: a nanoGPT meta.pkl is a dict of str and int, which needs no class. Anything that
    names one (os.system, a class to build) could run code from a data folder made elsewhere."""

    def find_class(self, module, name):
        raise DataError(f"it names {module}.{name}")


def _read_meta_pkl(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            m = _PlainUnpickler(f).load()
        n = m["vocab_size"]
        return {"kind": "char", "vocab_size": n, "itos": [m["itos"][i] for i in range(n)]}
    except DataError as e:
        raise DataError(f"{path}: {e}, and a nanoGPT meta.pkl is plain data: refusing to load") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign pickle: what it is, in one line
        raise DataError(f"{path}: not a nanoGPT meta.pkl (a dict with vocab_size and itos): "
                        f"{type(e).__name__}: {e}") from None


def load_meta(data_dir) -> dict:
    """meta.json, or a nanoGPT meta.pkl (char vocab) if that is what the folder has; {} if neither."""
    d = Path(data_dir)
    if (d / "meta.json").is_file():
        return json.loads((d / "meta.json").read_text())
    if (d / "meta.pkl").is_file():
        return _read_meta_pkl(d / "meta.pkl")
    return {}


class Codec:
    """Text <-> ids for a dataset's meta (char vocabulary or a tiktoken encoding)."""

    def __init__(self, meta: dict):
        self.meta = meta
        if meta.get("kind") == "char":
            self.itos = list(meta["itos"])
            self.stoi = {c: i for i, c in enumerate(self.itos)}
        else:
            import tiktoken
            self.enc = tiktoken.get_encoding(meta.get("encoding", "gpt2"))

    def encode(self, s: str) -> list[int]:
        if self.meta.get("kind") == "char":
            return [self.stoi[c] for c in s if c in self.stoi]
        return self.enc.encode(s, allowed_special={"<|endoftext|>"})

    def decode(self, ids) -> str:
        if self.meta.get("kind") == "char":
            return "".join(self.itos[i] for i in ids)
        return self.enc.decode(list(ids))


class Batches:
    """Random (B, T) windows of train.bin / val.bin with targets shifted by one.

    Training batches come from this object's own generator, so its state (state_dict) is the data
    sampler's position and a resumed run draws the same batches. Evaluation passes its own generator."""

    def __init__(self, data_dir, seed: int = 1337):
        self.data_dir = Path(data_dir)
        for split in ("train", "val"):
            if not (self.data_dir / f"{split}.bin").is_file():
                raise FileNotFoundError(f"{self.data_dir / (split + '.bin')} missing: prepare it with python -m model.data")
        self.meta = load_meta(self.data_dir)
        self.gen = torch.Generator().manual_seed(seed)

    def tokens(self, split: str) -> np.memmap:
        # a fresh memmap per batch, as nanoGPT does: a long-lived one grows the process's memory
        return np.memmap(self.data_dir / f"{split}.bin", dtype=np.uint16, mode="r")

    def get_batch(self, split: str, B: int, T: int, device="cpu", generator: torch.Generator | None = None):
        data = self.tokens(split)
        if len(data) <= T:
            raise ValueError(f"{split}.bin has {len(data)} tokens, need more than T={T}")
        ix = torch.randint(len(data) - T, (B,), generator=generator or self.gen).tolist()
        x = torch.from_numpy(np.stack([data[i:i + T] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([data[i + 1:i + 1 + T] for i in ix]).astype(np.int64))
        if str(device).startswith("cuda"):
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["shakespeare_char", "bpe"])
    ap.add_argument("--input", help="text file (shakespeare_char: default the shared copy, else the public URL)")
    ap.add_argument("--out", help="output folder (default data/<kind or input name>)")
    ap.add_argument("--encoding", default="gpt2")
    a = ap.parse_args(argv)
    if a.kind == "shakespeare_char":
        out = a.out or str(DATA / "shakespeare_char")
        meta = prepare_char(out, a.input)
    else:
        if not a.input:
            ap.error("bpe needs --input")
        out = a.out or str(DATA / Path(a.input).stem)
        meta = prepare_bpe(a.input, out, a.encoding)
    print(f"{out}: vocab {meta['vocab_size']}, train {meta['train_tokens']:,} tokens, val {meta['val_tokens']:,} tokens")


if __name__ == "__main__":
    main()
