"""Cross-entropy from logits (N, V) and targets (N,) to the mean loss, ignore_index=-1 as nanoGPT uses."""
SPEC = "kernels.cross_entropy.spec:SPEC"
IMPLS = {
    "eager": "kernels.cross_entropy.eager:IMPL",
    "triton": "kernels.cross_entropy.triton:IMPL",
    "cutile": "kernels.cross_entropy.cutile:IMPL",
    "torch_compile": "kernels.cross_entropy.compiled:IMPL",
    "liger": "kernels.cross_entropy.liger:IMPL",
}
