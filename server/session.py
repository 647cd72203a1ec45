"""One streaming call on the server: its state, its ingest, its outbox of responses.

The session turns engine events (speech events, interim hypotheses, finals, failures) into
`StreamingRecognizeResponse` messages. All its methods run on the event loop thread; the only
work done elsewhere is ingest (prefetch thread) and decoding (model thread).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf.duration_pb2 import Duration

from streamstt.models.audio import SAMPLE_RATE
from streamstt.models.transcriber import Transcript
from streamstt.v1 import asr_pb2

from . import stream as engine
from .ingest import IngestResult, IngestState, StreamingResampler
from .settings import StreamSettings

Response = asr_pb2.StreamingRecognizeResponse
_IDS = itertools.count(1)
ARRIVALS_KEPT = 4096  # chunk arrival times remembered per stream (~7 min of 100 ms chunks)


@dataclass(frozen=True)
class StatusEnd:
    """The outbox's last item: end the call with this status."""

    code: grpc.StatusCode
    message: str


def duration(seconds: float) -> Duration:
    value = Duration()
    value.FromNanoseconds(int(round(max(0.0, seconds) * 1e9)))
    return value


def word_info(word: engine.TimedWord, settings: StreamSettings) -> asr_pb2.WordInfo:
    info = asr_pb2.WordInfo(word=word.word)
    if settings.word_times:
        info.start_time.CopyFrom(duration(word.start))
        info.end_time.CopyFrom(duration(word.end))
    if settings.word_confidence:
        info.confidence = word.confidence
    return info


def timed_words(transcript: Transcript) -> list[engine.TimedWord]:
    return [
        engine.TimedWord(w.word.strip(), w.start, w.end, w.probability)
        for w in transcript.words
        if w.word.strip()
    ]


class Outbox:
    """Responses waiting for the client. Interim responses are superseded by newer ones, so a
    slow reader loses stale interims (counted), never finals or events; a reader that stays
    behind past `timeout_s` has its stream aborted."""

    def __init__(self, size: int, timeout_s: float) -> None:
        self.size, self.timeout_s = size, timeout_s
        self.items: deque[Response | StatusEnd] = deque()
        self.event = asyncio.Event()
        self.full_since: float | None = None
        self.dropped_interims = 0

    def put(self, item: Response | StatusEnd, droppable: bool = False) -> bool:
        """Queue an item; False when the reader has been stuck for too long."""
        if len(self.items) >= self.size:
            now = time.monotonic()
            self.full_since = self.full_since or now
            if droppable:
                self.dropped_interims += 1
                return now - self.full_since <= self.timeout_s
        else:
            self.full_since = None
        self.items.append(item)
        self.event.set()
        return self.full_since is None or time.monotonic() - self.full_since <= self.timeout_s

    async def get(self) -> Response | StatusEnd:
        while not self.items:
            self.event.clear()
            await self.event.wait()
        item = self.items.popleft()
        if len(self.items) < self.size:
            self.full_since = None
        return item


class StreamSession:
    def __init__(
        self, settings: StreamSettings, outbox: Outbox, notify, max_samples: int, on_metrics=None
    ) -> None:
        self.stream_id = f"s{next(_IDS)}"
        self.settings = settings
        self.state = engine.StreamState(settings)
        self.ingest_state = IngestState(
            settings.encoding, settings.channels, StreamingResampler(settings.sample_rate)
        )
        self.outbox = outbox
        self._notify = notify
        self.max_samples = max_samples
        self.pending_since: float | None = None  # arrival of the oldest undecoded audio
        self.last_arrival = time.monotonic()  # arrival of the newest audio
        # (stream sample at the end of a chunk, arrival time): for word emission latency
        self.arrivals: deque[tuple[int, float]] = deque(maxlen=ARRIVALS_KEPT)
        self.emitted_until = 0.0  # stream seconds: end of the newest word already sent
        self.ended = False
        self.end_status: StatusEnd | None = None  # sent once all finals are out
        self.on_metrics = on_metrics
        self.started = time.monotonic()
        self._ahead_info: dict[str, float] = {}

    # ---- scheduler interface -----------------------------------------------------------
    def next_job(self, ahead: bool = True, join: bool = False) -> engine.Job | None:
        return None if self.ended else engine.next_job(self.state, ahead, join)

    def window(self, job: engine.Job) -> np.ndarray:
        return engine.window_audio(self.state, job)

    def deadline(self) -> float:
        arrived = self.pending_since or time.monotonic()
        return arrived + self.settings.latency_budget_ms / 1000

    def budget_s(self) -> float:
        return self.settings.latency_budget_ms / 1000

    def deliver(self, job: engine.Job, transcript: Transcript, info: dict[str, float]) -> None:
        if self.ended:
            return
        words = engine.without_context(job, timed_words(transcript))
        self.pending_since = (
            None if self.state.processed >= self.state.received else time.monotonic()
        )
        if job.final and not job.ahead:
            self._finalise(job, words, info)
        else:
            engine.apply_interim(self.state, job, words)
            self._send(self._interim_response(job, info), droppable=True)
            if self.on_metrics:
                self.on_metrics(self, job, words, info)
        if job.ahead:
            engine.keep_ahead(self.state, job, words)
            self._ahead_info = info
            self._use_ahead()  # the endpoint may have come while it decoded
        self._maybe_finish()
        self._notify()

    def _finalise(self, job: engine.Job, words: list, info: dict[str, float]) -> None:
        result = engine.apply_final(self.state, job, words)
        if result is not None:
            self._send(self._final_response(result, info))
        if self.on_metrics:
            self.on_metrics(self, job, words, info)

    def _use_ahead(self) -> None:
        """Send the pending endpoint's final at once if it was decoded ahead."""
        taken = engine.take_ahead(self.state)
        if taken is not None:
            self._finalise(*taken, self._ahead_info)

    def new_word_emissions(self, words: list[engine.TimedWord]) -> list[float]:
        """Seconds from the arrival of each newly shown word's end audio until now."""
        now, delays = time.monotonic(), []
        for word in words:
            if word.end <= self.emitted_until:
                continue
            end_sample = int(word.end * SAMPLE_RATE)
            arrived = next((t for sample, t in self.arrivals if sample >= end_sample), None)
            if arrived is not None:
                delays.append(now - arrived)
            self.emitted_until = word.end
        return delays

    def fail(self, code: str, message: str) -> None:
        self._end(StatusEnd(getattr(grpc.StatusCode, code), message))

    # ---- ingest side -------------------------------------------------------------------
    def accept(self, result: IngestResult) -> None:
        """Fold ingested audio into the state; emit speech events."""
        if self.ended:
            return
        if len(result.audio):
            self.last_arrival = time.monotonic()
            self.arrivals.append((self.state.received + len(result.audio), self.last_arrival))
            if self.pending_since is None:
                self.pending_since = self.last_arrival
        events = engine.on_audio(self.state, result.audio, result.speech_probs)
        for event in events:
            self._speech_event(event)
        self._use_ahead()
        self._maybe_finish()
        self._notify()

    def half_close(self, status: StatusEnd | None = None) -> None:
        """No more audio: finalise what is open, then end with OK (or `status`)."""
        for event in engine.close(self.state):
            self._speech_event(event)
        self.end_status = status
        self._maybe_finish()
        self._notify()

    def over_length(self) -> bool:
        return self.state.received >= self.max_samples

    # ---- responses ---------------------------------------------------------------------
    def _processing(self, info: dict[str, float] | None) -> asr_pb2.ProcessingInfo:
        processing = asr_pb2.ProcessingInfo(
            audio_received=duration(self.state.received / SAMPLE_RATE),
            audio_processed=duration(self.state.processed / SAMPLE_RATE),
        )
        if info:
            processing.queue_ms, processing.compute_ms = info["queue_ms"], info["compute_ms"]
        return processing

    def _speech_event(self, event: engine.SpeechEvent) -> None:
        seconds = event.sample / SAMPLE_RATE
        kind = Response.SPEECH_ACTIVITY_BEGIN if event.begin else Response.SPEECH_ACTIVITY_END
        if self.settings.vad_events:
            self._send(
                Response(
                    speech_event_type=kind,
                    speech_event_time=duration(seconds),
                    processing=self._processing(None),
                )
            )
        if not event.begin and self.settings.single_utterance:
            self._send(
                Response(
                    speech_event_type=Response.END_OF_SINGLE_UTTERANCE,
                    speech_event_time=duration(seconds),
                    processing=self._processing(None),
                )
            )

    def _interim_response(self, job: engine.Job, info: dict[str, float]) -> Response:
        committed, tentative = engine.interim_view(self.state)
        response = Response(processing=self._processing(info))
        end = duration(job.end / SAMPLE_RATE)
        for words, stability in ((committed, engine.STABLE), (tentative, engine.TENTATIVE)):
            if not words:
                continue
            alternative = asr_pb2.SpeechRecognitionAlternative(
                transcript=" ".join(w.word for w in words),
                words=[word_info(w, self.settings) for w in words]
                if self.settings.word_times or self.settings.word_confidence
                else [],
            )
            response.results.append(
                asr_pb2.StreamingRecognitionResult(
                    alternatives=[alternative],
                    is_final=False,
                    stability=stability,
                    result_start_time=duration(words[0].start),
                    result_end_time=end,
                    utterance_index=self.state.utterance_index,
                )
            )
        return response

    def _final_response(self, result: engine.FinalResult, info: dict[str, float]) -> Response:
        alternative = asr_pb2.SpeechRecognitionAlternative(
            transcript=result.transcript,
            confidence=result.confidence,
            words=[word_info(w, self.settings) for w in result.words]
            if self.settings.word_times or self.settings.word_confidence
            else [],
        )
        final = asr_pb2.StreamingRecognitionResult(
            alternatives=[alternative],
            is_final=True,
            stability=0.0,
            result_start_time=duration(result.start),
            result_end_time=duration(result.end),
            utterance_index=result.utterance_index,
        )
        return Response(results=[final], processing=self._processing(info))

    def _send(self, response: Response, droppable: bool = False) -> None:
        if not self.outbox.put(response, droppable):
            self._end(
                StatusEnd(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the client stopped reading responses for more than "
                    f"{self.outbox.timeout_s:g} s (outbox_timeout_s); stream aborted",
                ),
                force=True,
            )

    def _maybe_finish(self) -> None:
        idle = not self.state.endpoints and not self.state.in_speech
        if (self.state.closed or self.state.stopped) and idle:
            self._end(self.end_status)

    def _end(self, status: StatusEnd | None, force: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        if force:
            self.outbox.items.clear()
        self.outbox.items.append(status or StatusEnd(grpc.StatusCode.OK, ""))
        self.outbox.event.set()
