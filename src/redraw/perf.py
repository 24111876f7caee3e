"""Process-level speed settings for training on a CPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator(threshold: int = 1 << 30) -> bool:
    """Stop glibc from handing memory back to the OS after every training step.

    Large tensors are mmap'ed and unmapped each step by default, so every update page-faults
    its working set in again. Raising the mmap and trim thresholds keeps freed blocks in the
    heap for reuse. No-op (returns False) where glibc is not the allocator.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, threshold) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
