"""Fused multi-head attention: softmax(q k^T * scale [+ causal mask]) v over (B, H, T, D)."""
SPEC = "kernels.fmha.spec:SPEC"
IMPLS = {
    "eager": "kernels.fmha.eager:IMPL",
    "triton": "kernels.fmha.triton:IMPL",
    "cutile": "kernels.fmha.cutile:IMPL",
    "sdpa_flash": "kernels.fmha.sdpa:FLASH",
    "sdpa_cudnn": "kernels.fmha.sdpa:CUDNN",
    "sdpa_efficient": "kernels.fmha.sdpa:EFFICIENT",
    "sdpa_math": "kernels.fmha.sdpa:MATH",
    "torch_compile": "kernels.fmha.compiled:IMPL",
    "tilegym": "kernels.fmha.tilegym:IMPL",
}
