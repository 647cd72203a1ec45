"""The two threads that every stream shares.

- prefetch: ingest (decode, resample, VAD) and batch preparation (log-mel, tokens, the
  host-to-device copy), so the next batch's input is ready while the model runs this one;
- model: the model calls, one at a time.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from streamstt.models.memory import trim_heap

T = TypeVar("T")
TRIM_EVERY = 64  # model calls between returns of freed heap memory to the OS (malloc_trim)


def _collect_and_trim() -> None:
    gc.collect()
    trim_heap()


class Workers:
    def __init__(self) -> None:
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self._model = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._model_calls = 0

    def prefetch(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """Run `fn` on the prefetch thread (in submission order)."""
        return asyncio.get_running_loop().run_in_executor(self._prefetch, fn, *args)

    def model(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """Run `fn` on the model thread. Shapes change with every window, and glibc keeps
        freed memory resident unless asked: every TRIM_EVERY calls it is handed back."""
        return asyncio.get_running_loop().run_in_executor(self._model, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        try:
            return fn(*args)
        finally:
            self._model_calls += 1
            if self._model_calls % TRIM_EVERY == 0:
                trim_heap()

    def trim_soon(self) -> None:
        """Hand freed heap back to the OS after a big free (a Recognize call's recording and
        its message), on the prefetch thread: the event loop and the model don't wait. A
        cancelled call's frames sit in reference cycles with its exception, so collect first."""
        self._prefetch.submit(_collect_and_trim)

    def shutdown(self) -> None:
        self._prefetch.shutdown(wait=False, cancel_futures=True)
        self._model.shutdown(wait=False, cancel_futures=True)
