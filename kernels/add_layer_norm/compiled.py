from kernels.add_layer_norm.eager import add_layer_norm
from kernels.compiled import compiled_impl

IMPL = compiled_impl(add_layer_norm)
