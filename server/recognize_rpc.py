"""Recognize over the wire: a call is refused or taken before its request message is read.

grpc reads a unary call's request whole (up to the message limit: 19 MB for ten minutes of
16 kHz PCM16) before the handler runs, so a handler that refuses a call past
max_recognize_calls has already held its audio, and eight such calls hold 150 MB or more
of messages the server will never use. Served as a stream-unary method instead (the wire is
the same, so clients still make a unary call), the handler counts the call first and reads
the message only once it has a slot; a refused call's audio stays in the sender, beyond the
HTTP/2 flow-control window. RecognizeIntake swaps the handler in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from streamstt.models.audio import SAMPLE_RATE, recording_features
from streamstt.v1 import asr_pb2

from . import responses, validation
from .recognize import RecognizeFailed, RecognizeWork, recognize_audio

_LOGGER = logging.getLogger("streamstt.server")
METHOD = "/streamstt.v1.Recognizer/Recognize"


class RecognizeIntake(grpc.aio.ServerInterceptor):
    """Serves Recognize as stream-unary, with `behavior(requests, context)`."""

    def __init__(self, behavior) -> None:
        self._behavior = behavior

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler_call_details.method != METHOD or handler is None:
            return handler
        return grpc.stream_unary_rpc_method_handler(
            self._behavior, handler.request_deserializer, handler.response_serializer
        )


class Slots:
    """Recognize tracks taken (a call is one while its message is read and decoded, then one
    per channel it recognizes separately); past `limit`, RESOURCE_EXHAUSTED. `on_busy` is
    told when the first track is taken (True) and the last given back (False)."""

    def __init__(self, limit: int, on_busy: Callable[[bool], object] = lambda busy: None) -> None:
        self.limit, self.taken, self.on_busy = limit, 0, on_busy

    async def take(self, context, tracks: int) -> None:
        if self.taken + tracks > self.limit:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many Recognize calls decoding (max_recognize_calls={self.limit}); "
                "retry later or use StreamingRecognize",
            )
        if not self.taken and tracks:
            self.on_busy(True)
        self.taken += tracks

    def give_back(self, tracks: int) -> None:
        self.taken -= tracks
        if not self.taken and tracks:
            self.on_busy(False)


async def serve(servicer, slots: Slots, requests, context):
    """One Recognize call: a slot, then its one message, then its windows (scheduled)."""
    await slots.take(context, 1)
    held = 1
    try:
        request = await _only_request(requests, context)
        tracks = await _tracks(servicer.config, servicer.model_names, request, context)
        config = asr_pb2.RecognitionConfig()
        config.CopyFrom(request.config)
        del request  # the message (its audio) can go now, not at the end of the call
        await slots.take(context, len(tracks) - 1)  # other calls may have come in meanwhile
        held = len(tracks)
        started = time.monotonic()
        transcripts = await _decode_windows(servicer, config, tracks, context)
    finally:
        slots.give_back(held)
    seconds = tracks[0].shape[-1] / SAMPLE_RATE
    _LOGGER.info("recognize done", extra={"audio_s": seconds, "wall_s": time.monotonic() - started})
    return responses.recognize(transcripts, seconds, config, len(tracks) > 1)


async def _only_request(requests, context):
    async for request in requests:
        return request  # a unary client sends one; nothing after it is read
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Recognize got no request message")


async def _tracks(config, model_names, request, context) -> list:
    try:
        channels = validation.check_common(request.config, config, model_names)
        return await asyncio.to_thread(
            recognize_audio, request.audio_content, request.config, channels,
            config.max_recognize_seconds,
        )  # fmt: skip
    except validation.InvalidRequest as exc:
        await context.abort(exc.code, exc.message)


async def _decode_windows(servicer, config, tracks: list, context) -> list:
    """Each track's windows, decoded by the scheduler; counted by max_streams, admission and
    the drain while they run, and not decoded further once the call is gone."""
    prompt = validation.phrases(config)
    hot = validation.hotwords(config)
    tokenizer = servicer.transcriber.tokenizer
    n_mels = servicer.transcriber.model.dims.n_mels
    # each window's log-mel is cut from its whole recording's, as offline (OFFLINE_OPTIONS)
    features = await asyncio.to_thread(lambda: [recording_features(t, n_mels) for t in tracks])
    works = [
        RecognizeWork(tokenizer, t, servicer.notify, prompt, hot, f)
        for t, f in zip(tracks, features)
    ]
    for work in works:
        servicer.active[work.stream_id] = work
    servicer.on_change()
    servicer.notify()
    try:
        return await asyncio.gather(*(work.result for work in works))
    except RecognizeFailed as exc:
        await context.abort(getattr(grpc.StatusCode, exc.code), exc.message)
    finally:
        for work in works:
            work.cancel()
            servicer.active.pop(work.stream_id, None)
        servicer.on_change()
