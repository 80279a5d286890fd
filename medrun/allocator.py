"""glibc malloc settings for PyTorch on the CPU: freed large blocks are kept for reuse, not handed back."""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt(3) parameters
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Serve large tensors from the heap and keep freed memory in it, as jemalloc and tcmalloc do.

    In inference PyTorch frees every layer's output as soon as the next one is computed. glibc gives each block
    over its mmap threshold (at most 32 MB) fresh pages from the kernel and returns them on free, so every batch
    pays for zeroed pages again: a DenseNet121 eval on 2 cores spent 19 of its 61 CPU seconds in the kernel
    (`scripts/bench.py --only allocator` measures it). Peak memory stays the same; the process keeps its peak.
    A no-op off glibc, and when the environment already tunes the allocator (MALLOC_* variables, LD_PRELOAD).
    Returns whether the settings were applied.
    """
    if os.environ.get("LD_PRELOAD") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the trim threshold is an int, so its largest value (2 GiB) is "never"
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
