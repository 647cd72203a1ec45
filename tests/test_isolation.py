"""One careless or hostile caller must not stall, lock out or lose the others' audio: Recognize
as scheduled work, flow control for fast senders, finals on the drain and the idle timeout."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import DATA, load_clip, reference, wait_until, wer
from test_server import finals, run_stream
from test_validation import audio, call, config

from streamstt.client.client import StreamInterrupted, recognize_request
from streamstt.models.audio import decode_audio
from streamstt.models.memory import map_large_buffers
from streamstt.server import validation
from streamstt.server.settings import ServerConfig
from streamstt.server.stream import session as session_module
from streamstt.server.stream.outbox import Outbox
from streamstt.server.stream.session import BULK_LEAD_S, StreamSession
from streamstt.server.stream.vad import SileroVad
from streamstt.v1 import asr_pb2_grpc

READ_CLEAN = DATA / "hard" / "read_clean.flac"


def _wav(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def _long_reading(rate: int = 16000) -> bytes:
    """75 s of read speech (three 30 s windows' worth) as a WAV file: two different passages
    (one passage twice over would be decoded with its own words as the prompt, which makes
    tiny.en loop)."""
    audio = np.concatenate([load_clip("long_read"), decode_audio(READ_CLEAN).numpy()])
    if rate != 16000:
        audio = soxr.resample(audio, 16000, rate)
    return _wav(audio, rate)


def _long_reading_said() -> str:
    return reference("long_read") + " " + READ_CLEAN.with_suffix(".txt").read_text()


class _BatchLog:
    """The stream ids of every model call, in order (the scheduler's fault seam)."""

    def __init__(self, scheduler) -> None:
        self.batches: list[list[str]] = []
        scheduler.fault_hook = self.batches.append

    def recognize_windows(self) -> list[int]:
        return [i for i, ids in enumerate(self.batches) if ids[0].startswith("r")]


def test_recognize_runs_window_by_window_and_waits_for_live_streams(make_server):
    """A 75 s Recognize is decoded one 30 s window at a time; while a live stream is open
    no window runs (each would hold the stream's next interim back for its whole decode)."""
    running = make_server()
    log = _BatchLog(running.scheduler)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(running.target))
    call = stub.Recognize.future(recognize_request(_long_reading()), timeout=180)
    wait_until(log.recognize_windows)
    live = run_stream(running.target, "two_utterances", pace=0.1)  # real time
    response = call.result()
    text = " ".join(r.alternatives[0].transcript for r in response.results)
    assert wer([_long_reading_said()], [text]) <= 0.1, text
    windows = log.recognize_windows()
    assert len(windows) >= 3, log.batches  # 75 s: at least three 30 s windows
    live_batches = [i for i, ids in enumerate(log.batches) if ids[0].startswith("s")]
    # at most the window already running when the stream opened overlaps its decodes
    during = [w for w in windows if live_batches[0] < w < live_batches[-1]]
    assert not during, log.batches
    assert all(len(ids) == 1 for ids in log.batches if ids[0].startswith("r"))
    assert finals(live) and running.running.servicer.active == {}


def test_recognize_calls_in_flight_are_bounded(make_server):
    running = make_server(max_recognize_calls=1)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(running.target))
    first = stub.Recognize.future(recognize_request(_long_reading()), timeout=120)
    wait_until(lambda: running.running.servicer.active)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Recognize(recognize_request(_wav(load_clip("sample"), 16000)), timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_recognize_calls=1" in caught.value.details()
    assert first.result().results


def test_large_buffers_are_mapped_while_a_recognize_is_in_flight(make_server):
    """glibc's mmap threshold is low from the first Recognize call taken to the last one done
    (its buffers are unmapped when freed), and high otherwise (live streams reuse the heap);
    a refused call changes nothing (models.memory.map_large_buffers)."""
    running = make_server(max_recognize_calls=1)
    slots = running.running.servicer.recognize_slots
    seen = []
    slots.on_busy = lambda busy: seen.append((busy, map_large_buffers(busy)))
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(running.target))
    first = stub.Recognize.future(recognize_request(_long_reading()), timeout=120)
    wait_until(lambda: running.running.servicer.active)
    with pytest.raises(grpc.RpcError):
        stub.Recognize(recognize_request(_wav(load_clip("sample"), 16000)), timeout=60)
    assert seen == [(True, True)]
    assert first.result().results
    wait_until(lambda: slots.taken == 0)
    assert seen == [(True, True), (False, True)]


def test_a_refused_recognize_is_refused_before_its_message_is_read(make_server):
    # The second call's message is over the message limit: had the server read it before
    # counting the call, the transport would refuse it as too large; unread, it is refused
    # for what it is, one call too many (ten such calls would otherwise hold ten messages).
    running = make_server(max_recognize_calls=1, max_message_bytes=4 * 2**20)
    channel = grpc.insecure_channel(running.target, [("grpc.max_send_message_length", -1)])
    stub = asr_pb2_grpc.RecognizerStub(channel)
    first = stub.Recognize.future(recognize_request(_wav(load_clip("sample"), 16000)), timeout=120)
    wait_until(lambda: running.running.servicer.active)
    too_big = recognize_request(_wav(np.zeros(5_000_000, np.float32), 16000))  # 10 MB
    with pytest.raises(grpc.RpcError) as caught:
        stub.Recognize(too_big, timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_recognize_calls=1" in caught.value.details(), caught.value.details()
    assert first.result().results


def test_a_finished_recognize_leaves_no_audio_behind(server):
    import gc

    import torch

    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(server.target))
    samples = len(decode_audio(_long_reading()))
    assert stub.Recognize(recognize_request(_long_reading()), timeout=120).results
    wait_until(lambda: not server.running.servicer.active)
    gc.collect()
    # The scheduler idling after the call's last window held that window, a view of the
    # whole recording.
    held = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.numel() == samples]
    assert not held


def test_refused_streams_do_not_leave_their_messages_behind(server):
    import gc

    from streamstt.v1 import asr_pb2

    # 10,000 phrases (1 MB), over MAX_PHRASES: refused. grpc keeps the abort on the call's
    # state, which cycles with the handler's frames, and those hold the request; the
    # server collects such cycles after a call ends, so refusals don't pile up (grpc itself
    # holds on to two messages: its first call's and its newest call's).
    request = config(recognition={"speech_contexts": [{"phrases": ["x" * 99] * 10_000}]})
    for _ in range(8):
        code, details, _ = call(server.target, [request])
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details

    def kept() -> int:
        return sum(
            isinstance(o, asr_pb2.StreamingRecognizeRequest)
            and o is not request
            and o.ByteSize() > 500_000
            for o in gc.get_objects()
        )

    assert wait_until(lambda: kept() <= 2, timeout_s=5, poll_s=0.25), kept()


def test_a_cancelled_recognize_decodes_no_more_windows(make_server):
    running = make_server()
    log = _BatchLog(running.scheduler)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(running.target))
    call = stub.Recognize.future(recognize_request(_long_reading()), timeout=120)
    wait_until(log.recognize_windows)
    call.cancel()
    wait_until(lambda: not running.running.servicer.active)
    time.sleep(1.0)  # any window still scheduled would run now
    assert running.running.servicer.active == {}
    assert len(log.recognize_windows()) <= 2, log.batches  # the one running, maybe the next


def test_recognize_takes_a_48khz_file_over_4_mib(server):
    """The message limit follows max_recognize_seconds: 75 s of 48 kHz PCM is 7.2 MB."""
    data = _long_reading(48000)
    assert len(data) > 4 * 1024 * 1024
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(server.target))
    response = stub.Recognize(recognize_request(data), timeout=120)
    assert response.total_audio.ToTimedelta().total_seconds() > 60


def test_recognize_counts_in_max_streams(make_server):
    running = make_server(max_streams=1)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(running.target))
    first = stub.Recognize.future(recognize_request(_long_reading()), timeout=120)
    wait_until(lambda: running.running.servicer.active)
    with pytest.raises(StreamInterrupted) as caught:
        run_stream(running.target, "sample")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.result()


def _pcm(name: str, repeat: int = 1) -> bytes:
    return (np.tile(load_clip(name), repeat) * 32767).astype("<i2").tobytes()


def _chunks(data: bytes, seconds: float = 0.1) -> list[bytes]:
    size = int(seconds * 16000) * 2
    return [data[i : i + size] for i in range(0, len(data), size)]


def _text(responses) -> str:
    return " ".join(r.alternatives[0].transcript for r in finals(responses))


def test_a_full_speed_sender_is_held_by_flow_control_and_loses_nothing(make_server):
    """62 s sent as fast as the transport takes it: the server reads it at its own pace, so
    the audio it holds stays bounded, and every word is transcribed."""
    running = make_server(max_backlog_s=6.0)
    held: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            held.extend(
                (s.state.received - s.state.audio_start) / 16000
                for s in list(running.running.servicer.active.values())
            )
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        requests = [config()] + [audio(c) for c in _chunks(_pcm("long_read", 2))]
        status, details, responses = call(running.target, requests, timeout=240)
    finally:
        done.set()
        watcher.join()
    assert status == grpc.StatusCode.OK, details
    said = reference("long_read") + " " + reference("long_read")
    assert wer([said], [_text(responses)]) <= 0.1, _text(responses)
    # an open utterance (<= max_utterance_ms 20 s) + the backlog + left context, not 62 s
    assert held and max(held) <= 32, max(held)


def _session_opened(seconds_ago: float) -> StreamSession:
    async def at_once(fn, *args):
        return fn(*args)

    settings = validation.streaming_settings(config().streaming_config, ServerConfig(), set())
    return StreamSession(
        settings, Outbox(64, 10.0), prefetch=at_once, vad=SileroVad(), notify=lambda: None,
        max_samples=1 << 40, opened=time.monotonic() - seconds_ago,
    )  # fmt: skip


def test_a_file_sent_at_speed_waits_for_live_streams_after_it_falls_behind(monkeypatch):
    """Held by flow control while live streams decode, a full-speed sender falls behind real
    time; scheduled like a live stream from then on, its finals held the live streams back
    (benchmarks/abuse.py). Once its audio came BULK_LEAD_S ahead of real time, it waits."""
    pcm = np.zeros(int((BULK_LEAD_S + 2) * 16000), "<i2").tobytes()
    fast, live = _session_opened(0.0), _session_opened(0.0)
    asyncio.run(fast.feed(pcm))
    asyncio.run(live.feed(pcm[: 3 * 32000]))  # what a client buffered before the call opened
    assert fast.ahead() and not live.ahead()
    lagging = _session_opened(600.0)  # never ahead of real time: a live stream that lagged
    asyncio.run(lagging.feed(pcm))
    later = time.monotonic() + 600.0  # real time has long overtaken the fast one's audio
    monkeypatch.setattr(session_module, "time", SimpleNamespace(monotonic=lambda: later))
    assert fast.ahead() and not lagging.ahead() and not live.ahead()


def test_one_huge_message_is_ingested_in_pieces_and_transcribed(server):
    requests = [config(), audio(_pcm("long_read"))]
    status, details, responses = call(server.target, requests, timeout=120)
    assert status == grpc.StatusCode.OK, details
    assert wer([reference("long_read")], [_text(responses)]) <= 0.1, _text(responses)


def test_the_idle_timeout_finalises_what_was_heard(make_server):
    running = make_server(idle_timeout_s=1.5)
    stop = threading.Event()

    def speech_then_nothing():
        yield config()
        yield audio(_pcm("en_us_male")[: 3 * 32000])  # 3 s of speech, no pause after it
        stop.wait(20)

    status, details, responses = call(running.target, speech_then_nothing(), timeout=20)
    stop.set()
    assert status == grpc.StatusCode.DEADLINE_EXCEEDED and "finals sent" in details
    assert len(_text(responses).split()) >= 4, responses


def test_the_drain_finalises_open_utterances_past_the_grace(make_server):
    running = make_server(grace_s=0.5, drain_finals_s=20)
    stop = threading.Event()
    result: list = []

    def speech_then_nothing():
        yield config()
        yield audio(_pcm("en_us_male")[: 3 * 32000])
        stop.wait(30)

    caller = threading.Thread(
        target=lambda: result.append(call(running.target, speech_then_nothing(), timeout=30))
    )
    caller.start()
    wait_until(lambda: running.running.servicer.active, timeout_s=20)
    time.sleep(0.5)  # the audio is in
    running.stop()
    caller.join(30)
    stop.set()
    ((status, details, responses),) = result
    assert status == grpc.StatusCode.UNAVAILABLE and "finals of the audio" in details
    assert len(_text(responses).split()) >= 4, responses


def _health(target: str, service: str):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


def _becomes(target: str, service: str, status: str) -> bool:
    """The health of `service` turns `status` (SERVING, NOT_SERVING) within 5 s: health is
    updated on the server's loop."""
    from grpc_health.v1 import health_pb2

    wanted = health_pb2.HealthCheckResponse.ServingStatus.Value(status)
    return wait_until(lambda: _health(target, service) == wanted, timeout_s=5, poll_s=0.05)


def test_a_hung_model_call_fails_its_streams_and_flips_liveness(make_server):
    running = make_server(model_timeout_s=1.0)
    release = threading.Event()
    running.scheduler.fault_hook = lambda ids: release.wait(10)  # the model thread hangs
    with pytest.raises(StreamInterrupted) as caught:
        run_stream(running.target, "sample")
    release.set()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "model_timeout_s=1" in str(caught.value)
    assert _becomes(running.target, "liveness", "NOT_SERVING")
    assert _becomes(running.target, "", "NOT_SERVING")
    with pytest.raises(StreamInterrupted) as refused:
        run_stream(running.target, "sample")
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE and "broken" in str(refused.value)


def test_a_crashed_scheduler_fails_its_streams_and_flips_liveness(make_server, monkeypatch):
    from streamstt.server.stream import planning

    running = make_server()
    assert _becomes(running.target, "liveness", "SERVING")

    def broken_planner(*args, **kwargs):
        raise RuntimeError("planner bug")

    monkeypatch.setattr(planning, "next_job", broken_planner)
    with pytest.raises(StreamInterrupted) as caught:
        run_stream(running.target, "sample")
    assert caught.value.code == grpc.StatusCode.INTERNAL
    assert "scheduler crashed" in str(caught.value)
    assert _becomes(running.target, "liveness", "NOT_SERVING")


def test_a_stream_that_fails_on_its_result_ends_alone(make_server, monkeypatch):
    from streamstt.server.stream import steps

    running = make_server()
    real = steps.on_interim
    monkeypatch.setattr(steps, "on_interim", lambda *a: (_ for _ in ()).throw(KeyError("bug")))
    with pytest.raises(StreamInterrupted) as caught:
        run_stream(running.target, "sample")
    assert caught.value.code == grpc.StatusCode.INTERNAL
    monkeypatch.setattr(steps, "on_interim", real)
    assert finals(run_stream(running.target, "sample"))  # the scheduler serves on
    assert _becomes(running.target, "liveness", "SERVING")
