"""About the machine rather than a sweep: --doctor (toolchains and GPU) and --static (compile for other GPUs)."""
