"""The batching scheduler: many streams, one model, a two-stage pipeline.

Stage 1 (the prefetch thread) decodes, resamples and VAD-scores incoming chunks, and builds
the next batch's log-mel features (pinned and copied on a side stream on CUDA). Stage 2 (the
model thread) runs encoder + batched decoding + word alignment. While batch k is on the model,
batch k+1 is collected and prepared, so the model never waits for input preparation.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from streamstt.models.audio import SAMPLE_RATE
from streamstt.models.memory import trim_heap
from streamstt.models.transcriber import PreparedBatch, TranscribeOptions, Transcriber

from .stream import Job

_LOGGER = logging.getLogger(__name__)
TRIM_EVERY = 64  # batches between returns of freed heap memory to the OS (glibc malloc_trim)
TIMELINE_LENGTH = 256  # batches of stage timestamps kept for metrics and tests
COST_SMOOTHING = 0.2  # weight of the newest batch in the per-step cost average
# A new stream that arrives while the first batch of a fresh server is on the model waits this
# long at most for that batch's cost: with no measurement yet, admission would let any
# number of streams in (a cold server admitted 4 streams that broke their budgets).
FIRST_MEASUREMENT_WAIT_S = 3.0


class Session(Protocol):
    """What the scheduler needs from a stream (implemented by server.session)."""

    stream_id: str

    def next_job(self, ahead: bool = True, join: bool = False) -> Job | None: ...
    def window(self, job: Job) -> np.ndarray: ...
    def deadline(self) -> float: ...
    def budget_s(self) -> float: ...
    def deliver(self, job: Job, transcript, timing: dict[str, float]) -> None: ...
    def fail(self, code: str, message: str) -> None: ...


class AdmissionError(Exception):
    """A new stream would exceed a limit; the message says which."""


@dataclass
class BatchTiming:
    """Stage timestamps of one batch (time.monotonic seconds)."""

    size: int
    finals: int = 0  # items that close an utterance (a final runs alone: see _collect)
    prep_start: float = 0.0
    prep_end: float = 0.0
    model_start: float = 0.0
    model_end: float = 0.0


@dataclass
class SchedulerStats:
    batches: int = 0
    steps: int = 0  # stream-steps (batch items) decoded
    max_batch: int = 0
    multi_stream_batches: int = 0  # batches holding two or more streams
    ahead_decodes: int = 0  # finals decoded ahead of their endpoint (server.stream)
    failed_batches: int = 0
    cost_per_step_s: float = 0.0  # smoothed model seconds per stream-step
    timeline: deque[BatchTiming] = field(default_factory=lambda: deque(maxlen=TIMELINE_LENGTH))


@dataclass(frozen=True)
class _Planned:
    sessions: list[Session]
    jobs: list[Job]
    audios: list[torch.Tensor]
    prompts: list[str]
    timing: BatchTiming
    enqueued: float


# A prepared batch with its prompt, prefix and draft tokens, per item.
_Inputs = tuple[PreparedBatch, list[list[int]], list[list[int]], list[list[int]]]


class Scheduler:
    def __init__(
        self,
        transcriber: Transcriber,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        admission_utilization: float,
        options: TranscribeOptions,
        final_options: TranscribeOptions,
    ) -> None:
        self.transcriber = transcriber
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.admission_utilization = admission_utilization
        self.options, self.final_options = options, final_options
        self.stats = SchedulerStats()
        self.sessions: dict[str, Session] = {}
        self.prefetch = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        # Test and chaos seam: called on the model thread with the batch's stream ids.
        self.fault_hook: Callable[[list[str]], None] | None = None
        self.on_batch: Callable[[int], None] | None = None  # metrics: streams per batch
        self._wake = asyncio.Event()
        self._measured = asyncio.Event()  # set when the first batch's cost is known
        self._in_flight: set[str] = set()
        self._model_free = asyncio.Semaphore(1)
        self._task: asyncio.Task | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.prefetch.shutdown(wait=False, cancel_futures=True)
        self.model_thread.shutdown(wait=False, cancel_futures=True)

    # ---- streams ---------------------------------------------------------------------------
    async def first_measurement(self) -> None:
        """On a fresh server whose first batch is on the model, wait for that batch's cost
        (at most FIRST_MEASUREMENT_WAIT_S) so that `admit` decides on a measurement."""
        if not self.stats.cost_per_step_s and self._in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._measured.wait(), FIRST_MEASUREMENT_WAIT_S)

    def admit(self, budget_s: float) -> None:
        """Refuse a new stream (AdmissionError) when the measured cost says budgets would break."""
        reason = self.capacity_error(budget_s)
        if reason:
            raise AdmissionError(reason)

    def capacity_error(self, budget_s: float) -> str | None:
        """Why one more stream with this budget would not fit, or None when it would.

        All streams share one batched decode cycle, whose length is projected as the smoothed
        model time per stream-step times the number of streams (conservative: batching makes
        the real cost per stream lower). A word waits for the next cycle and then for its
        compute, so the cycle must fit in half of the tightest latency budget, scaled by
        `admission_utilization`."""
        cost = self.stats.cost_per_step_s
        if not cost or not self.sessions:
            return None
        streams = len(self.sessions) + 1
        cycle = cost * streams
        tightest = min([budget_s] + [s.budget_s() for s in self.sessions.values()])
        allowed = self.admission_utilization * tightest / 2
        if cycle <= allowed:
            return None
        return (
            f"server at capacity: {streams} streams would need a {cycle * 1000:.0f} ms "
            f"decode cycle, the tightest latency budget allows {allowed * 1000:.0f} ms; "
            "retry later or on another replica"
        )

    def register(self, session: Session) -> None:
        self.sessions[session.stream_id] = session

    def unregister(self, session: Session) -> None:
        self.sessions.pop(session.stream_id, None)

    def notify(self) -> None:
        """A stream may have work: wake the batching loop."""
        self._wake.set()

    def run_prefetch(self, fn, *args):
        """Run ingest work on the prefetch thread (ordered per caller)."""
        return asyncio.get_running_loop().run_in_executor(self.prefetch, fn, *args)

    # ---- the loop --------------------------------------------------------------------------
    def _ready(self) -> list[tuple[float, Session, Job]]:
        ready = []
        for session in self.sessions.values():
            if session.stream_id in self._in_flight:
                continue
            job = session.next_job()
            if job is not None:
                ready.append((session.deadline(), session, job))
        ready.sort(key=lambda item: item[0])
        return ready

    async def _collect(self) -> list[tuple[float, Session, Job]]:
        while True:
            ready = self._ready()
            if ready:
                break
            self._wake.clear()
            await self._wake.wait()
        if len(ready) < self.max_batch_size and self.max_wait_s > 0:
            await asyncio.sleep(self.max_wait_s)  # let concurrent streams join this batch
            ready = self._ready()
        # A final decoded ahead of its endpoint only fills time the model would idle; with
        # other work waiting, a stream in a pause gets its plain interim instead.
        needed = [item for item in ready if not item[2].ahead]
        if needed and len(needed) < len(ready):
            for deadline, session, job in ready:
                if job.ahead and (plain := session.next_job(ahead=False)) is not None:
                    needed.append((deadline, session, plain))
            ready = sorted(needed, key=lambda item: item[0])
        # A final runs alone: it encodes the full 30 s window with the exact (slower) kernels,
        # and batching finals saves nothing (4 finals cost 4x one). Interims riding with it
        # would pay for both, and every other stream would wait for the whole batch.
        if ready and ready[0][2].final:
            return ready[:1]
        interims = [item for item in ready if not item[2].final]
        if interims and len(interims) < self.max_batch_size:
            interims += self._joining({session.stream_id for _, session, _ in ready})
        return interims[: self.max_batch_size]

    def _joining(self, taken: set[str]) -> list[tuple[float, Session, Job]]:
        """Interims of other streams that are far enough into their step to join a batch
        (stream.JOIN_STEP)."""
        joining = []
        for session in self.sessions.values():
            if session.stream_id in taken or session.stream_id in self._in_flight:
                continue
            job = session.next_job(ahead=False, join=True)
            if job is not None and not job.final:
                joining.append((session.deadline(), session, job))
        return joining

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            chosen = await self._collect()
            if not chosen:
                continue
            sessions = [s for _, s, _ in chosen]
            for session in sessions:
                self._in_flight.add(session.stream_id)
            planned = _Planned(
                sessions,
                [j for _, _, j in chosen],
                [torch.from_numpy(s.window(j)) for _, s, j in chosen],
                [j.prompt for _, _, j in chosen],
                BatchTiming(len(chosen), sum(job.final for _, _, job in chosen)),
                time.monotonic(),
            )
            try:
                prepared = await loop.run_in_executor(self.prefetch, self._prepare, planned)
            except Exception as exc:  # noqa: BLE001 - a bad batch must not stop the loop
                self._fail(planned, exc)
                continue
            await self._model_free.acquire()
            future = loop.run_in_executor(self.model_thread, self._run, planned, prepared)
            future.add_done_callback(lambda f, p=planned: self._finished(f, p))

    def _prepare(self, planned: _Planned) -> _Inputs:
        planned.timing.prep_start = time.monotonic()
        final = any(job.final for job in planned.jobs)
        prepared = self.transcriber.prepare(
            planned.audios, self.final_options if final else self.options
        )
        tokenizer = self.transcriber.tokenizer
        prompts = [tokenizer.encode(" " + p) if p else [] for p in planned.prompts]
        prefixes = [tokenizer.encode(" " + j.prefix) if j.prefix else [] for j in planned.jobs]
        drafts = [tokenizer.encode(" " + j.draft) if j.draft else [] for j in planned.jobs]
        planned.timing.prep_end = time.monotonic()
        return prepared, prompts, prefixes, drafts

    def _run(self, planned: _Planned, prepared: _Inputs):
        planned.timing.model_start = time.monotonic()
        if self.fault_hook is not None:
            self.fault_hook([s.stream_id for s in planned.sessions])
        options = self.final_options if any(j.final for j in planned.jobs) else self.options
        offsets = [job.start / SAMPLE_RATE for job in planned.jobs]
        batch, prompts, prefixes, drafts = prepared
        results = self.transcriber.run(
            batch, prompts, options, offsets, prefixes=prefixes, drafts=drafts
        )
        planned.timing.model_end = time.monotonic()
        return results

    def _finished(self, future: asyncio.Future, planned: _Planned) -> None:
        self._model_free.release()
        for session in planned.sessions:
            self._in_flight.discard(session.stream_id)
        try:
            results = future.result()
        except Exception as exc:  # noqa: BLE001
            self._fail(planned, exc)
        else:
            self._record(planned)
            timing = planned.timing
            info = {
                "queue_ms": (timing.model_start - planned.enqueued) * 1000,
                "compute_ms": (timing.model_end - timing.model_start) * 1000,
            }
            for session, job, result in zip(planned.sessions, planned.jobs, results):
                if session.stream_id in self.sessions:
                    session.deliver(job, result, info)
        self._wake.set()

    def _record(self, planned: _Planned) -> None:
        stats, timing = self.stats, planned.timing
        stats.batches += 1
        stats.steps += timing.size
        stats.max_batch = max(stats.max_batch, timing.size)
        stats.multi_stream_batches += timing.size >= 2
        stats.ahead_decodes += sum(job.ahead for job in planned.jobs)
        stats.timeline.append(timing)
        if self.on_batch is not None:
            self.on_batch(timing.size)
        if stats.batches % TRIM_EVERY == 0:
            trim_heap()
        per_step = (timing.model_end - timing.model_start) / timing.size
        if stats.cost_per_step_s == 0:
            stats.cost_per_step_s = per_step
            self._measured.set()
        else:
            stats.cost_per_step_s += COST_SMOOTHING * (per_step - stats.cost_per_step_s)

    def _fail(self, planned: _Planned, exc: BaseException) -> None:
        self.stats.failed_batches += 1
        out_of_memory = isinstance(exc, (MemoryError, torch.OutOfMemoryError))
        code = "RESOURCE_EXHAUSTED" if out_of_memory else "INTERNAL"
        what = "out of memory" if out_of_memory else "internal error"
        _LOGGER.error(
            "batch of %d failed: %r",
            len(planned.sessions),
            exc,
            extra={"streams": [s.stream_id for s in planned.sessions]},
        )
        for session in planned.sessions:
            self._in_flight.discard(session.stream_id)
            session.fail(code, f"recognition failed ({what} in a model batch); retry the stream")
        self._wake.set()
