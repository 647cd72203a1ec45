"""The Recognizer service: translates the wire contract to the engine and back.

Each streaming call runs two coroutines: a reader that validates and ingests requests, and
the handler itself, which writes responses from the session's outbox. Every failure becomes a
precise status; nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc
import numpy as np
import torch

from streamstt.models.audio import SAMPLE_RATE, AudioDecodeError, decode_audio, resample
from streamstt.models.transcriber import TranscribeOptions, Transcriber
from streamstt.v1 import asr_pb2, asr_pb2_grpc

from . import validation
from .ingest import ingest
from .pcm import AudioFormatError, decode_chunk
from .scheduler import AdmissionError, Scheduler
from .session import Outbox, StatusEnd, StreamSession, duration
from .settings import ServerConfig
from .vad import SileroVad

_LOGGER = logging.getLogger("streamstt.server")
REPLICA_HEADER = "streamstt-replica"
# Trailer on refusals that happened before any audio was processed (draining, max_streams,
# capacity): the value is the reason; a client may start the stream again on another replica.
RETRY_HEADER = "streamstt-retryable"
_SLOW_READER = (
    "the client stopped reading responses for more than {:g} s (outbox_timeout_s); stream aborted"
)


def _nothing() -> None:
    pass


class RecognizerServicer(asr_pb2_grpc.RecognizerServicer):
    def __init__(
        self,
        config: ServerConfig,
        transcriber: Transcriber,
        scheduler: Scheduler,
        vad: SileroVad,
        metrics=None,
    ) -> None:
        self.config = config
        self.transcriber = transcriber
        self.scheduler = scheduler
        self.vad = vad
        self.metrics = metrics
        self.draining = False
        self.active: dict[str, StreamSession] = {}
        self.model_names = {transcriber.name, "default", ""}
        # Sent to every streaming caller in the `streamstt-replica` header, so a client (and
        # an operator reading its logs) knows which replica served a stream.
        self.replica = ""
        self.on_change = _nothing  # called when a stream starts or ends (readiness)

    def refusal_reason(self) -> str | None:
        """Why a new stream with the default budget would be refused now, or None."""
        if self.draining:
            return "draining"
        if len(self.active) >= self.config.max_streams:
            return f"max_streams={self.config.max_streams} reached"
        return self.scheduler.capacity_error(self.config.latency_budget_ms / 1000)

    # ---- StreamingRecognize ------------------------------------------------------------
    async def StreamingRecognize(self, request_iterator, context) -> None:  # noqa: N802
        if self.draining:
            await self._reject(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "server is shutting down; retry on another replica",
                "draining",
            )
        requests = request_iterator.__aiter__()
        first = await self._next(requests, context)
        if first is None:
            return  # an empty stream ends OK with no results
        if first.WhichOneof("streaming_request") != "streaming_config":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first message must carry streaming_config; audio came first",
            )
        try:
            settings = validation.streaming_settings(
                first.streaming_config, self.config, self.model_names
            )
        except validation.InvalidRequest as exc:
            await context.abort(exc.code, exc.message)
        await self.scheduler.first_measurement()  # no await between the checks and register
        if len(self.active) >= self.config.max_streams:
            await self._reject(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many concurrent streams (max_streams={self.config.max_streams})",
                "max_streams",
            )
        try:
            self.scheduler.admit(settings.latency_budget_ms / 1000)
        except AdmissionError as exc:
            await self._reject(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), "capacity")
        session = StreamSession(
            settings,
            Outbox(self.config.outbox_size, self.config.outbox_timeout_s),
            self.scheduler.notify,
            int(self.config.max_stream_seconds * SAMPLE_RATE),
            on_metrics=self.metrics.on_step if self.metrics else None,
        )
        phrases = [p for c in first.streaming_config.config.speech_contexts for p in c.phrases]
        session.state.history = ", ".join(phrases)
        self.active[session.stream_id] = session
        self.scheduler.register(session)
        self.on_change()
        if self.metrics:
            self.metrics.stream_started()
        _LOGGER.info(
            "stream started",
            extra={
                "stream": session.stream_id,
                "peer": context.peer(),
                "rate": settings.sample_rate,
            },
        )
        reader = asyncio.create_task(self._read(session, requests, context))
        # None until the stream ends on its own terms: a client that goes away is metered CANCELLED.
        code: grpc.StatusCode | None = None
        message = ""
        try:
            if self.replica:
                await context.send_initial_metadata(((REPLICA_HEADER, self.replica),))
            while True:
                item = await session.outbox.get()
                if isinstance(item, StatusEnd):
                    code, message = item.code, item.message
                    break
                try:
                    # A client that stops reading blocks this write (HTTP/2 flow control);
                    # past the outbox timeout its stream is aborted, others are unaffected.
                    await asyncio.wait_for(context.write(item), self.config.outbox_timeout_s)
                except asyncio.TimeoutError:
                    code = grpc.StatusCode.RESOURCE_EXHAUSTED
                    message = _SLOW_READER.format(self.config.outbox_timeout_s)
                    break
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            session.ended = True
            self.scheduler.unregister(session)
            self.active.pop(session.stream_id, None)
            self.on_change()
            if self.metrics:
                self.metrics.stream_ended(
                    code.name if code else "CANCELLED", session.state.received / SAMPLE_RATE
                )
            _LOGGER.info(
                "stream ended",
                extra={
                    "stream": session.stream_id,
                    "audio_s": session.state.received / SAMPLE_RATE,
                    "utterances": session.state.utterance_index,
                },
            )
        # Aborting only after the clean-up means a client that sees the status also sees the
        # stream gone from the server's counts (active streams, admission, metrics).
        if code is not None and code != grpc.StatusCode.OK:
            await context.abort(code, message)

    async def _reject(self, context, code: grpc.StatusCode, message: str, reason: str) -> None:
        """Refuse a stream before any audio was processed; the trailer tells clients that
        starting the same stream elsewhere (or later) is safe."""
        if self.metrics:
            self.metrics.rejected(reason)
        await context.abort(code, message, trailing_metadata=((RETRY_HEADER, reason),))

    async def _next(self, requests, context):
        """The next request, None at the end; the idle limit ends a silent client."""
        try:
            return await asyncio.wait_for(requests.__anext__(), self.config.idle_timeout_s)
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no request for {self.config.idle_timeout_s:g} s (idle_timeout_s); stream closed",
            )

    async def _read(self, session: StreamSession, requests, context) -> None:
        try:
            await self._read_loop(session, requests)
        except validation.InvalidRequest as exc:
            session.fail(exc.code.name, exc.message)
        except AudioFormatError as exc:
            session.fail("INVALID_ARGUMENT", str(exc))
        except asyncio.TimeoutError:
            session.fail(
                "DEADLINE_EXCEEDED",
                f"no audio for {self.config.idle_timeout_s:g} s (idle_timeout_s); stream closed",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the client went away or broke the stream
            _LOGGER.info("stream reader ended: %r", exc, extra={"stream": session.stream_id})
            session.fail("CANCELLED", "the request stream failed")

    async def _read_loop(self, session: StreamSession, requests) -> None:
        while True:
            try:
                request = await asyncio.wait_for(requests.__anext__(), self.config.idle_timeout_s)
            except StopAsyncIteration:
                break
            if request.WhichOneof("streaming_request") == "streaming_config":
                raise validation.InvalidRequest(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "streaming_config may only be sent once, in the first message",
                )
            if session.ended or session.state.stopped:
                continue  # single_utterance ended: later audio is ignored, as documented
            data = request.audio_content
            if not data:
                continue
            result = await self.scheduler.run_prefetch(ingest, session.ingest_state, self.vad, data)
            session.accept(result)
            if session.over_length():
                await self._flush(session)
                session.half_close(
                    StatusEnd(
                        grpc.StatusCode.OUT_OF_RANGE,
                        f"stream exceeded max_stream_seconds={self.config.max_stream_seconds:g}; "
                        "finals so far were delivered",
                    )
                )
                return
        await self._flush(session)
        session.half_close()

    async def _flush(self, session: StreamSession) -> None:
        result = await self.scheduler.run_prefetch(
            ingest, session.ingest_state, self.vad, b"", True
        )
        session.accept(result)

    # ---- Recognize ---------------------------------------------------------------------
    async def Recognize(self, request, context):  # noqa: N802
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
        config = request.config
        try:
            channels = validation.check_common(config, self.config, self.model_names)
            audio = self._decode_file(request.audio_content, config, channels)
        except validation.InvalidRequest as exc:
            await context.abort(exc.code, exc.message)
        except (AudioFormatError, AudioDecodeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        seconds = audio.shape[-1] / SAMPLE_RATE
        if seconds > self.config.max_recognize_seconds:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"audio is {seconds:.0f} s; Recognize takes at most "
                f"{self.config.max_recognize_seconds:g} s "
                "(use StreamingRecognize)",
            )
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        transcript = await loop.run_in_executor(
            self.scheduler.model_thread, self.transcriber.transcribe, audio, TranscribeOptions()
        )
        _LOGGER.info(
            "recognize done", extra={"audio_s": seconds, "compute_s": time.monotonic() - started}
        )
        response = asr_pb2.RecognizeResponse(total_audio=duration(seconds))
        for index, segment in enumerate(transcript.segments):
            words = [
                w for w in transcript.words if segment.start - 0.05 <= w.start < segment.end + 0.05
            ]
            alternative = asr_pb2.SpeechRecognitionAlternative(
                transcript=segment.text,
                confidence=float(np.mean([w.probability for w in words])) if words else 0.0,
            )
            if config.enable_word_time_offsets or config.enable_word_confidence:
                for w in words:
                    info = asr_pb2.WordInfo(word=w.word.strip())
                    if config.enable_word_time_offsets:
                        info.start_time.CopyFrom(duration(w.start))
                        info.end_time.CopyFrom(duration(w.end))
                    if config.enable_word_confidence:
                        info.confidence = w.probability
                    alternative.words.append(info)
            response.results.append(
                asr_pb2.SpeechRecognitionResult(
                    alternatives=[alternative],
                    result_start_time=duration(segment.start),
                    result_end_time=duration(segment.end),
                    utterance_index=index,
                )
            )
        return response

    def _decode_file(self, data: bytes, config, channels: int) -> torch.Tensor:
        if config.encoding in validation.RAW_ENCODINGS:
            validation.check_rate(config.sample_rate_hertz)
            samples = decode_chunk(data, config.encoding, channels)
            return resample(samples, config.sample_rate_hertz)
        if not data:
            raise validation.InvalidRequest(
                grpc.StatusCode.INVALID_ARGUMENT, "audio_content is empty"
            )
        return decode_audio(bytes(data))

    # ---- ListModels --------------------------------------------------------------------
    async def ListModels(self, request, context):  # noqa: N802
        plan = self.transcriber.plan
        return asr_pb2.ListModelsResponse(
            models=[
                asr_pb2.ModelInfo(
                    name=self.transcriber.name,
                    language_codes=["en", "en-US"],
                    precision=plan.describe(),
                    device=plan.device,
                    is_default=True,
                    sample_rate_hertz=SAMPLE_RATE,
                )
            ]
        )
