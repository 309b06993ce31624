"""Facts the gemm sweep's rows cannot show, in a few seconds on a GPU:
- which GELU cuBLASLt's epilogue computes (kernels.linear.cublaslt assumes tanh, as F.gelu(approximate="tanh")):
  fp32 inputs, max |difference| from each flavour;
- whether the Triton TMA kernel runs and takes the TMA path on this triton (KERNEL=tma), and what
  warp specialization does to its compile (status per preset).

    python tests/gpu/gemm_check.py
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
            out = lt.matmul(a, b, lt.config_for(a, lt.PRESETS[preset]))[0]
            err = ((out.double() - ref).norm() / ref.norm()).item()
            print(f"{preset}: tma path {'taken' if calls else 'NOT taken'}, rel err {err:.2e}")
        except Exception as e:   # the status is the finding
            print(f"{preset}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    triton_tma.launch = launch


if __name__ == "__main__":
    cublaslt_gelu_flavour()
    triton_tma()
