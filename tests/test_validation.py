"""One test per validation rule of the contract: the exact status code and a useful message."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from conftest import DATA

from streamstt.v1 import asr_pb2, asr_pb2_grpc

Request = asr_pb2.StreamingRecognizeRequest


def config(**fields) -> Request:
    recognition = dict(encoding=asr_pb2.LINEAR16, sample_rate_hertz=16000)
    recognition.update(fields.pop("recognition", {}))
    return Request(
        streaming_config=asr_pb2.StreamingRecognitionConfig(
            config=asr_pb2.RecognitionConfig(**recognition), **fields
        )
    )


def hints(*phrases: str, boost: float = 0.0) -> asr_pb2.SpeechContext:
    return asr_pb2.SpeechContext(phrases=phrases or ("streamstt",), boost=boost)


def audio(data: bytes) -> Request:
    return Request(audio_content=data)


def speech_bytes(seconds: float = 1.0) -> bytes:
    import soundfile

    samples, _ = soundfile.read(DATA / "sample.wav", dtype="int16")
    return samples[: int(seconds * 16000)].tobytes()


def call(target: str, requests: list[Request], timeout: float = 60, channel=None):
    own = channel is None
    if own:
        channel = grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
    stub = asr_pb2_grpc.RecognizerStub(channel)
    responses = []
    try:
        for response in stub.StreamingRecognize(iter(requests), timeout=timeout):
            responses.append(response)
        return grpc.StatusCode.OK, "", responses
    except grpc.RpcError as error:
        return error.code(), error.details(), responses
    finally:
        if own:
            channel.close()


INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "requests, code, message",
    [
        ([audio(b"\0\0" * 160)], INVALID, "first message must carry streaming_config"),
        ([config(), config()], INVALID, "only be sent once"),
        (
            [config(recognition={"encoding": asr_pb2.ENCODING_UNSPECIFIED})],
            INVALID,
            "not a streaming encoding",
        ),
        ([config(recognition={"encoding": 42})], INVALID, "not a streaming encoding"),
        ([config(recognition={"encoding": asr_pb2.MP3})], INVALID, "only for Recognize"),
        ([config(recognition={"sample_rate_hertz": 7999})], INVALID, "outside 8000-48000"),
        ([config(recognition={"sample_rate_hertz": 96000})], INVALID, "outside 8000-48000"),
        ([config(), audio(b"\0\0\0")], INVALID, "odd byte count"),
        (
            [
                config(recognition={"encoding": asr_pb2.FLOAT32}),
                audio(np.array([0.0, np.nan], dtype="<f4").tobytes()),
            ],
            INVALID,
            "non-finite",
        ),
        (
            [
                config(recognition={"encoding": asr_pb2.FLOAT32}),
                audio(np.array([np.inf], dtype="<f4").tobytes()),
            ],
            INVALID,
            "non-finite",
        ),
        ([config(recognition={"audio_channel_count": 9})], INVALID, "audio_channel_count"),
        ([config(recognition={"audio_channel_count": -1})], INVALID, "audio_channel_count"),
        (
            [config(recognition={"audio_channel_count": 2}), audio(b"\0\0" * 3)],
            INVALID,
            "multiple of 4",
        ),
        ([config(recognition={"model": "large-v9"})], grpc.StatusCode.NOT_FOUND, "not loaded"),
        ([config(recognition={"language_code": "de-DE"})], INVALID, "not supported"),
        ([config(latency_budget_ms=5)], INVALID, "latency_budget_ms"),
        ([config(endpointing=asr_pb2.EndpointingConfig(silence_ms=20))], INVALID, "silence_ms"),
        (
            [Request(streaming_config=asr_pb2.StreamingRecognitionConfig())],
            INVALID,
            "config is required",
        ),
        ([config(recognition={"speech_contexts": [hints(boost=float("nan"))]})], INVALID, "boost"),
        ([config(recognition={"speech_contexts": [hints(boost=-1.0)]})], INVALID, "boost"),
        ([config(recognition={"speech_contexts": [hints(boost=21.0)]})], INVALID, "0-20"),
        (
            [config(recognition={"speech_contexts": [hints(*["w"] * 101, boost=5.0)]})],
            INVALID,
            "at most 100",
        ),
        ([config(recognition={"speech_contexts": [hints("x" * 101)]})], INVALID, "at most 100"),
        (
            [config(recognition={"speech_contexts": [hints(*["word"] * 2501)] * 2})],
            INVALID,
            "5002 phrases; at most 5000",
        ),
        (
            [config(recognition={"speech_contexts": [hints(*["y" * 100] * 1001)]})],
            INVALID,
            "100100 characters; at most 100000",
        ),
    ],
)
def test_invalid_requests(server, requests, code, message):
    status, details, _ = call(server.target, requests)
    assert status == code, details
    assert message in details


@pytest.mark.parametrize(
    "encoding, width",
    [(asr_pb2.LINEAR16, 2), (asr_pb2.FLOAT32, 4), (asr_pb2.MULAW, 1), (asr_pb2.ALAW, 1)],
)
def test_garbage_bytes_in_every_encoding_are_handled(server, encoding, width):
    """Random bytes of a valid length are just (loud) noise: the stream ends cleanly."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 16000 * width, dtype=np.uint8).tobytes()
    if encoding == asr_pb2.FLOAT32:  # random floats are mostly huge or NaN: a precise error
        status, details, _ = call(
            server.target, [config(recognition={"encoding": encoding}), audio(data)]
        )
        assert status in (grpc.StatusCode.OK, INVALID), details
        return
    status, details, _ = call(
        server.target,
        [config(recognition={"encoding": encoding}), audio(data[:8000]), audio(data[8000:])],
    )
    assert status == grpc.StatusCode.OK, details


def test_zero_length_and_one_sample_chunks(server):
    chunks = [audio(b""), audio(b"\0\0")] + [audio(b"\1\0") for _ in range(50)]
    status, details, _ = call(server.target, [config(), *chunks])
    assert status == grpc.StatusCode.OK, details


def test_too_many_streams_is_resource_exhausted_at_once(make_server):
    import threading
    import time

    running = make_server(max_streams=1)
    channel = grpc.insecure_channel(running.target)
    stub = asr_pb2_grpc.RecognizerStub(channel)
    release = threading.Event()

    def slow():
        yield config()
        release.wait(20)

    holder = stub.StreamingRecognize(slow(), timeout=30)
    time.sleep(0.5)  # the first stream is admitted
    started = time.monotonic()
    status, details, _ = call(running.target, [config()])
    elapsed = time.monotonic() - started
    release.set()
    list(holder)
    channel.close()
    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_streams=1" in details
    assert elapsed < 1.0


def test_oversize_message_is_resource_exhausted(make_server):
    running = make_server(max_message_bytes=64 * 1024)
    status, _, _ = call(running.target, [config(), audio(b"\0\0" * 64 * 1024)])
    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stream_over_max_duration_is_out_of_range_after_finals(make_server):
    running = make_server(max_stream_seconds=3.0)
    chunk = speech_bytes(4.6)
    requests = [config()] + [audio(chunk[i : i + 3200]) for i in range(0, len(chunk), 3200)]
    status, details, responses = call(running.target, requests)
    assert status == grpc.StatusCode.OUT_OF_RANGE and "max_stream_seconds" in details
    assert any(r.is_final for resp in responses for r in resp.results)


def test_idle_stream_is_closed_with_a_status(make_server):
    import threading

    running = make_server(idle_timeout_s=1.0)
    stop = threading.Event()

    def idle():
        yield config()
        stop.wait(10)

    status, details, _ = call(running.target, idle(), timeout=8)
    stop.set()
    assert status == grpc.StatusCode.DEADLINE_EXCEEDED and "idle_timeout_s" in details


def test_empty_messages_do_not_hold_a_stream_open(make_server):
    import time

    running = make_server(idle_timeout_s=1.0)

    def empty():
        yield config()
        yield audio(speech_bytes(0.5))
        for _ in range(100):  # 20 s of keep-alive-looking empty messages
            time.sleep(0.2)
            yield audio(b"")

    started = time.monotonic()
    status, details, _ = call(running.target, empty(), timeout=30)
    assert status == grpc.StatusCode.DEADLINE_EXCEEDED and "idle_timeout_s" in details
    assert time.monotonic() - started < 5


def test_client_deadline_shorter_than_audio(server):
    import time

    def paced():
        yield config()
        for _ in range(100):
            time.sleep(0.1)
            yield audio(b"\0\0" * 1600)

    status, _, _ = call(server.target, paced(), timeout=1.5)
    assert status == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 5
    while server.running.servicer.active and time.monotonic() < deadline:
        time.sleep(0.05)
    # the stream is gone from the server, so no later batch can pick it up
    assert not server.running.servicer.active and not server.scheduler.streams


def test_a_client_that_stops_reading_is_aborted(make_server):
    """HTTP/2 flow control blocks the server's writes; after outbox_timeout_s the stream ends
    with RESOURCE_EXHAUSTED, and a normal stream on the same server is not held up."""
    import time

    import soundfile

    running = make_server(outbox_timeout_s=1.0)
    rss_before = _rss_mb()
    samples, _ = soundfile.read(DATA / "long_read.wav", dtype="int16")
    chunks = [samples[i : i + 1600].tobytes() for i in range(0, len(samples), 1600)]

    def requests():
        yield config(
            interim_results=True,
            enable_voice_activity_events=True,
            recognition={"enable_word_time_offsets": True, "enable_word_confidence": True},
        )
        for chunk in chunks:
            time.sleep(0.02)
            yield audio(chunk)

    channel = grpc.insecure_channel(
        running.target, options=[("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    )
    call = asr_pb2_grpc.RecognizerStub(channel).StreamingRecognize(requests(), timeout=60)
    started = time.monotonic()
    status, _, responses = call_with_config(running.target)  # a normal stream meanwhile
    assert status == grpc.StatusCode.OK and responses
    assert time.monotonic() - started < 30
    time.sleep(max(0.0, 8 - (time.monotonic() - started)))  # the slow client reads nothing
    with pytest.raises(grpc.RpcError) as aborted:
        for _ in call:
            pass
    channel.close()
    assert aborted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "stopped reading" in aborted.value.details()
    assert not running.running.servicer.active
    assert _rss_mb() - rss_before < 100, "memory held for the stuck client"


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def call_with_config(target: str):
    return call(target, [config(), audio(speech_bytes(3.0))])


def test_over_eager_keepalive_pings_get_goaway(make_server):
    import threading

    running = make_server(keepalive_min_ping_s=10.0, idle_timeout_s=30.0)
    channel = grpc.insecure_channel(
        running.target,
        options=[
            ("grpc.keepalive_time_ms", 100),
            ("grpc.keepalive_timeout_ms", 5000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )
    stop = threading.Event()

    def quiet():
        yield config()
        stop.wait(15)

    stub = asr_pb2_grpc.RecognizerStub(channel)
    with pytest.raises(grpc.RpcError) as goaway:
        list(stub.StreamingRecognize(quiet(), timeout=20))
    stop.set()
    channel.close()
    assert goaway.value.code() == grpc.StatusCode.UNAVAILABLE, goaway.value.details()
    assert "too many pings" in goaway.value.details().lower()  # GOAWAY ENHANCE_YOUR_CALM
