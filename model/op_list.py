"""The ops GPT-2 calls through its Backend (model/gpt.py via model/ops.py).

kernels/ may hold ops the model never calls (kernels.registry.OPS is all of them): a Backend maps,
ranks and reports fallbacks only for these."""
OPS = ("fmha", "layer_norm", "add_layer_norm", "gelu", "linear", "cross_entropy", "linear_cross_entropy")
