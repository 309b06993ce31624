"""gelu impls loaded through TILEBENCH_PLUGINS by the CLI tests (a real subprocess run, as a user's own
out-of-tree impl would be): one that chatters on stdout and stderr, one slowed by TILEBENCH_TEST_SLEEP_MS."""
import os
import sys
import time

import torch.nn.functional as F

from kernels.registry import KernelImpl


def _gelu(x, bias=None):
    return F.gelu(x if bias is None else x + bias, approximate="tanh")


def _chatty(x, bias=None):
    print("chatty: tuning table row", flush=True)                # Python's stdout
    os.write(2, b"chatty: a line from C on fd 2\n")                 # what a compiler or a C++ library does
    print("chatty: a warning on stderr", file=sys.stderr, flush=True)
    return _gelu(x, bias)


def _slow(x, bias=None):
    time.sleep(float(os.environ.get("TILEBENCH_TEST_SLEEP_MS", "0")) / 1e3)
    return _gelu(x, bias)


CHATTY = KernelImpl(fn=_chatty, backend="eager", kind="peer", doc="prints while it runs")
SLOW = KernelImpl(fn=_slow, backend="eager", kind="ours", doc="sleeps TILEBENCH_TEST_SLEEP_MS per call")
