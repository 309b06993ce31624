from kernels.compiled import compiled_impl
from kernels.linear.eager import linear

IMPL = compiled_impl(linear)
