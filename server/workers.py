"""The two threads that every stream shares.

- prefetch: ingest (decode, resample, VAD) and batch preparation (log-mel, tokens, the
  host-to-device copy), so the next batch's input is ready while the model runs this one;
- model: the model calls, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from streamstt.models.memory import trim_heap

T = TypeVar("T")
TRIM_EVERY = 64  # model calls between returns of freed heap memory to the OS (malloc_trim)
TRIM_DELAY_S = 1.0  # from a call's end to the collection (grpc is done with the call by then)


def _collect_and_trim() -> None:
    gc.collect()
    trim_heap()


class Workers:
    def __init__(self) -> None:
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self._model = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._model_calls = 0
        self._trim_due: asyncio.TimerHandle | None = None
        self._last_end = 0.0  # when the newest call ended (time.monotonic)

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
        """Collect cycles and hand freed heap back to the OS a moment after a call ended (at
        most once a TRIM_DELAY_S), on the prefetch thread: the event loop and the model
        don't wait. Calls free big buffers (a Recognize recording, a 1 MB phrase list) that
        glibc would keep resident, and an aborted call's frames cycle with its exception (grpc
        keeps it on the call's state), holding its request message until collected."""
        self._last_end = time.monotonic()
        if self._trim_due is None:
            loop = asyncio.get_running_loop()
            self._trim_due = loop.call_later(TRIM_DELAY_S, self._trim)

    def _trim(self) -> None:
        with contextlib.suppress(RuntimeError):  # the workers were shut down meanwhile
            self._prefetch.submit(_collect_and_trim)
        # calls that ended since the timer was set are collected a second after their end
        again = self._last_end > time.monotonic() - TRIM_DELAY_S
        loop = asyncio.get_running_loop()
        self._trim_due = loop.call_later(TRIM_DELAY_S, self._trim) if again else None

    def shutdown(self) -> None:
        self._prefetch.shutdown(wait=False, cancel_futures=True)
        self._model.shutdown(wait=False, cancel_futures=True)
