"""Supervision of the scheduler: a crash of its loop, or a model call past its timeout, breaks
the replica. Every stream fails with a status, and `on_broken` tells the app (new calls
refused, health NOT_SERVING, liveness too, so the orchestrator restarts the replica)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

_LOGGER = logging.getLogger(__name__)


class _Endable(Protocol):
    def end(self, code: str, message: str) -> None: ...


class Supervisor:
    def __init__(self, streams: Mapping[str, _Endable], model_timeout_s: float) -> None:
        self.streams = streams
        self.model_timeout_s = model_timeout_s
        self.broken: str | None = None  # why the replica can serve no one; None: healthy
        self.on_broken: Callable[[str], None] | None = None

    def watch_task(self, task: asyncio.Task) -> None:
        task.add_done_callback(self._exited)

    def watch_call(self, future: asyncio.Future) -> None:
        """A model call: past model_timeout_s the one model thread is wedged."""
        asyncio.get_running_loop().call_later(self.model_timeout_s, self._overdue, future)

    def _exited(self, task: asyncio.Task) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            _LOGGER.error("scheduler crashed: %r", exc, exc_info=exc)
            self._break("INTERNAL", f"the scheduler crashed ({type(exc).__name__})")

    def _overdue(self, future: asyncio.Future) -> None:
        if not future.done():
            _LOGGER.error("model call exceeded model_timeout_s=%g", self.model_timeout_s)
            reason = f"a model call exceeded model_timeout_s={self.model_timeout_s:g}"
            self._break("UNAVAILABLE", reason)

    def _break(self, code: str, reason: str) -> None:
        if self.broken is not None:
            return
        self.broken = reason
        for session in list(self.streams.values()):
            session.end(code, f"recognition failed: {reason}; retry on another replica")
        if self.on_broken is not None:
            self.on_broken(reason)
