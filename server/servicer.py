"""The Recognizer service: translates the wire contract to the engine and back.

Each RPC validates, admits, feeds and pumps: a streaming call runs a reader coroutine that
feeds audio into its StreamSession, while the handler writes the session's events as
responses (server/responses.py). Every failure becomes a precise status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

import grpc

from streamstt.models.audio import SAMPLE_RATE
from streamstt.models.memory import map_large_buffers
from streamstt.models.transcriber import Transcriber
from streamstt.v1 import asr_pb2, asr_pb2_grpc

from . import recognize_rpc, refusal, responses, validation
from .admission import Admission, AdmissionError
from .metrics import StreamMeter
from .settings import ServerConfig, StreamSettings
from .stream import planning
from .stream.channels import ChannelGroup, OnChannel
from .stream.events import End
from .stream.outbox import Outbox
from .stream.pcm import AudioFormatError
from .stream.session import StreamSession
from .stream.vad import SileroVad
from .workers import Workers

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
        workers: Workers,
        admission: Admission,
        vad: SileroVad,
        metrics=None,
    ) -> None:
        self.config = config
        self.transcriber = transcriber
        self.workers = workers
        self.admission = admission
        self.vad = vad
        self.metrics = metrics
        self.draining = False
        self.broken: str | None = None  # why this replica can serve no one (set by the app)
        self.active: dict[str, StreamSession] = admission.streams  # the one registry
        self.model_names = {transcriber.name, "default", ""}
        # buffers of a Recognize call are mapped on their own: models.memory
        self.recognize_slots = recognize_rpc.Slots(config.max_recognize_calls, map_large_buffers)
        # Sent to every streaming caller in the `streamstt-replica` header, so a client (and
        # an operator reading its logs) knows which replica served a stream.
        self.replica = ""
        self._readers: dict[str, asyncio.Task] = {}  # each live stream's request reader
        self.notify = _nothing  # wakes the scheduler (set by the app)
        self.on_change = _nothing  # called when a stream starts or ends (readiness)

    def refusal_reason(self) -> str | None:
        """Why a new stream with the default budget would be refused now, or None."""
        if self.broken:
            return f"broken: {self.broken}"
        if self.draining:
            return "draining"
        if len(self.active) >= self.config.max_streams:
            return f"max_streams={self.config.max_streams} reached"
        return self.admission.capacity_error(self.config.latency_budget_ms / 1000)

    async def finalise_all(self, message: str) -> None:
        """The end of the drain: stop reading every stream, decode what each has heard and
        end it with UNAVAILABLE after its finals; Recognize calls end UNAVAILABLE."""
        for stream_id, work in list(self.active.items()):
            reader = self._readers.pop(stream_id, None)
            if reader is not None:
                reader.cancel()
            if not isinstance(work, StreamSession):
                work.end("UNAVAILABLE", message)
            elif not work.state.closed:  # a half-closed stream is finishing on its own
                await work.finish(End("UNAVAILABLE", message))

    # ---- StreamingRecognize ----------------------------------------------------------------
    async def StreamingRecognize(self, request_iterator, context) -> None:  # noqa: N802
        context.add_done_callback(lambda _: self.workers.trim_soon())
        if self.draining or self.broken:
            await refusal.first_request(request_iterator)
            await _reject(
                self.metrics, context, grpc.StatusCode.UNAVAILABLE,
                _unavailable(self.broken), "broken" if self.broken else "draining",
            )  # fmt: skip
        requests = request_iterator.__aiter__()
        first = await _next_request(requests, context, self.config.idle_timeout_s)
        if first is None:
            return  # an empty stream ends OK with no results
        session, meter = await self._open(first, context)
        reader = asyncio.create_task(self._read(session, requests, meter))
        self._readers[session.stream_id] = reader
        end = None  # None until the stream ends on its own terms: else metered CANCELLED
        try:
            end = await self._pump(session, context)
        finally:
            self._readers.pop(session.stream_id, None)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._close(session, end)
        # Aborting only after the clean-up means a client that sees the status also sees the
        # stream gone from the server's counts (active streams, admission, metrics).
        if end is not None and end.code != "OK":
            await context.abort(getattr(grpc.StatusCode, end.code), end.message)

    async def _open(self, first, context) -> tuple[StreamSession, StreamMeter | None]:
        """Validate the config, admit the stream and register its session."""
        opened = time.monotonic()
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
        config = first.streaming_config.config
        # separate recognition per channel: a stream a channel, each counted
        count = settings.channels if config.enable_separate_recognition_per_channel else 1
        await self.admission.first_measurement()  # no await between the checks and register
        if len(self.active) + count > self.config.max_streams:
            message = f"too many concurrent streams (max_streams={self.config.max_streams})"
            await _reject(
                self.metrics, context, grpc.StatusCode.RESOURCE_EXHAUSTED, message, "max_streams"
            )
        try:
            self.admission.admit(settings.latency_budget_ms / 1000, count)
        except AdmissionError as exc:
            await _reject(
                self.metrics, context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), "capacity"
            )
        budget_s = settings.latency_budget_ms / 1000
        meter = self.metrics.stream_meter(budget_s) if self.metrics else None
        if count == 1:
            session = self._session(settings, config, meter, opened)
        else:
            mono = replace(settings, channels=1)
            channels = [self._session(mono, config, meter, opened) for _ in range(count)]
            session = ChannelGroup(channels, settings.encoding)
        for channel in _channels(session):
            self.active[channel.stream_id] = channel
        self.on_change()
        if self.metrics:
            self.metrics.stream_started()
        extra = {"stream": session.stream_id, "peer": context.peer(), "rate": settings.sample_rate}
        _LOGGER.info("stream started", extra=extra)
        return session, meter

    def _session(
        self, settings: StreamSettings, config, meter: StreamMeter | None, opened: float
    ) -> StreamSession:
        return StreamSession(
            settings,
            Outbox(self.config.outbox_size, self.config.outbox_timeout_s),
            prefetch=self.workers.prefetch,
            vad=self.vad,
            notify=self.notify,
            max_samples=int(self.config.max_stream_seconds * SAMPLE_RATE),
            phrases=validation.phrases(config),
            hotwords=validation.hotwords(config),
            on_event=meter.observe if meter else None,
            opened=opened,
        )

    async def _pump(self, session: StreamSession, context) -> End:
        """Write the session's events as responses until it ends; returns its status."""
        if self.replica:
            await context.send_initial_metadata(((REPLICA_HEADER, self.replica),))
        while True:
            event = await session.outbox.get()
            if isinstance(event, End):
                return event
            channel_tag = 0
            if isinstance(event, OnChannel):
                event, channel_tag = event.event, event.channel_tag
            try:
                # A client that stops reading blocks this write (HTTP/2 flow control);
                # past the outbox timeout its stream is aborted, others are unaffected.
                response = responses.streaming(event, session.settings, channel_tag)
                await asyncio.wait_for(context.write(response), self.config.outbox_timeout_s)
            except asyncio.TimeoutError:
                return End("RESOURCE_EXHAUSTED", _SLOW_READER.format(self.config.outbox_timeout_s))

    def _close(self, session: StreamSession, end: End | None) -> None:
        session.end("CANCELLED", "the call is over", discard=True)  # no more work for it
        for channel in _channels(session):
            self.active.pop(channel.stream_id, None)
        self.on_change()
        audio_s = session.state.received / SAMPLE_RATE
        if self.metrics:
            self.metrics.stream_ended(end.code if end else "CANCELLED", audio_s)
        extra = {
            "stream": session.stream_id,
            "audio_s": audio_s,
            "utterances": session.state.utterance_index,
        }
        _LOGGER.info("stream ended", extra=extra)

    async def _read(self, session: StreamSession, requests, meter: StreamMeter | None) -> None:
        """Feed each request's audio to the session; a bad request fails the stream."""
        try:
            await self._read_loop(session, requests, meter)
        except validation.InvalidRequest as exc:
            session.end(exc.code.name, exc.message)
        except AudioFormatError as exc:
            session.end("INVALID_ARGUMENT", str(exc))
        except asyncio.TimeoutError:  # what was heard is finalised before the status
            limit = self.config.idle_timeout_s
            message = f"no audio for {limit:g} s (idle_timeout_s); finals sent, stream closed"
            await session.finish(End("DEADLINE_EXCEEDED", message))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the client went away or broke the stream
            _LOGGER.info("stream reader ended: %r", exc, extra={"stream": session.stream_id})
            session.end("CANCELLED", "the request stream failed")

    async def _read_loop(self, session: StreamSession, requests, meter: StreamMeter | None) -> None:
        last_audio = time.monotonic()  # empty messages do not count: they would hold a slot
        while True:
            left = self.config.idle_timeout_s - (time.monotonic() - last_audio)
            try:
                request = await asyncio.wait_for(requests.__anext__(), max(left, 0.0))
            except StopAsyncIteration:
                break
            kind = request.WhichOneof("streaming_request")
            if kind == "streaming_config":
                raise validation.InvalidRequest(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "streaming_config may only be sent once, in the first message",
                )
            if kind == "finalize":
                await session.finish(more_audio=True)
                continue
            if not request.audio_content:
                continue
            arrived = time.monotonic()
            more = await session.feed(request.audio_content)
            if meter is not None:
                meter.arrived(session.state.received / SAMPLE_RATE, arrived)
            if not more:
                return
            await _wait_for_room(session, self.config.max_backlog_s)
            last_audio = time.monotonic()  # a wait for the model is not the client idling
        await session.finish()

    # ---- Recognize -------------------------------------------------------------------------
    async def Recognize(self, requests, context):  # noqa: N802
        """Served stream-unary (server/recognize_rpc.py): refused before its message is read."""
        context.add_done_callback(lambda _: self.workers.trim_soon())
        if self.draining or self.broken:
            await context.abort(grpc.StatusCode.UNAVAILABLE, _unavailable(self.broken))
        return await recognize_rpc.serve(self, self.recognize_slots, requests, context)

    # ---- ListModels ------------------------------------------------------------------------
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


async def _next_request(requests, context, idle_timeout_s: float):
    """The next request, None at the end; the idle limit ends a silent client."""
    try:
        return await asyncio.wait_for(requests.__anext__(), idle_timeout_s)
    except StopAsyncIteration:
        return None
    except asyncio.TimeoutError:
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"no request for {idle_timeout_s:g} s (idle_timeout_s); stream closed",
        )


def _channels(call: StreamSession | ChannelGroup) -> list[StreamSession]:
    """The sessions of a call: one, or one a channel."""
    return call.sessions if isinstance(call, ChannelGroup) else [call]


async def _wait_for_room(call: StreamSession | ChannelGroup, max_backlog_s: float) -> None:
    """Until the stream's audio waiting for decoding is at most `max_backlog_s` (or it is
    over), on every channel: its requests are not read meanwhile, so gRPC flow control holds
    a sender that outruns the model, and nothing is dropped."""
    limit = int(max_backlog_s * SAMPLE_RATE)
    for session in _channels(call):
        while not session.ended and planning.backlog(session.state) > limit:
            session.room.clear()
            await session.room.wait()


def _unavailable(broken: str | None) -> str:
    if broken:
        return f"this replica is broken ({broken}); retry on another replica"
    return "server is shutting down; retry on another replica"


async def _reject(metrics, context, code: grpc.StatusCode, message: str, reason: str) -> None:
    """Refuse a stream before any audio was processed; the trailer tells clients that
    starting the same stream elsewhere (or later) is safe."""
    if metrics:
        metrics.rejected(reason)
    await context.abort(code, message, trailing_metadata=((RETRY_HEADER, reason),))
