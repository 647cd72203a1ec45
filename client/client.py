"""Python client for the streamstt Recognizer service: sync and asyncio.

Targets: one `host:port`, a list of them, or a `dns:///name:port` whose name resolves to several
replicas. With more than one replica the channel balances calls round-robin over the replicas
whose gRPC health says SERVING (client-side health checking of service ""), so a new stream
goes to a replica that is up, not draining and not at capacity. A bidi stream stays on the
replica it started on.

Retries: the unary calls (Recognize, ListModels) are idempotent and retried on UNAVAILABLE by
gRPC's own retry policy. A stream is never replayed silently: `stream()` raises
`StreamInterrupted` carrying the final results it already received and `resume_offset_s`, the
end of the last final; `stream_resumable()` instead opens a new stream (on another replica when
balanced) and sends again the audio after that point, so the caller sees one stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import soundfile

from streamstt.v1 import asr_pb2, asr_pb2_grpc

from .resume import AudioLog, Continuation, replay_requests

REPLICA_HEADER = "streamstt-replica"  # which replica serves a stream (initial metadata)
RESUME_BACKOFF_S = 0.2  # before the n-th resume, wait n times this (all replicas may be full)
ADMISSION_WAIT_S = 1.0  # asyncio client: longest hold of the audio for the server's admission


def _service_config(balanced: bool, health_check: bool) -> str:
    """gRPC service config: retries for the idempotent unary methods only; with several
    replicas, round-robin over those whose health (service "") is SERVING."""
    config: dict = {"methodConfig": _METHOD_CONFIG}
    if balanced:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    if health_check:
        config["healthCheckConfig"] = {"serviceName": ""}
    return json.dumps(config)


_METHOD_CONFIG = [
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
# A chunk that asks for the open utterance's final now (StreamingRecognizeRequest.finalize):
# put it among the audio chunks given to stream(); the stream goes on after it.
FINALIZE = asr_pb2.Finalize()
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # what the client accepts (the server has its own limit)


class StreamInterrupted(Exception):
    """A stream ended with an error; `finals` holds the final results received before it and
    `resume_offset_s` the stream time where the last of them ended (0 without finals): a new
    stream that starts with the audio from there loses nothing."""

    def __init__(self, error: grpc.RpcError, finals: list) -> None:
        super().__init__(f"{error.code().name}: {error.details()}")
        self.error, self.finals = error, finals
        ends = [f.result_end_time.ToNanoseconds() for f in finals]
        self.resume_offset_s = max(ends, default=0) / 1e9

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
    # Client-side health checking: None = on when balancing over several replicas. With it, a
    # replica that is loading, draining or at capacity gets no new calls.
    health_check: bool | None = None


@dataclass(frozen=True)
class Target:
    """A gRPC channel target made from what the caller gave."""

    uri: str
    balanced: bool  # several replicas may be behind it
    authority: str | None = None  # TLS name / :authority when addresses replaced names


def resolve_target(target: str | Sequence[str]) -> Target:
    """`host:port`, `dns:///name:port` (any gRPC URI), `a:1,b:2` or a list of `host:port`.

    A list becomes one channel over all addresses (gRPC's ipv4:/ipv6: scheme); names in a list
    are resolved here, once, so use `dns:///` for a name whose addresses change."""
    if isinstance(target, str):
        if "://" in target or target.startswith(("ipv4:", "ipv6:", "unix:")):
            return Target(target, balanced=target.startswith(("dns:", "ipv4:", "ipv6:")))
        target = [t.strip() for t in target.split(",") if t.strip()]
    targets = list(target)
    if not targets:
        raise ValueError("no server target given")
    if len(targets) == 1:
        return Target(targets[0], balanced=False)
    v4: list[str] = []
    v6: list[str] = []
    for item in targets:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{item!r} is not host:port")
        host = host.strip("[]")
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        for address in dict.fromkeys(addresses):
            (v4 if address.version == 4 else v6).append(
                f"{address}:{port}" if address.version == 4 else f"[{address}]:{port}"
            )
    uri = "ipv4:" + ",".join(v4) if v4 else "ipv6:" + ",".join(v6)
    return Target(uri, balanced=True, authority=targets[0])


def _channel_options(options: ClientOptions, target: Target) -> list[tuple[str, object]]:
    health_check = target.balanced if options.health_check is None else options.health_check
    channel_options: list[tuple[str, object]] = [
        ("grpc.service_config", _service_config(target.balanced, health_check)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    if target.authority and options.tls:
        channel_options.append(("grpc.default_authority", target.authority))
    return channel_options


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
    profanity_filter: bool = False,
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
            profanity_filter=profanity_filter,
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


def audio_request(chunk: bytes | asr_pb2.Finalize) -> asr_pb2.StreamingRecognizeRequest:
    """The request that carries one chunk of audio (or FINALIZE)."""
    if isinstance(chunk, asr_pb2.Finalize):
        return asr_pb2.StreamingRecognizeRequest(finalize=chunk)
    return asr_pb2.StreamingRecognizeRequest(audio_content=chunk)


def _requests(config, chunks: Iterable[bytes], pace_s: float = 0.0) -> Iterator:
    yield asr_pb2.StreamingRecognizeRequest(streaming_config=config)
    start = time.monotonic()
    for i, chunk in enumerate(chunks):
        if pace_s:
            delay = start + i * pace_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield audio_request(chunk)


class StreamingClient:
    """Synchronous client. `target`: `host:port`, a list of them, or `dns:///name:port`."""

    def __init__(
        self, target: str | Sequence[str], options: ClientOptions = ClientOptions()
    ) -> None:
        self.options = options
        self.target = resolve_target(target)
        channel_options = _channel_options(options, self.target)
        if options.tls:
            credentials = _credentials(options)
            self.channel = grpc.secure_channel(self.target.uri, credentials, channel_options)
        else:
            self.channel = grpc.insecure_channel(self.target.uri, channel_options)
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
        on_replica: Callable[[str], None] | None = None,
    ) -> Iterator[asr_pb2.StreamingRecognizeResponse]:
        """Send the config then the chunks (optionally one every `pace_s` seconds); yield
        responses as they arrive. Raises StreamInterrupted on a non-OK end. `on_replica` gets
        the name of the replica serving the stream once it is known."""
        yield from self._call(_requests(config, chunks, pace_s), timeout, on_replica)

    def stream_resumable(
        self,
        config: asr_pb2.StreamingRecognitionConfig,
        chunks: Iterable[bytes],
        pace_s: float = 0.0,
        timeout: float | None = None,
        on_replica: Callable[[str], None] | None = None,
        max_resumes: int = 3,
    ) -> Iterator[asr_pb2.StreamingRecognizeResponse]:
        """Like stream(), but when the serving replica goes away (UNAVAILABLE) or refuses the
        stream before any audio (draining, at capacity), open a new stream and send again the
        audio after the last final: results keep one timeline and one utterance numbering.
        Raw PCM encodings only. After `max_resumes` resumes the failure is raised as
        StreamInterrupted with every final so far."""
        state = Continuation(config)
        log = AudioLog(iter(chunks), state.frame)
        started = time.monotonic()

        def pace(index: int) -> None:
            delay = started + index * pace_s - time.monotonic()
            if pace_s and delay > 0:
                time.sleep(delay)

        while True:
            alive = threading.Event()
            alive.set()
            requests = replay_requests(config, log, state.offset_byte, alive, pace)
            try:
                for response in self._call(requests, timeout, on_replica):
                    state.translate(response, log)
                    yield response
                return
            except StreamInterrupted as exc:
                wait_s = _resume_or_raise(state, exc, alive, max_resumes)
            time.sleep(wait_s)

    def _call(self, requests, timeout, on_replica):
        finals: list = []
        call = self.stub.StreamingRecognize(requests, timeout=timeout, metadata=self._metadata)
        try:
            if on_replica is not None:
                on_replica(_replica(call.initial_metadata()))
            for response in call:
                finals.extend(r for r in response.results if r.is_final)
                yield response
        except grpc.RpcError as error:
            raise StreamInterrupted(error, finals) from error
        finally:
            call.cancel()  # no-op after a normal end; stops the sender if the caller stops

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

    def __init__(
        self, target: str | Sequence[str], options: ClientOptions = ClientOptions()
    ) -> None:
        self.target = resolve_target(target)
        channel_options = _channel_options(options, self.target)
        if options.tls:
            credentials = _credentials(options)
            self.channel = grpc.aio.secure_channel(self.target.uri, credentials, channel_options)
        else:
            self.channel = grpc.aio.insecure_channel(self.target.uri, channel_options)
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
        on_replica: Callable[[str], None] | None = None,
    ) -> AsyncIterator[asr_pb2.StreamingRecognizeResponse]:
        async def requests():
            yield asr_pb2.StreamingRecognizeRequest(streaming_config=config)
            start = time.monotonic()
            index = 0
            async for chunk in _aiter(chunks):
                if pace_s:
                    await asyncio.sleep(max(0.0, start + index * pace_s - time.monotonic()))
                index += 1
                yield audio_request(chunk)

        async for response in self._call(requests(), timeout, on_replica):
            yield response

    async def stream_resumable(
        self,
        config: asr_pb2.StreamingRecognitionConfig,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        pace_s: float = 0.0,
        timeout: float | None = None,
        on_replica: Callable[[str], None] | None = None,
        max_resumes: int = 3,
    ) -> AsyncIterator[asr_pb2.StreamingRecognizeResponse]:
        """The asyncio twin of StreamingClient.stream_resumable."""
        state = Continuation(config)
        log = AudioLog(iter(()), state.frame)
        source = _aiter(chunks)
        started = time.monotonic()

        async def requests(start_byte: int, alive: threading.Event):
            yield asr_pb2.StreamingRecognizeRequest(streaming_config=config)
            index = log.index_at(start_byte)
            while alive.is_set():
                item = log.peek(index)
                if item is False:
                    log.append_async(await anext(source, None))
                    continue
                if item is None:
                    return
                index, first, data = item
                if pace_s:
                    await asyncio.sleep(max(0.0, started + index * pace_s - time.monotonic()))
                data = log.tail_from(first, data, start_byte)
                if data and alive.is_set():
                    yield asr_pb2.StreamingRecognizeRequest(audio_content=data)
                index += 1

        while True:
            alive = threading.Event()
            alive.set()
            try:
                stream = self._call(requests(state.offset_byte, alive), timeout, on_replica)
                async for response in stream:
                    state.translate(response, log)
                    yield response
                return
            except StreamInterrupted as exc:
                wait_s = _resume_or_raise(state, exc, alive, max_resumes)
            await asyncio.sleep(wait_s)

    async def _call(self, requests, timeout, on_replica):
        finals: list = []
        admitted = asyncio.Event()
        call = self.stub.StreamingRecognize(
            _after_admission(requests, admitted), timeout=timeout, metadata=self._metadata
        )
        try:
            metadata = await call.initial_metadata()  # admitted, or the call has ended
            admitted.set()
            if on_replica is not None:
                on_replica(_replica(metadata))
            async for response in call:
                finals.extend(r for r in response.results if r.is_final)
                yield response
        except grpc.RpcError as error:
            raise StreamInterrupted(error, finals) from error
        finally:
            call.cancel()

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


def _resume_or_raise(
    state: Continuation, exc: StreamInterrupted, alive: threading.Event, max_resumes: int
) -> float:
    """After a broken stream: stop its sender, and return how long to wait before the next
    stream, or raise with every final so far when the stream may not be resumed."""
    alive.clear()
    if not state.can_resume(exc.error, max_resumes):
        raise StreamInterrupted(exc.error, state.finals) from exc
    state.resume()
    return RESUME_BACKOFF_S * state.resumes


async def _after_admission(requests, admitted: asyncio.Event):
    """The requests, with the audio held back until the server has answered the config:
    it sends its initial metadata once it admits the stream, or ends the call with the
    refusal. Audio written while a refusal arrives can make grpc's asyncio client replace
    the server's status with INTERNAL "Internal error from Core" (seen in a bench sweep:
    a RESOURCE_EXHAUSTED refusal reported as INTERNAL). A server that sends no early
    metadata only delays the audio by ADMISSION_WAIT_S."""
    first = True
    async for request in requests:
        yield request
        if first:
            first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(admitted.wait(), ADMISSION_WAIT_S)


def _replica(metadata) -> str:
    return dict(metadata or ()).get(REPLICA_HEADER, "")


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
