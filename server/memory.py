"""Keeping the resident size flat under glibc's allocator.

A streaming server allocates tensors of ever-changing shapes (every window is a little
longer than the last) from several threads. Two glibc defaults turn that into slow growth:

- the mmap threshold is dynamic: after a large block is freed, blocks up to that size come
  from the heap instead of fresh mmaps, where they fragment it and are not returned on free;
- every thread that allocates may get its own arena (8 x cores of them), each holding freed
  memory of its own.

`tune_allocator` fixes the threshold (blocks of 1 MiB and up — audio windows, features,
encoder activations — are mmapped and go back to the OS when freed) and caps the arenas;
`trim_heap` hands freed heap pages back now and then. Both are no-ops without glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20  # bytes: larger blocks are mmapped (and unmapped on free)
TRIM_THRESHOLD = 4 << 20  # bytes of free heap top kept before glibc trims it by itself
ARENA_MAX = 4  # the event loop, the prefetch and model threads, gRPC's own


@functools.cache
def _libc():
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
            return libc
    return None


def tune_allocator() -> bool:
    """Set the thresholds and the arena cap; True when glibc took them."""
    libc = _libc()
    if libc is None:
        return False
    return all(
        libc.mallopt(option, value) == 1
        for option, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_ARENA_MAX, ARENA_MAX),
        )
    )


def trim_heap() -> None:
    """Return freed heap memory to the OS (cheap when there is little to return)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
