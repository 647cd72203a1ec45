"""Keeping the resident size flat under glibc's allocator.

A streaming server allocates tensors of ever-changing shapes (every window is a little
longer than the last) from several threads. Two glibc defaults turn that into slow growth:

- the mmap threshold is dynamic: after a large block is freed, blocks up to that size come
  from the heap instead of fresh mmaps, where they fragment it and are not returned on free;
- every thread that allocates may get its own arena (8 x cores of them), each holding freed
  memory of its own.

`trim_heap` hands freed heap pages back now and then (a no-op without glibc). Fixing the mmap
threshold and capping the arenas (mallopt) was tried and did not change the held-load result,
so it is not applied; see the closing note of the reliability issue.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools


@functools.cache
def _libc():
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
            return libc
    return None


def trim_heap() -> None:
    """Return freed heap memory to the OS (cheap when there is little to return)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
