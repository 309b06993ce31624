from kernels.compiled import compiled_impl
from kernels.layer_norm.eager import layer_norm

IMPL = compiled_impl(layer_norm)
