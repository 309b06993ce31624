"""Residual add + LayerNorm in one pass, as a pre-LN transformer block uses them:
s = x + y + bias (the residual stream, kept in x's dtype, fp32 under autocast) and h = LayerNorm(s) written
directly in the autocast dtype the next matmul reads. Returns (s, h)."""
SPEC = "kernels.add_layer_norm.spec:SPEC"
IMPLS = {
    "eager": "kernels.add_layer_norm.eager:IMPL",
    "triton": "kernels.add_layer_norm.triton:IMPL",
    "cutile": "kernels.add_layer_norm.cutile:IMPL",
    "torch_compile": "kernels.add_layer_norm.compiled:IMPL",
}
