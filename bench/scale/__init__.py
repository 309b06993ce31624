"""Many GPUs and many machines: worker processes per GPU, Slurm job arrays and their shards."""
