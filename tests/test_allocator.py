"""keep_freed_memory(): a large block comes from the heap and stays there when freed, so the next one of its size
reuses it instead of fresh kernel pages (glibc's own accounting, mallinfo2, says where each block lives)."""

import subprocess
import sys

from medrun.allocator import keep_freed_memory

CHILD = """
import ctypes, ctypes.util
import numpy as np
from medrun.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2

def one_block():  # 64 MB written and freed, as inference does with a layer's output
    a = np.empty(64 * 2**20, dtype=np.uint8)
    a.fill(1)
    mapped = libc.mallinfo2().hblkhd  # bytes in blocks mapped from the kernel one by one
    del a
    return mapped // 2**20, libc.mallinfo2().fordblks // 2**20  # ... and free bytes kept in the heap, MB

print(*one_block(), keep_freed_memory(), *one_block())
"""


def test_a_freed_block_stays_in_the_heap_for_the_next_one():
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* variables, no LD_PRELOAD
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True).stdout
    mapped, kept, applied, mapped_after, kept_after = out.split()
    assert int(mapped) >= 64 and int(kept) < 64  # glibc's default: mapped for itself, handed back on free
    assert applied == "True"
    assert int(mapped_after) < 64 and int(kept_after) >= 64


def test_an_allocator_the_user_chose_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert keep_freed_memory() is False
