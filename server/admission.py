"""Admission control: may one more stream start here without breaking latency budgets?

All streams share one batched decode cycle, whose length is projected as the measured model
time per interim stream-step (the scheduler's smoothed cost; finals come once an utterance
and Recognize windows wait for idle time, so neither is projected) times the number of
streams (conservative: batching makes the real cost per stream lower). A word waits for the next
cycle and then for its compute, so the cycle must fit in half of the new stream's own latency
budget, scaled by `utilization`. Only the new stream's budget counts: a stream that asked for
a budget the server cannot keep is refused itself (the message gives the smallest budget that
fits), and one tight-budget stream cannot lock every later caller out. Streams already
running are served earliest deadline first, so a tight budget gets its decodes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping

from .scheduler import Scheduler
from .stream.session import StreamSession

# A new stream that arrives while the first batch of a fresh server is on the model waits this
# long at most for that batch's cost: with no measurement yet, admission would let any
# number of streams in (a cold server admitted 4 streams that broke their budgets).
FIRST_MEASUREMENT_WAIT_S = 3.0


class AdmissionError(Exception):
    """A new stream would exceed a limit; the message says which."""


class Admission:
    def __init__(
        self,
        scheduler: Scheduler,
        streams: Mapping[str, StreamSession],
        utilization: float,
        default_budget_s: float = 1.0,
    ) -> None:
        self.scheduler, self.streams, self.utilization = scheduler, streams, utilization
        # A stream alone is admitted with at least this budget, whatever the measurement
        # (the server's own default must always serve one caller); a tighter budget has to
        # fit, or it would be admitted alone and then outrank every later stream.
        self.default_budget_s = default_budget_s

    async def first_measurement(self) -> None:
        """On a fresh server whose first batch is on the model, wait for that batch's cost
        (at most FIRST_MEASUREMENT_WAIT_S) so that `admit` decides on a measurement."""
        if not self.scheduler.stats.cost_per_step_s and self.scheduler.busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.scheduler.measured.wait(), FIRST_MEASUREMENT_WAIT_S)

    def admit(self, budget_s: float, count: int = 1) -> None:
        """Refuse a new stream (AdmissionError) when the measured cost says budgets would break;
        `count`: how many streams it is (one a channel with separate recognition)."""
        reason = self.capacity_error(budget_s, count)
        if reason:
            raise AdmissionError(reason)

    def capacity_error(self, budget_s: float, count: int = 1) -> str | None:
        """Why `count` more streams with this budget would not fit, or None when they would."""
        cost = self.scheduler.stats.cost_per_step_s
        # Recognize calls and streams sent ahead of real time wait while live streams are
        # open (scheduler._eligible): they are not projected.
        live = sum(not (work.background or work.ahead()) for work in self.streams.values())
        if not cost or (not live and budget_s >= self.default_budget_s):
            return None
        streams = live + count
        cycle = cost * streams
        allowed = self.utilization * budget_s / 2
        if cycle <= allowed:
            return None
        smallest_ms = math.ceil(cycle * 2 / self.utilization * 1000)
        return (
            f"server at capacity: {streams} streams would need a {cycle * 1000:.0f} ms "
            f"decode cycle, a latency budget of {budget_s * 1000:.0f} ms allows "
            f"{allowed * 1000:.0f} ms; latency_budget_ms >= {smallest_ms} would fit now, or "
            "retry later or on another replica"
        )
