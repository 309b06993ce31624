"""Data: shakespeare_char preparation, GPT-2 BPE preparation, memory-mapped random batches."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import data

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare/input.txt"
needs_text = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} absent")


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} absent")
    out = tmp_path_factory.mktemp("shakespeare_char")
    data.prepare_char(out, SHAKESPEARE)
    return out


@needs_text
def test_prepare_char(char_dir):
    text = SHAKESPEARE.read_text(encoding="utf-8")
    meta = json.loads((char_dir / "meta.json").read_text())
    assert meta["kind"] == "char" and meta["vocab_size"] == 65 == len(meta["itos"])
    train = np.fromfile(char_dir / "train.bin", dtype=np.uint16)
    val = np.fromfile(char_dir / "val.bin", dtype=np.uint16)
    assert len(train) == int(len(text) * 0.9) and len(train) + len(val) == len(text)
    codec = data.Codec(meta)
    assert codec.decode(train[:200].tolist()) == text[:200]
    assert codec.decode(val[-50:].tolist()) == text[-50:]
    assert codec.encode("First Citizen") == train[:13].tolist()


@needs_text
def test_batches(char_dir):
    b = data.Batches(char_dir, seed=3)
    x, y = b.get_batch("train", 4, 16, "cpu")
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])                     # targets are inputs shifted by one
    state = b.state_dict()
    x1, _ = b.get_batch("train", 4, 16)
    b2 = data.Batches(char_dir, seed=99)
    b2.load_state_dict(state)
    assert torch.equal(b2.get_batch("train", 4, 16)[0], x1)     # the sampler's state is the data position
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(b.get_batch("val", 2, 8, generator=g1)[0], b2.get_batch("val", 2, 8, generator=g2)[0])
    with pytest.raises(FileNotFoundError):
        data.Batches(char_dir / "nope")


class FakeEncoder:
    n_vocab = 300

    def encode_ordinary(self, text):
        return [ord(c) % 300 for c in text]


def test_prepare_bpe_with_any_encoder(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("hello world\n" * 50)
    meta = data.prepare_bpe(src, tmp_path / "out", encoder=FakeEncoder())
    assert meta["vocab_size"] == 300 and meta["kind"] == "bpe"
    ids = np.concatenate([np.fromfile(tmp_path / "out" / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")])
    assert ids.tolist() == FakeEncoder().encode_ordinary(src.read_text())


def test_prepare_bpe_tiktoken(tmp_path):
    tiktoken = pytest.importorskip("tiktoken")
    try:
        enc = tiktoken.get_encoding("gpt2")
    except Exception as e:   # the BPE files come from the network the first time
        pytest.skip(f"tiktoken gpt2 encoding not loadable offline: {type(e).__name__}")
    src = tmp_path / "t.txt"
    src.write_text("To be, or not to be, that is the question.\n" * 20)
    meta = data.prepare_bpe(src, tmp_path / "out")
    ids = np.fromfile(tmp_path / "out/train.bin", dtype=np.uint16).tolist()
    assert meta["vocab_size"] == enc.n_vocab and enc.decode(ids).startswith("To be")


def test_read_text_without_any_source(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "local_shakespeare", lambda: None)
    with pytest.raises(FileNotFoundError):
        data.read_text(None, url=None)
    assert data.read_text(SHAKESPEARE if SHAKESPEARE.is_file() else __file__)


class _Pwn:
    def __reduce__(self):
        import os
        return os.system, ("echo pwned",)


def _data_dir(tmp_path, meta) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    ids = np.arange(64, dtype=np.uint16) % 3
    ids.tofile(d / "train.bin")
    ids.tofile(d / "val.bin")
    import pickle
    (d / "meta.pkl").write_bytes(pickle.dumps(meta))
    return d


def test_nanogpt_meta_pkl_is_read_as_plain_data(tmp_path):
    m = {"vocab_size": 3, "itos": {0: "a", 1: "b", 2: "c"}, "stoi": {"a": 0, "b": 1, "c": 2}}
    assert data.load_meta(_data_dir(tmp_path, m)) == {"kind": "char", "vocab_size": 3, "itos": ["a", "b", "c"]}


def test_a_meta_pkl_that_would_run_code_is_refused(tmp_path, capfd):
    d = _data_dir(tmp_path, {"vocab_size": 3, "itos": _Pwn()})
    with pytest.raises(data.DataError, match="refusing to load") as e:
        data.load_meta(d)
    assert "\n" not in str(e.value) and "system" in str(e.value)
    assert "pwned" not in capfd.readouterr().out
    from model import train                         # the training CLI: one line, exit 2
    rc = train.main(["--config", "tiny", "--data-dir", str(d), "--out-dir", str(tmp_path / "out"), "--max-iters", "1"])
    out = capfd.readouterr()
    assert rc == 2 and "pwned" not in out.out
    assert out.err.strip().startswith("error: ") and out.err.strip().endswith("refusing to load")
    assert len(out.err.strip().splitlines()) == 1
