"""Health as balancers read it: "ready for a new stream" apart from "alive".

A bidirectional stream lives on one replica for minutes, so the unit of load is the stream and
the question a balancer asks is "may a new stream start here?". Two names in the gRPC health
protocol answer the two questions a deployment asks:

- "" and the service name: ready for a NEW stream. NOT_SERVING while the model loads, while
  draining, and while at capacity (max_streams reached, or admission control would refuse a
  stream with the default budget), so client-side health checking, Envoy and Kubernetes
  readiness send new streams to other replicas instead of having them refused here.
- "liveness": SERVING from the end of warm-up until the process exits, at capacity and during
  the drain too, so a busy or draining replica is never restarted for being busy; NOT_SERVING
  once the replica is broken (its scheduler crashed or a model call hung), so it is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health, health_pb2

LIVENESS = "liveness"
# The admission estimate moves with every batch, not only when streams start or end: recheck
# at least this often so "at capacity" clears soon after the cost drops.
RECHECK_S = 0.5
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_LOGGER = logging.getLogger("streamstt.server")


class Readiness:
    """Keeps the health statuses in step with the servicer's streams and the scheduler."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        ready_names: tuple[str, ...],
    ) -> None:
        self.health = servicer
        self.ready_names = ready_names
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._ready: bool | None = None
        self._stopping = False
        self._reason = None  # callable -> str | None, set by start()

    async def loading(self) -> None:
        for name in (*self.ready_names, LIVENESS):
            await self.health.set(name, _NOT_SERVING)

    async def start(self, reason) -> None:
        """Alive now; ready whenever `reason()` (why a new stream would be refused) is None."""
        self._reason = reason
        await self.health.set(LIVENESS, _SERVING)
        await self._update()
        self._task = asyncio.create_task(self._run())

    def poke(self) -> None:
        """A stream started or ended: re-evaluate at once."""
        self._changed.set()

    async def drain(self) -> None:
        """Not ready for new streams from now on; still alive while running streams finish."""
        await self._stop_task()
        for name in self.ready_names:
            await self.health.set(name, _NOT_SERVING)
        self._ready = False

    async def broken(self, reason: str) -> None:
        """The replica cannot serve: nothing is SERVING any more, liveness included."""
        _LOGGER.error("replica broken; health NOT_SERVING", extra={"reason": reason})
        await self.stop()

    async def stop(self) -> None:
        await self._stop_task()
        for name in (*self.ready_names, LIVENESS):
            await self.health.set(name, _NOT_SERVING)

    async def _run(self) -> None:
        while not self._stopping:
            # asyncio.wait rather than wait_for: wait_for can swallow a cancellation that
            # races with the event being set (Python < 3.12), which would leave this loop
            # running after stop(); the flag ends it in any case.
            waiter = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({waiter}, timeout=RECHECK_S)
            finally:
                waiter.cancel()
            self._changed.clear()
            if not self._stopping:
                await self._update()

    async def _update(self) -> None:
        reason = self._reason() if self._reason else "loading"
        ready = reason is None
        if ready == self._ready:
            return
        self._ready = ready
        for name in self.ready_names:
            await self.health.set(name, _SERVING if ready else _NOT_SERVING)
        _LOGGER.info("ready" if ready else "not ready", extra={"reason": reason or ""})

    async def _stop_task(self) -> None:
        self._stopping = True
        self._changed.set()
        if self._task is not None:
            task, self._task = self._task, None
            await asyncio.wait({task}, timeout=2 * RECHECK_S)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
