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
