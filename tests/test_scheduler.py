"""The batching policy of server.scheduler on scripted streams (no model call is made)."""

from __future__ import annotations

import asyncio

from streamstt.server.scheduler import BatchTiming, Scheduler, SchedulerStats
from streamstt.server.stream.job import Job


class Scripted:
    """A stream whose next job is fixed; `gone_after` calls of next_job it has none (the
    client cancelled in the meantime)."""

    def __init__(
        self,
        stream_id: str,
        job: Job,
        deadline: float,
        gone_after: int = 1000,
        joins_only: bool = False,
        background: bool = False,
        ahead: bool = False,
    ):
        self.stream_id, self.job, self._deadline, self.calls = stream_id, job, deadline, 0
        self.background, self._ahead = background, ahead
        self.gone_after = gone_after
        self.joins_only = joins_only  # its step is not due, but far enough to join a batch

    def next_job(self, allow_early: bool = True, join: bool = False) -> Job | None:
        self.calls += 1
        if self.joins_only and not join:
            return None
        return self.job if self.calls <= self.gone_after else None

    def deadline(self) -> float:
        return self._deadline

    def ahead(self) -> bool:
        return self._ahead


def _scheduler(*sessions: Scripted, max_wait_ms: float = 1.0) -> Scheduler:
    streams = {session.stream_id: session for session in sessions}
    # neither the model nor the threads are used: _collect only chooses the batch
    return Scheduler(None, None, streams, max_batch_size=8, max_wait_ms=max_wait_ms)


def _collect(scheduler: Scheduler) -> list[str]:
    chosen = asyncio.run(scheduler._collect())
    return [session.stream_id for _, session, _ in chosen]


INTERIM = Job(False, 0, 16000, "")
FINAL = Job(True, 0, 16000, "")


def test_interims_share_a_batch_and_a_final_runs_alone():
    a, b = Scripted("a", INTERIM, 2.0), Scripted("b", INTERIM, 3.0)
    final = Scripted("f", FINAL, 1.0)
    assert _collect(_scheduler(a, b, final)) == ["f"]  # the most urgent: alone
    a, b = Scripted("a", INTERIM, 2.0), Scripted("b", INTERIM, 3.0)
    final = Scripted("f", FINAL, 4.0)
    assert _collect(_scheduler(a, b, final)) == ["a", "b"]  # the final waits its turn


def test_a_stream_part_way_into_its_step_joins_an_interim_batch():
    a, b = Scripted("a", INTERIM, 2.0), Scripted("b", INTERIM, 3.0, joins_only=True)
    assert _collect(_scheduler(a, b)) == ["a", "b"]
    # ...but not a final's batch, and not an idle-time decode early, before an endpoint
    final, b = Scripted("f", FINAL, 1.0), Scripted("b", INTERIM, 3.0, joins_only=True)
    assert _collect(_scheduler(final, b)) == ["f"]
    early = Scripted("x", Job(True, 0, 16000, "", early=True), 1.0)
    b = Scripted("b", INTERIM, 3.0, joins_only=True)
    assert _collect(_scheduler(early, b)) == ["x"]


def test_a_stream_gone_while_the_batch_waits_leaves_an_empty_batch():
    """The only ready stream is cancelled during max_wait_ms: nothing to run (the loop goes
    back to waiting), no error that would stop the batching loop."""
    assert _collect(_scheduler(Scripted("a", INTERIM, 1.0, gone_after=1))) == []


def test_admission_projects_interim_steps_only():
    """A final (once an utterance, the full window) or a Recognize window must not move the
    per-step cost that admission multiplies by the number of streams."""
    stats = SchedulerStats()
    stats.record(BatchTiming(2, model_start=0.0, model_end=0.6), early=0)
    assert stats.cost_per_step_s == 0.3
    stats.record(BatchTiming(1, finals=1, model_start=1.0, model_end=5.0), 0, per_cycle=False)
    assert stats.cost_per_step_s == 0.3 and stats.batches == 2


def test_work_that_can_wait_waits_while_a_live_stream_keeps_pace():
    """A Recognize window or a stream sent faster than real time would hold a live stream's
    next interim back for its whole decode: while one is on time, they wait."""
    live = Scripted("live", INTERIM, deadline=5.0, joins_only=True)  # nothing due right now
    recognize = Scripted("r1", FINAL, deadline=1e6, background=True)
    fast = Scripted("fast", INTERIM, deadline=1.0, ahead=True)
    scheduler = _scheduler(live, recognize, fast)
    assert scheduler._ready() == [] and scheduler._deferred
    alone = _scheduler(recognize, fast)  # no live stream on time: both may run
    assert [s.stream_id for _, s, _ in alone._ready()] == ["fast", "r1"]
