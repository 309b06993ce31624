"""Linear: x @ weight.T + bias (weight is (N, K) as in nn.Linear), optional fused GELU epilogue."""
SPEC = "kernels.linear.spec:SPEC"
IMPLS = {
    "eager": "kernels.linear.eager:IMPL",
    "triton": "kernels.linear.triton:IMPL",
    "cutile": "kernels.linear.cutile:IMPL",
    "torch_compile": "kernels.linear.compiled:IMPL",
    "cublaslt": "kernels.linear.cublaslt:IMPL",
}
