"""Facts the gemm sweep's rows cannot show, in a few seconds on a GPU:
- which GELU cuBLASLt's epilogue computes (kernels.linear.cublaslt assumes tanh, as F.gelu(approximate="tanh")):
  fp32 inputs, max |difference| from each flavour;
- whether the Triton TMA kernel runs and takes the TMA path on this triton (KERNEL=tma), and what
  warp specialization does to its compile (status per preset);
- whether the Triton stream-K dW (SPLIT_K -1) and the db summed inside it are right at GPT-2's dW shapes and
  bitwise the same from run to run (its fix-up adds partials in a fixed order);
- what the standalone bias gradient (column sums of dY, where the dW matmul cannot take it) costs against
  torch's sum and the bandwidth bound.

    PYTHONPATH=.:$PYTHONPATH python tools/gemm_check.py
"""
import torch
import torch.nn.functional as F


def cublaslt_gelu_flavour():
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(512, 256, device="cuda", generator=g)
    w = torch.randn(384, 256, device="cuda", generator=g) * 0.1
    b = torch.randn(384, device="cuda", generator=g)
    torch.backends.cuda.matmul.allow_tf32 = False
    y = torch._addmm_activation(b, x, w.t(), use_gelu=True)
    pre = F.linear(x, w, b)
    for name, ref in (("tanh", F.gelu(pre, approximate="tanh")), ("erf", F.gelu(pre))):
        print(f"cuBLASLt GELU epilogue vs {name}-GELU: max |diff| {(y - ref).abs().max().item():.3e}")


def triton_tma():
    import triton

    from kernels.linear import triton as lt
    from kernels.linear import triton_tma
    print("triton", triton.__version__, "TensorDescriptor:", triton_tma.TensorDescriptor is not None)
    calls = []
    launch = triton_tma.launch
    triton_tma.launch = lambda *a, **k: (calls.append(1), launch(*a, **k))[1]
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(1000, 768, device="cuda", generator=g).bfloat16()
    b = torch.randn(768, 2304, device="cuda", generator=g).bfloat16()
    ref = a.double() @ b.double()
    for preset in ("tma_128x256", "tma_128x128", "tma_128x256_ws"):
        calls.clear()
        try:
            out = lt.matmul(a, b, lt.config_for(a, lt.TUNING[preset]))[0]
            err = ((out.double() - ref).norm() / ref.norm()).item()
            print(f"{preset}: tma path {'taken' if calls else 'NOT taken'}, rel err {err:.2e}")
        except Exception as e:   # the status is the finding
            print(f"{preset}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    triton_tma.launch = launch


def triton_streamk():
    from kernels.linear import triton as lt
    g = torch.Generator(device="cuda").manual_seed(0)
    for n_out, n_in in ((2304, 768), (768, 768), (3072, 768), (768, 3072), (50304, 768)):
        dy = torch.randn(16384, n_out, device="cuda", generator=g).bfloat16()
        x = torch.randn(16384, n_in, device="cuda", generator=g).bfloat16()
        cfg = lt.config_for(x, lt.TUNING["tma_streamk"])
        # stream-K never sums dY's rows on the way (its dW went wrong on an H200 with them): db is the column sum's
        runs = [lt.matmul(dy.t(), x, cfg)[0] for _ in range(3)]
        ref = dy.float().t() @ x.float()
        dw = runs[0]
        same = all(torch.equal(r, dw) for r in runs[1:])
        print(f"stream-K dW {n_out}x{n_in}: rel err {((dw.float() - ref).norm() / ref.norm()).item():.2e}, "
              f"bitwise repeatable: {same}")


def triton_column_sums():
    import triton.testing

    from kernels.linear import triton as lt
    g = torch.Generator(device="cuda").manual_seed(0)
    for n in (768, 2304, 3072):
        dy = torch.randn(16384, n, device="cuda", generator=g).bfloat16()
        ours = triton.testing.do_bench(lambda: lt.column_sums(dy, dy.dtype), return_mode="median")
        ref = triton.testing.do_bench(lambda: dy.sum(0), return_mode="median")
        err = ((lt.column_sums(dy, torch.float32) - dy.float().sum(0)).norm() / dy.float().sum(0).norm()).item()
        print(f"column sums 16384x{n}: ours {ours * 1e3:.1f} us, torch {ref * 1e3:.1f} us, "
              f"{dy.numel() * 2 / ours / 1e9:.2f} TB/s, rel err {err:.1e}")


if __name__ == "__main__":
    cublaslt_gelu_flavour()
    triton_tma()
    triton_streamk()
    triton_column_sums()
