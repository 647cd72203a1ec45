"""Handing freed heap memory back to the OS (glibc's malloc_trim).

A streaming server allocates tensors of ever-changing shapes (every window is a little longer
than the last) from several threads, and precision conversion frees large temporaries; glibc
keeps such freed memory resident unless asked to return it. No-op without glibc.
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
        if hasattr(libc, "malloc_trim"):
            return libc
    return None


def trim_heap() -> None:
    """Return freed heap memory to the OS (cheap when there is little to return)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# While a Recognize call is in flight, buffers of at least this size are mapped on their own
# and unmapped when freed. glibc's own threshold starts at 128 KiB and rises to the size of
# each large buffer freed (up to 32 MiB), after which a Recognize's recording and the
# encoder's activations beside it come from the heap, where freed space stays resident and
# fragments: two concurrent 10-minute Recognize calls peaked +472 MB over a started server,
# +317 MB with the threshold held at 1 MiB (docs/operations.md).
MMAP_THRESHOLD_BYTES = 1 << 20
# Otherwise the threshold is glibc's own ceiling: live streams reuse heap space for their
# batches' buffers. Mapping each of them (the encoder's attention, every fp32 copy of a
# decoder step's audio keys) cost four live streams ~150 ms of emission p50 and their
# correct-prefix p95 went from ~1.3-1.4 s to ~1.7-2.1 s (docs/benchmarks.md).
LIVE_MMAP_THRESHOLD_BYTES = 32 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def _hold_mmap_threshold(size: int) -> bool:
    """Fix glibc's mmap threshold at `size` (this also stops its adjustment); False without
    glibc. Buffers mapped under one threshold are unmapped when freed under any other."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, size))


def map_large_buffers(on: bool) -> bool:
    """MMAP_THRESHOLD_BYTES while `on` (Recognize calls in flight), else
    LIVE_MMAP_THRESHOLD_BYTES."""
    return _hold_mmap_threshold(MMAP_THRESHOLD_BYTES if on else LIVE_MMAP_THRESHOLD_BYTES)
