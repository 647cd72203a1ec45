"""Python client for the streamstt Recognizer service: sync and asyncio.

Retries: the unary calls (Recognize, ListModels) are idempotent and retried on UNAVAILABLE by
gRPC's own retry policy. A stream is never replayed silently: if it breaks, the caller gets
`StreamInterrupted` carrying the final results it already received, and may resume from the
last final's end time with a new stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import soundfile

from streamstt.v1 import asr_pb2, asr_pb2_grpc

# gRPC retry policy for the idempotent unary methods only.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "streamstt.v1.Recognizer", "method": "Recognize"},
                    {"service": "streamstt.v1.Recognizer", "method": "ListModels"},
                ],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # what the client accepts (the server has its own limit)


class StreamInterrupted(Exception):
    """A stream ended with an error; `finals` holds the final results received before it."""

    def __init__(self, error: grpc.RpcError, finals: list) -> None:
        super().__init__(f"{error.code().name}: {error.details()}")
        self.error, self.finals = error, finals

    @property
    def code(self) -> grpc.StatusCode:
        return self.error.code()


@dataclass(frozen=True)
class ClientOptions:
    tls: bool = False
    root_certificates: bytes | None = None  # PEM; None = system roots
    client_certificate: bytes | None = None  # PEM, for mTLS
    client_key: bytes | None = None
    token: str | None = None  # bearer token sent as 'authorization' metadata
    load_balancing: str = "round_robin"  # for dns:/// or multi-address targets


def _channel_options(options: ClientOptions) -> list[tuple[str, object]]:
    return [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.lb_policy_name", options.load_balancing),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]


def _credentials(options: ClientOptions) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        options.root_certificates, options.client_key, options.client_certificate
    )


def streaming_config(
    sample_rate: int,
    *,
    encoding: int = asr_pb2.LINEAR16,
    channels: int = 1,
    interim_results: bool = True,
    word_times: bool = True,
    latency_budget_ms: int = 0,
    silence_ms: int = 0,
    single_utterance: bool = False,
    vad_events: bool = False,
    model: str = "",
) -> asr_pb2.StreamingRecognitionConfig:
    return asr_pb2.StreamingRecognitionConfig(
        config=asr_pb2.RecognitionConfig(
            encoding=encoding,
            sample_rate_hertz=sample_rate,
            audio_channel_count=channels,
            language_code="en-US",
            model=model,
            enable_word_time_offsets=word_times,
            enable_word_confidence=word_times,
        ),
        interim_results=interim_results,
        single_utterance=single_utterance,
        latency_budget_ms=latency_budget_ms,
        endpointing=asr_pb2.EndpointingConfig(silence_ms=silence_ms),
        enable_voice_activity_events=vad_events,
    )


def file_chunks(path: str | Path, chunk_ms: int = 100) -> tuple[int, int, list[bytes]]:
    """A file (anything libsndfile reads) as LINEAR16 chunks at its own rate.
    Returns (sample_rate, channels, chunks)."""
    samples, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    if not 8000 <= rate <= 48000:
        raise ValueError(f"{path}: {rate} Hz is outside the 8-48 kHz the service accepts")
    frames = max(1, rate * chunk_ms // 1000)
    raw = samples.astype("<i2")
    chunks = [raw[i : i + frames].tobytes() for i in range(0, len(raw), frames)]
    return rate, samples.shape[1], chunks


def recognize_request(
    audio: bytes, config: asr_pb2.RecognitionConfig | None = None
) -> asr_pb2.RecognizeRequest:
    """A whole file for Recognize; by default with word times and confidences."""
    config = config or asr_pb2.RecognitionConfig(
        enable_word_time_offsets=True, enable_word_confidence=True
    )
    return asr_pb2.RecognizeRequest(config=config, audio_content=audio)


def _requests(config, chunks: Iterable[bytes], pace_s: float = 0.0) -> Iterator:
    yield asr_pb2.StreamingRecognizeRequest(streaming_config=config)
    start = time.monotonic()
    for i, chunk in enumerate(chunks):
        if pace_s:
            delay = start + i * pace_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield asr_pb2.StreamingRecognizeRequest(audio_content=chunk)


class StreamingClient:
    """Synchronous client. `target` is host:port, a comma-free dns:/// name, or ipv4:a,b,c."""

    def __init__(self, target: str, options: ClientOptions = ClientOptions()) -> None:
        self.options = options
        channel_options = _channel_options(options)
        if options.tls:
            self.channel = grpc.secure_channel(target, _credentials(options), channel_options)
        else:
            self.channel = grpc.insecure_channel(target, channel_options)
        self.stub = asr_pb2_grpc.RecognizerStub(self.channel)
        self._metadata = (("authorization", f"Bearer {options.token}"),) if options.token else ()

    def __enter__(self) -> StreamingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def stream(
        self,
        config: asr_pb2.StreamingRecognitionConfig,
        chunks: Iterable[bytes],
        pace_s: float = 0.0,
        timeout: float | None = None,
    ) -> Iterator[asr_pb2.StreamingRecognizeResponse]:
        """Send the config then the chunks (optionally one every `pace_s` seconds); yield
        responses as they arrive. Raises StreamInterrupted on a non-OK end."""
        finals = []
        call = self.stub.StreamingRecognize(
            _requests(config, chunks, pace_s), timeout=timeout, metadata=self._metadata
        )
        try:
            for response in call:
                finals.extend(r for r in response.results if r.is_final)
                yield response
        except grpc.RpcError as error:
            raise StreamInterrupted(error, finals) from error

    def recognize(
        self,
        audio: bytes,
        config: asr_pb2.RecognitionConfig | None = None,
        timeout: float | None = None,
    ) -> asr_pb2.RecognizeResponse:
        request = recognize_request(audio, config)
        return self.stub.Recognize(request, timeout=timeout, metadata=self._metadata)

    def list_models(self) -> asr_pb2.ListModelsResponse:
        return self.stub.ListModels(asr_pb2.ListModelsRequest(), metadata=self._metadata)


class AsyncStreamingClient:
    """asyncio client with the same surface as StreamingClient."""

    def __init__(self, target: str, options: ClientOptions = ClientOptions()) -> None:
        channel_options = _channel_options(options)
        if options.tls:
            self.channel = grpc.aio.secure_channel(target, _credentials(options), channel_options)
        else:
            self.channel = grpc.aio.insecure_channel(target, channel_options)
        self.stub = asr_pb2_grpc.RecognizerStub(self.channel)
        self._metadata = (("authorization", f"Bearer {options.token}"),) if options.token else ()

    async def __aenter__(self) -> AsyncStreamingClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def stream(
        self,
        config: asr_pb2.StreamingRecognitionConfig,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        pace_s: float = 0.0,
        timeout: float | None = None,
    ) -> AsyncIterator[asr_pb2.StreamingRecognizeResponse]:
        async def requests():
            yield asr_pb2.StreamingRecognizeRequest(streaming_config=config)
            start = time.monotonic()
            index = 0
            async for chunk in _aiter(chunks):
                if pace_s:
                    await asyncio.sleep(max(0.0, start + index * pace_s - time.monotonic()))
                index += 1
                yield asr_pb2.StreamingRecognizeRequest(audio_content=chunk)

        finals = []
        call = self.stub.StreamingRecognize(requests(), timeout=timeout, metadata=self._metadata)
        try:
            async for response in call:
                finals.extend(r for r in response.results if r.is_final)
                yield response
        except grpc.RpcError as error:
            raise StreamInterrupted(error, finals) from error

    async def recognize(
        self,
        audio: bytes,
        config: asr_pb2.RecognitionConfig | None = None,
        timeout: float | None = None,
    ) -> asr_pb2.RecognizeResponse:
        request = recognize_request(audio, config)
        return await self.stub.Recognize(request, timeout=timeout, metadata=self._metadata)

    async def list_models(self) -> asr_pb2.ListModelsResponse:
        return await self.stub.ListModels(asr_pb2.ListModelsRequest(), metadata=self._metadata)


async def _aiter(chunks):
    if hasattr(chunks, "__aiter__"):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


def pcm16(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] -> LINEAR16 bytes."""
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
