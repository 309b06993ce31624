"""GPT-2 as nanoGPT defines it, with every op routed through the kernel registry (see model/ops.py)."""
