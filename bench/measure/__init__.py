"""Measuring points: the correctness gate and stress battery, timers, the runner, whole training steps, results on disk."""
