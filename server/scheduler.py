"""The batcher: many streams' decodes, one model, a two-stage pipeline.

Stage 1 (the prefetch thread) prepares a batch: log-mel features and tokens (pinned and
copied on a side stream on CUDA). Stage 2 (the model thread) runs encoder, batched decoding
and word alignment. While batch k is on the model, batch k+1 is collected and prepared.

Batches are formed earliest-deadline-first (a stream's deadline is when its oldest undecoded
audio arrived plus its latency budget), up to `max_batch_size`, waiting at most `max_wait_ms`
for more streams. A stream always decodes its newest audio, so a stream that falls behind
skips stale steps instead of queueing them. A failing batch fails only its own streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch

from streamstt.models.transcriber import PreparedBatch, Request, Transcriber, Transcript

from .stream.job import Job
from .stream.session import Timing
from .supervision import Supervisor
from .workers import Workers

_LOGGER = logging.getLogger(__name__)
TIMELINE_LENGTH = 256  # batches of stage timestamps kept for metrics and tests
COST_SMOOTHING = 0.2  # weight of the newest batch in the per-step cost average
DEFERRED_POLL_S = 0.1  # how often waiting work is looked at again when nothing else is due


class Session(Protocol):
    """What the batcher needs from a stream (server.stream.StreamSession)."""

    stream_id: str

    background: bool  # work that waits while a live stream keeps pace (Recognize)

    def next_job(self, allow_early: bool = True, join: bool = False) -> Job | None: ...
    def ahead(self) -> bool: ...
    def request(self, job: Job) -> Request: ...
    def deadline(self) -> float: ...
    def deliver(self, job: Job, transcript: Transcript, timing: Timing) -> None: ...
    def end(self, code: str, message: str) -> None: ...


@dataclass
class BatchTiming:
    """Stage timestamps of one batch (time.monotonic seconds)."""

    size: int
    finals: int = 0  # items that close an utterance (a final runs alone: see _collect)
    enqueued: float = 0.0
    prep_start: float = 0.0
    prep_end: float = 0.0
    model_start: float = 0.0
    model_end: float = 0.0

    @property
    def queue_s(self) -> float:
        return self.model_start - self.enqueued

    @property
    def compute_s(self) -> float:
        return self.model_end - self.model_start


@dataclass
class SchedulerStats:
    batches: int = 0
    steps: int = 0  # stream-steps (batch items) decoded
    max_batch: int = 0
    multi_stream_batches: int = 0  # batches holding two or more streams
    early_finals: int = 0  # finals decoded before their endpoint (server.stream.planning)
    cost_per_step_s: float = 0.0  # smoothed model seconds per interim stream-step
    timeline: deque[BatchTiming] = field(default_factory=lambda: deque(maxlen=TIMELINE_LENGTH))

    def record(self, timing: BatchTiming, early: int, per_cycle: bool = True) -> None:
        """A batch ran (`early`: how many of its items were finals decoded early;
        `per_cycle`: it is a live interim step, the work every stream needs every cycle,
        whose cost admission projects; a final comes once an utterance and Recognize
        windows wait for idle time)."""
        self.batches += 1
        self.steps += timing.size
        self.max_batch = max(self.max_batch, timing.size)
        self.multi_stream_batches += timing.size >= 2
        self.early_finals += early
        self.timeline.append(timing)
        if not per_cycle:
            return
        per_step = timing.compute_s / timing.size
        if self.cost_per_step_s == 0:
            self.cost_per_step_s = per_step
        else:
            self.cost_per_step_s += COST_SMOOTHING * (per_step - self.cost_per_step_s)


@dataclass(frozen=True)
class _Batch:
    """A batch on its way through the two stages; all its jobs are of one kind."""

    sessions: list[Session]
    jobs: list[Job]
    requests: list[Request]
    timing: BatchTiming

    def prepare(self, transcriber: Transcriber) -> PreparedBatch:
        """Stage 1, on the prefetch thread."""
        self.timing.prep_start = time.monotonic()
        prepared = transcriber.prepare(self.requests, self.jobs[0].options)
        self.timing.prep_end = time.monotonic()
        return prepared

    def run(
        self,
        transcriber: Transcriber,
        prepared: PreparedBatch,
        fault_hook: Callable[[list[str]], None] | None,
    ) -> list[Transcript]:
        """Stage 2, on the model thread."""
        self.timing.model_start = time.monotonic()
        if fault_hook is not None:
            fault_hook([s.stream_id for s in self.sessions])
        results = transcriber.run(prepared, self.jobs[0].options)
        self.timing.model_end = time.monotonic()
        return results


_Ready = tuple[float, Session, Job]


class Scheduler:
    def __init__(
        self,
        transcriber: Transcriber,
        workers: Workers,
        streams: Mapping[str, Session],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        model_timeout_s: float = 60.0,
    ) -> None:
        self.transcriber = transcriber
        self.workers = workers
        self.streams = streams  # the live streams (owned by the servicer)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.stats = SchedulerStats()
        self.measured = asyncio.Event()  # set when the first batch's cost is known
        # Test and chaos seam: called on the model thread with the batch's stream ids.
        self.fault_hook: Callable[[list[str]], None] | None = None
        self.on_batch: Callable[[BatchTiming], None] | None = None  # metrics
        self.supervisor = Supervisor(streams, model_timeout_s)
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._deferred = False  # the last look left work waiting for live streams
        self._model_free = asyncio.Semaphore(1)
        self._task: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        """A batch is being prepared or run."""
        return bool(self._in_flight)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="scheduler")
        self.supervisor.watch_task(self._task)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            # a crash was reported (and acted on) when it happened: server/supervision.py
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def notify(self) -> None:
        """A stream may have work: wake the batching loop."""
        self._wake.set()

    # ---- choosing a batch ------------------------------------------------------------------
    def _eligible(self) -> list[Session]:
        """The streams whose work may run now. The model is not preempted, so while a live
        stream keeps pace with real time, work that can wait (Recognize windows, a stream
        sent faster than real time) waits: run beside live streams, its long decodes would
        hold their next interims back."""
        sessions = list(self.streams.values())
        waiting = [s for s in sessions if s.background or s.ahead()]
        self._deferred = bool(waiting) and len(waiting) < len(sessions)
        eligible = [s for s in sessions if s not in waiting] if self._deferred else sessions
        return [s for s in eligible if s.stream_id not in self._in_flight]

    def _ready(self, allow_early: bool = True, join: bool = False) -> list[_Ready]:
        ready = []
        for session in self._eligible():
            job = session.next_job(allow_early, join)
            if job is not None:
                ready.append((session.deadline(), session, job))
        return sorted(ready, key=lambda item: item[0])

    async def _collect(self) -> list[_Ready]:
        while not (ready := self._ready()):
            self._wake.clear()
            if self._deferred:  # a stream ahead of real time becomes due as time passes
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), DEFERRED_POLL_S)
            else:
                await self._wake.wait()
        if len(ready) < self.max_batch_size and self.max_wait_s > 0:
            await asyncio.sleep(self.max_wait_s)  # let concurrent streams join this batch
            ready = self._ready()
        # Work done early (a final decoded in a pause, an interim a dip brought forward) only
        # fills time the model would idle; with other work waiting, such a stream gets its
        # plain interim instead, or nothing until its step is due.
        needed = [item for item in ready if not item[2].early]
        if needed and len(needed) < len(ready):
            for deadline, session, job in ready:
                if job.early and (plain := session.next_job(allow_early=False)) is not None:
                    needed.append((deadline, session, plain))
            ready = sorted(needed, key=lambda item: item[0])
        # A final runs alone: it encodes the full 30 s window with the exact (slower) kernels,
        # and batching finals saves nothing (4 finals cost 4x one). Interims riding with it
        # would pay for both, and every other stream would wait for the whole batch.
        if ready and ready[0][2].final:
            return ready[:1]
        interims = [item for item in ready if not item[2].final]
        if interims and len(interims) < self.max_batch_size:
            taken = {session.stream_id for _, session, _ in ready}
            joining = self._ready(allow_early=False, join=True)
            interims += [i for i in joining if i[1].stream_id not in taken and not i[2].final]
        return interims[: self.max_batch_size]

    # ---- running it ------------------------------------------------------------------------
    async def _loop(self) -> None:
        while self.supervisor.broken is None:
            # Names still bound to the last batch would keep its audio (a Recognize window is a
            # view of the whole recording) alive for as long as the scheduler idles.
            chosen = batch = prepared = None
            chosen = await self._collect()
            if not chosen:
                continue
            batch = self._batch(chosen)
            try:
                prepared = await self.workers.prefetch(batch.prepare, self.transcriber)
            except Exception as exc:  # noqa: BLE001 - a bad batch must not stop the loop
                self._fail(batch, exc)
                continue
            await self._model_free.acquire()
            future = self.workers.model(batch.run, self.transcriber, prepared, self.fault_hook)
            future.add_done_callback(lambda f, b=batch: self._finished(f, b))
            self.supervisor.watch_call(future)

    def _batch(self, chosen: list[_Ready]) -> _Batch:
        sessions = [session for _, session, _ in chosen]
        jobs = [job for _, _, job in chosen]
        assert len({job.final for job in jobs}) == 1, "a final runs alone (see _collect)"
        self._in_flight.update(s.stream_id for s in sessions)
        timing = BatchTiming(len(jobs), sum(j.final for j in jobs), enqueued=time.monotonic())
        requests = [s.request(j) for s, j in zip(sessions, jobs)]
        return _Batch(sessions, jobs, requests, timing)

    def _finished(self, future: asyncio.Future, batch: _Batch) -> None:
        if self.supervisor.broken is not None:
            return  # its streams have their status
        self._model_free.release()
        self._in_flight.difference_update(s.stream_id for s in batch.sessions)
        try:
            results = future.result()
        except Exception as exc:  # noqa: BLE001
            self._fail(batch, exc)
            return
        per_cycle = not (batch.sessions[0].background or batch.jobs[0].final)
        early_finals = sum(job.early and job.final for job in batch.jobs)
        self.stats.record(batch.timing, early_finals, per_cycle)
        self.measured.set()
        if self.on_batch is not None:
            self.on_batch(batch.timing)
        timing = Timing(batch.timing.queue_s * 1000, batch.timing.compute_s * 1000)
        for session, job, result in zip(batch.sessions, batch.jobs, results):
            if session.stream_id in self.streams:
                _deliver(session, job, result, timing)
        self._wake.set()

    def _fail(self, batch: _Batch, exc: BaseException) -> None:
        out_of_memory = isinstance(exc, (MemoryError, torch.OutOfMemoryError))
        code = "RESOURCE_EXHAUSTED" if out_of_memory else "INTERNAL"
        what = "out of memory" if out_of_memory else "internal error"
        ids = [s.stream_id for s in batch.sessions]
        _LOGGER.error("batch of %d failed: %r", len(ids), exc, extra={"streams": ids})
        self._in_flight.difference_update(ids)
        for session in batch.sessions:
            session.end(code, f"recognition failed ({what} in a model batch); retry the stream")
        self._wake.set()


def _deliver(session: Session, job: Job, result: Transcript, timing: Timing) -> None:
    """Hand a stream its result; a stream that fails on it ends with INTERNAL, alone."""
    try:
        session.deliver(job, result, timing)
    except Exception as exc:  # noqa: BLE001 - one stream's bug must not stop the others
        _LOGGER.error("delivery failed: %r", exc, exc_info=exc, extra={"stream": session.stream_id})
        session.end("INTERNAL", "recognition failed (internal error handling a result)")
