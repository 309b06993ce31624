from kernels.compiled import compiled_impl
from kernels.fmha.eager import fmha

IMPL = compiled_impl(fmha)
