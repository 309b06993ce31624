"""GPT-2 structure: tied weights, init, parameter count, masking, optimizer groups, generation."""
import math

import pytest
import torch

from model.config import GPTConfig, preset
from model.gpt import GPT, peak_tflops_for
from model.ops import Backend


def test_lm_head_is_tied_to_wte():
    m = GPT(preset("tiny"))
    assert m.lm_head.weight is m.transformer.wte.weight
    assert sum(1 for p in m.parameters() if p is m.lm_head.weight) == 1   # counted once
    m.load_state_dict(GPT(preset("tiny")).state_dict())
    assert m.lm_head.weight is m.transformer.wte.weight                   # survives loading


def test_init_std():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=256, vocab_size=1024)
    m = GPT(cfg)
    resid = 0.02 / math.sqrt(2 * cfg.n_layer)
    for name, p in m.named_parameters():
        if name.endswith("c_proj.weight"):
            assert abs(p.std().item() - resid) < 0.05 * resid, name
        elif p.dim() == 2:
            assert abs(p.std().item() - 0.02) < 0.05 * 0.02, name
        elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
            assert torch.all(p == 1), name
        else:
            assert torch.all(p == 0), name   # biases


def test_gpt2_124m_param_count():
    with torch.device("meta"):
        m = GPT(preset("gpt2_124m"))
    assert abs(m.get_num_params() / 1e6 - 123.69) < 0.01   # nanoGPT's figure for vocab 50304
    assert m.flops_per_token(1024) == 6 * m.get_num_params() + 12 * 12 * 12 * 64 * 1024


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fully_masked_row_gives_no_nan(dtype):
    ops = Backend("eager")
    q = torch.randn(1, 2, 6, 8, dtype=dtype, requires_grad=True)
    kv = torch.randn(1, 2, 3, 8, dtype=dtype, requires_grad=True)
    y = ops.fmha(q, kv, kv, causal=True)     # T=6 > S=3: the first three query rows see no key
    assert torch.isfinite(y).all()
    y.float().sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(kv.grad).all()


def test_forward_loss_and_generate():
    torch.manual_seed(0)
    m = GPT(preset("tiny"))
    idx = torch.randint(0, 65, (2, 16))
    tgt = torch.randint(0, 65, (2, 16))
    logits, loss = m(idx, tgt)
    assert logits.shape == (2, 16, 65)
    assert abs(loss.item() - math.log(65)) < 0.3   # near uniform at init
    tgt[:, :8] = -1                                 # ignore_index
    assert torch.isfinite(m(idx, tgt)[1])
    logits, loss = m(idx)
    assert logits.shape == (2, 1, 65) and loss is None
    out = m.generate(idx[:, :3], 5, top_k=10, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 8) and torch.equal(out[:, :3], idx[:, :3])
    with pytest.raises(ValueError):
        m(torch.zeros(1, 65, dtype=torch.long))    # longer than block_size 64


def test_optimizer_decays_2d_only():
    m = GPT(preset("tiny"))
    opt = m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


def test_mfu_and_peaks():
    m = GPT(preset("tiny"))
    assert peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0 and peak_tflops_for("mystery") is None
    mfu = m.estimate_mfu(4, 0.01, T=64, peak_tflops=1.0)
    assert mfu == pytest.approx(m.flops_per_token(64) * 64 * 4 / 0.01 / 1e12)


def test_split_qkv_backward_hands_on_one_buffer_without_copying():
    """Gradients that are the column blocks of one (B, T, 3, H, D) buffer (how our fmha kernels write them)
    become dqkv as they are; any others are concatenated, as qkv.split's own backward does."""
    from kernels.fmha import layout
    from kernels.fmha.layout import split_qkv
    B, T, H, D = 2, 5, 3, 4
    C = H * D
    x = torch.randn(B, T, 3 * C, requires_grad=True)
    for shared in (True, False):
        qkv = x * 1.0
        seen = []
        qkv.register_hook(lambda g: seen.append(g))
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in split_qkv(qkv, C))
        assert layout.is_qkv_split(q, k, v)
        if shared:
            grads = layout.grads_like(q, k, v)
            for g in grads:
                g.copy_(torch.randn(g.shape))
        else:
            grads = tuple(torch.randn(B, H, T, D) for _ in range(3))
        torch.autograd.backward([q, k, v], list(grads))
        want = torch.cat([g.transpose(1, 2).reshape(B, T, C) for g in grads], dim=2)
        assert torch.equal(seen[0], want)
        assert (seen[0].data_ptr() == grads[0].data_ptr()) == shared
