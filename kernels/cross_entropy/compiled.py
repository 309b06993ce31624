from kernels.compiled import compiled_impl
from kernels.cross_entropy.eager import cross_entropy

IMPL = compiled_impl(cross_entropy)
