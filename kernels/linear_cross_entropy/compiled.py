from kernels.compiled import compiled_impl
from kernels.linear_cross_entropy.eager import linear_cross_entropy

IMPL = compiled_impl(linear_cross_entropy)
