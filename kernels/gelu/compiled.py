from kernels.compiled import compiled_impl
from kernels.gelu.eager import gelu

IMPL = compiled_impl(gelu)
