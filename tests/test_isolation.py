"""One careless or hostile caller must not stall, lock out or lose the others' audio: Recognize
as scheduled work, flow control for fast senders, finals on the drain and the idle timeout."""

from __future__ import annotations

import io
import time

import grpc
import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import load_clip, reference, wer
from test_server import finals, run_stream

from streamstt.client.client import StreamInterrupted, recognize_request
from streamstt.v1 import asr_pb2_grpc


def _wav(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def _long_read_twice(rate: int = 16000) -> bytes:
    """62 s of read speech (two 31 s windows' worth and more) as a WAV file."""
    audio = load_clip("long_read")
    audio = np.concatenate([audio, audio])
    if rate != 16000:
        audio = soxr.resample(audio, 16000, rate)
    return _wav(audio, rate)


class _BatchLog:
    """The stream ids of every model call, in order (the scheduler's fault seam)."""

    def __init__(self, scheduler) -> None:
        self.batches: list[list[str]] = []
        scheduler.fault_hook = self.batches.append

    def recognize_windows(self) -> list[int]:
        return [i for i, ids in enumerate(self.batches) if ids[0].startswith("r")]


def test_recognize_runs_window_by_window_between_live_decodes(make_server):
    running = make_server()
    log = _BatchLog(running.scheduler)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(running.target))
    call = stub.Recognize.future(recognize_request(_long_read_twice()), timeout=120)
    live = run_stream(running.target, "two_utterances", pace=0.1)  # real time
    response = call.result()
    text = " ".join(r.alternatives[0].transcript for r in response.results)
    assert wer([reference("long_read") + " " + reference("long_read")], [text]) <= 0.1, text
    windows = log.recognize_windows()
    assert len(windows) >= 3, log.batches  # 62 s: at least three 30 s windows
    between = log.batches[windows[0] : windows[-1]]
    assert any(ids[0].startswith("s") for ids in between), log.batches  # live work interleaved
    assert all(len(ids) == 1 for ids in log.batches if ids[0].startswith("r"))
    assert finals(live) and running.running.servicer.active == {}


def test_recognize_calls_in_flight_are_bounded(make_server):
    running = make_server(max_recognize_calls=1)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(running.target))
    first = stub.Recognize.future(recognize_request(_long_read_twice()), timeout=120)
    deadline = time.monotonic() + 30
    while not running.running.servicer.active and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Recognize(recognize_request(_wav(load_clip("sample"), 16000)), timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_recognize_calls=1" in caught.value.details()
    assert first.result().results


def test_a_cancelled_recognize_decodes_no_more_windows(make_server):
    running = make_server()
    log = _BatchLog(running.scheduler)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(running.target))
    call = stub.Recognize.future(recognize_request(_long_read_twice()), timeout=120)
    deadline = time.monotonic() + 30
    while not log.recognize_windows() and time.monotonic() < deadline:
        time.sleep(0.01)
    call.cancel()
    while running.running.servicer.active and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.0)  # any window still scheduled would run now
    assert running.running.servicer.active == {}
    assert len(log.recognize_windows()) <= 2, log.batches  # the one running, maybe the next


def test_recognize_takes_a_48khz_file_over_4_mib(server):
    """The message limit follows max_recognize_seconds: 62 s of 48 kHz PCM is 5.9 MB."""
    data = _long_read_twice(48000)
    assert len(data) > 4 * 1024 * 1024
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(server.target))
    response = stub.Recognize(recognize_request(data), timeout=120)
    assert response.total_audio.ToTimedelta().total_seconds() > 60


def test_recognize_counts_in_max_streams(make_server):
    running = make_server(max_streams=1)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(running.target))
    first = stub.Recognize.future(recognize_request(_long_read_twice()), timeout=120)
    deadline = time.monotonic() + 30
    while not running.running.servicer.active and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(StreamInterrupted) as caught:
        run_stream(running.target, "sample")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.result()
