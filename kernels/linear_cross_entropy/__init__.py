"""The lm_head matmul fused with cross-entropy: loss = CE(x @ weight.T, targets), ignore_index=-1.

At GPT-2's training shape the logits are 16384 x 50304 (1.6 GB in bf16, 3.3 GB more as the fp32 copy
eager cross-entropy makes): the biggest tensor of the step. Fused impls never hold more than a chunk of
rows of them, computing the gradients in the forward."""
SPEC = "kernels.linear_cross_entropy.spec:SPEC"
IMPLS = {
    "eager": "kernels.linear_cross_entropy.eager:IMPL",
    "eager_chunked": "kernels.linear_cross_entropy.chunked:IMPL",
    "triton": "kernels.linear_cross_entropy.triton:IMPL",
    "cutile": "kernels.linear_cross_entropy.cutile:IMPL",
    "torch_compile": "kernels.linear_cross_entropy.compiled:IMPL",
    "liger": "kernels.linear_cross_entropy.liger:IMPL",
}
