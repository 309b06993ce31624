"""LayerNorm over the last dim with weight and bias (eps 1e-5), as GPT-2 uses it."""
SPEC = "kernels.layer_norm.spec:SPEC"
IMPLS = {
    "eager": "kernels.layer_norm.eager:IMPL",
    "triton": "kernels.layer_norm.triton:IMPL",
    "cutile": "kernels.layer_norm.cutile:IMPL",
    "torch_compile": "kernels.layer_norm.compiled:IMPL",
    "liger": "kernels.layer_norm.liger:IMPL",
    "tilegym": "kernels.layer_norm.tilegym:IMPL",
}
