"""GELU, tanh form, with the bias add fused: gelu(x + bias)."""
SPEC = "kernels.gelu.spec:SPEC"
IMPLS = {
    "eager": "kernels.gelu.eager:IMPL",
    "triton": "kernels.gelu.triton:IMPL",
    "cutile": "kernels.gelu.cutile:IMPL",
    "torch_compile": "kernels.gelu.compiled:IMPL",
}
