"""StreamSession: the single owner of one streaming call's state.

It takes bytes (`feed`), runs ingest on the prefetch thread, folds the result into its state
with the pure steps (steps.py), answers the scheduler (`next_job`, `request`, `deliver`) and
emits typed events (events.py) into its outbox through one exit, `_emit`. Everything but
ingest runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from streamstt.models.audio import SAMPLE_RATE
from streamstt.models.transcriber import Request, Transcript

from ..settings import StreamSettings
from . import agreement, events, planning, steps
from .buffer import AudioBuffer
from .events import End, Event, Final
from .ingest import IngestResult, IngestState, StreamingResampler, ingest
from .job import Job
from .outbox import Outbox
from .pcm import bytes_per_frame
from .state import StreamState
from .vad import SileroVad

_IDS = itertools.count(1)
# A big message is ingested (decoded, resampled, VAD-scored) this much audio at a time, so
# the prefetch thread that every batch needs is never held long by one stream.
INGEST_PIECE_S = 1.0
# A stream whose decodes are this far ahead of real time is ahead (a real-time client's
# chunks and bursts after a network stall stay well inside it).
AHEAD_SLACK_S = 2.0
# A stream whose audio once came this far ahead of real time is a file sent at speed, not a
# live source (whose lead is at most what it buffered before the call opened): its work
# waits for the live streams for the rest of its life. Held by flow control, such a sender
# falls behind real time while it waits, and would then compete like one more live stream.
BULK_LEAD_S = 10.0


@dataclass(frozen=True)
class Timing:
    """What a decode cost: its wait for the model, and the model's time."""

    queue_ms: float
    compute_ms: float


class StreamSession:
    background = False  # a live stream (server.scheduler._eligible)

    def __init__(
        self,
        settings: StreamSettings,
        outbox: Outbox,
        *,
        prefetch: Callable,
        vad: SileroVad,
        notify: Callable[[], None],
        max_samples: int,
        phrases: str = "",
        on_event: Callable[[Event], None] | None = None,
        opened: float | None = None,
        hotwords: tuple[tuple[str, float], ...] = (),
    ) -> None:
        self.stream_id = f"s{next(_IDS)}"
        self.settings = settings
        self.outbox = outbox
        self.state = StreamState(settings, history=phrases)
        self._hotwords = hotwords  # boosted phrases: every decode is biased toward them
        self.ended = False
        self._audio = AudioBuffer()
        self._ingest = IngestState(
            settings.encoding, settings.channels, StreamingResampler(settings.sample_rate)
        )
        self._prefetch, self._vad, self._notify = prefetch, vad, notify
        self._max_samples = max_samples
        self._on_event = on_event
        self._pending_since: float | None = None  # arrival of the oldest undecoded audio
        # when the call opened: real time for its audio starts here (a wait in admission
        # before its first audio is read must not make a real-time client look ahead)
        self._opened = time.monotonic() if opened is None else opened
        self._bulk = False  # sent faster than real time by BULK_LEAD_S at some point
        self._final_timing: Timing | None = None  # of the decode behind state.decoded
        self._end_status: End | None = None  # sent once all finals are out
        # set whenever decoding may have shrunk the backlog (the servicer's flow control)
        self.room = asyncio.Event()
        frame = bytes_per_frame(settings.encoding, settings.channels)
        self._piece = int(INGEST_PIECE_S * settings.sample_rate) * frame

    # ---- the client's side ---------------------------------------------------------------
    async def feed(self, data: bytes) -> bool:
        """One chunk of audio bytes. False when the stream takes no more audio: its length
        limit was reached (it ends with OUT_OF_RANGE after its finals) or it is over."""
        for start in range(0, len(data), self._piece):
            if self.ended or self.state.speech.finished or self.state.closed:
                return not self.ended  # single_utterance is over: later audio is ignored
            piece = data[start : start + self._piece]
            self._fold(await self._prefetch(ingest, self._ingest, self._vad, piece))
        if self.state.received < self._max_samples:
            return True
        seconds = self._max_samples / SAMPLE_RATE
        message = f"stream exceeded max_stream_seconds={seconds:g}; finals so far were delivered"
        await self.finish(End("OUT_OF_RANGE", message))
        return False

    async def finish(self, status: End | None = None, more_audio: bool = False) -> None:
        """No more audio: flush the resampler, finalise what is open, then end with OK (or
        `status`) once the finals are out. `more_audio`: the client asked for the open
        utterance's final now (Finalize); it ends at the audio received so far, its final
        goes out before any result of later audio (finals are decoded before interims and
        leave in order), and the stream goes on."""
        if more_audio and (self.ended or self.state.closed or self.state.speech.finished):
            return
        if not self.ended and not more_audio:
            self._fold(await self._prefetch(ingest, self._ingest, self._vad, b"", True))
        self.state, found = steps.close(self.state, half_close=not more_audio)
        for event in events.speech(found, self.settings, self.state):
            self._emit(event)
        if not more_audio:
            self._end_status = status
        self._advance()

    def end(self, code: str, message: str = "", discard: bool = False) -> None:
        """End the stream now with this status (a grpc.StatusCode name); `discard`: drop the
        events the client has not read yet."""
        if not self.ended:
            self.ended = True
            self.room.set()
            self.outbox.end(End(code, message), discard)

    # ---- the scheduler's side ------------------------------------------------------------
    def next_job(self, allow_early: bool = True, join: bool = False) -> Job | None:
        return None if self.ended else planning.next_job(self.state, allow_early, join)

    def request(self, job: Job) -> Request:
        request = job.request(self._audio.window(job.start, job.end))
        return replace(request, hotwords=self._hotwords) if self._hotwords else request

    def ahead(self) -> bool:
        """Its next decode may wait (server.scheduler._eligible): its audio came faster than
        real time and the decodes have caught up with real time, or it is a file sent at
        speed (BULK_LEAD_S)."""
        return self._bulk or _real_time(self._opened, self.state) > time.monotonic() + AHEAD_SLACK_S

    def deadline(self) -> float:
        arrived = self._pending_since or time.monotonic()
        # Audio sent faster than real time counts as arriving when real time would have
        # brought it: a full-speed sender does not jump ahead of the live streams.
        arrived = max(arrived, _real_time(self._opened, self.state))
        return arrived + self.settings.latency_budget_ms / 1000

    def deliver(self, job: Job, transcript: Transcript, timing: Timing) -> None:
        if self.ended:
            return
        words = planning.without_context(job, transcript.words)
        done = self.state.processed >= self.state.received
        self._pending_since = None if done else time.monotonic()
        if not job.final or job.early:  # an early final's words serve as an interim too
            trusted = agreement.trustworthy(transcript)
            self.state = steps.on_interim(self.state, job, words, trusted)
            interim = events.interim(self.state, job.end, timing.queue_ms, timing.compute_ms)
            self._emit(interim, droppable=True)
        if job.final:
            self.state = steps.keep_final(self.state, job, words)
            self._final_timing = timing
        self._advance()

    # ---- inside ----------------------------------------------------------------------------
    def _fold(self, result: IngestResult) -> None:
        if self.ended:
            return
        if len(result.audio) and self._pending_since is None:
            self._pending_since = time.monotonic()
        before = self.state.received
        self.state, found = steps.on_audio(self.state, len(result.audio), result.speech_probs)
        if self.state.received > before:
            self._audio.append(result.audio)
            lead = self._opened + self.state.received / SAMPLE_RATE - time.monotonic()
            self._bulk = self._bulk or lead > BULK_LEAD_S
        self._audio.trim(self.state.audio_start)
        for event in events.speech(found, self.settings, self.state):
            self._emit(event)
        self._advance()

    def _advance(self) -> None:
        """Send the next final if it is decoded (the one place finals leave); end the stream
        once it has nothing more to say; wake the scheduler."""
        self.state, final, closed = steps.take_final(self.state)
        self._audio.trim(self.state.audio_start)
        if final is not None:  # decoded: keep_final set _final_timing
            cost = self._final_timing
            self._emit(Final(final, events.progress(self.state, cost.queue_ms, cost.compute_ms)))
        if closed:
            self._final_timing = None
        if self.state.done:
            status = self._end_status or End("OK")
            self.end(status.code, status.message)
        self.room.set()
        self._notify()

    def _emit(self, event: Event, droppable: bool = False) -> None:
        if self._on_event is not None:
            self._on_event(event)
        if not self.outbox.put(event, droppable):
            seconds = self.outbox.timeout_s
            message = (
                f"the client stopped reading responses for more than {seconds:g} s "
                "(outbox_timeout_s); stream aborted"
            )
            self.end("RESOURCE_EXHAUSTED", message, discard=True)


def _real_time(opened: float, state: StreamState) -> float:
    """When real-time audio would have brought the newest decoded sample (monotonic s)."""
    return opened + state.processed / SAMPLE_RATE
