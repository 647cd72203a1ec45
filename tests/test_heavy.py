"""Long reliability tests (marker `heavy`; run by benchmarks/heavy.sh, not in every CI run)."""

from __future__ import annotations

import asyncio
import gc
import resource
import statistics
import time

import grpc
import pytest
from conftest import DATA

from streamstt.client.client import file_chunks
from streamstt.models.memory import trim_heap
from streamstt.v1 import asr_pb2, asr_pb2_grpc

pytestmark = pytest.mark.heavy
CANCELS = 1000
WARM_UP_S = 20  # seconds of the held load before memory is expected to be flat


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_thousand_cancels_leave_nothing_behind(make_server):
    """Streams cancelled mid-way (some mid-speech): streams, per-stream state and asyncio
    tasks return to their baseline and memory stays flat."""
    running = make_server(max_streams=64, admission_utilization=1e6)
    rate, _, chunks = file_chunks(DATA / "sample.wav", 100)
    config = asr_pb2.StreamingRecognizeRequest(
        streaming_config=asr_pb2.StreamingRecognitionConfig(
            config=asr_pb2.RecognitionConfig(encoding=asr_pb2.LINEAR16, sample_rate_hertz=rate),
            interim_results=True,
        )
    )

    def tasks() -> int:
        return running.call(_count_tasks())

    channel = grpc.insecure_channel(running.target)
    stub = asr_pb2_grpc.RecognizerStub(channel)
    baseline_tasks = tasks()
    memory = []
    for i in range(CANCELS):
        count = 1 + i % 12  # 0.1-1.2 s of speech before the cancel

        def requests(count=count):
            yield config
            for chunk in chunks[:count]:
                yield asr_pb2.StreamingRecognizeRequest(audio_content=chunk)
            time.sleep(0.01)

        call = stub.StreamingRecognize(requests(), timeout=30)
        time.sleep(0.005)
        call.cancel()
        if i % 200 == 199:
            # live memory: the allocator's free lists swing RSS by ~30 MB (measured 502-531
            # MB untrimmed, no trend), as the held-load test found
            trim_heap()
            memory.append(_rss_mb())
    channel.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        running.running.servicer.active or running.scheduler.streams
    ):
        time.sleep(0.2)
    assert not running.running.servicer.active
    assert not running.scheduler.streams
    gc.collect()
    assert tasks() <= baseline_tasks + 2
    # Even trimmed, the 200-cancel marks swing by ~30 MB with no trend (measured this
    # session, old and new code alike: 447-472 MB at the first mark, 460-491 MB later), so the
    # last mark is held against the higher of the first two: a leak of 50 kB per cancel
    # still shows as +30 MB (over the 5 % bar) across the last 600 cancels.
    early = max(memory[:2])
    assert memory[-1] - early < 0.05 * early, memory


async def _count_tasks() -> int:
    await asyncio.sleep(0.5)  # let cancelled handlers unwind
    return len(asyncio.all_tasks())


def test_graceful_shutdown_under_twenty_streams():
    """SIGTERM with 20 streams running: NOT_SERVING at once, new streams UNAVAILABLE, streams
    that end within the grace get their finals and OK, exit within grace + 2 s."""
    import signal
    import threading

    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from test_cli import spawn_server

    from streamstt.client.client import StreamingClient, StreamInterrupted, streaming_config

    grace = 20.0  # 20 streams finishing on 2 cores need more than the 10 s default
    process, target = spawn_server(
        "--grace-s", str(grace), "--max-streams", "24", "--admission-utilization", "1000000"
    )
    rate, channels, chunks = file_chunks(DATA / "sample.wav", 100)
    outcomes: list[object] = []
    lock = threading.Lock()

    def talk() -> None:
        try:
            with StreamingClient(target) as client:
                responses = list(
                    client.stream(
                        streaming_config(rate, channels=channels),
                        chunks[:30],
                        pace_s=0.1,
                        timeout=60,
                    )
                )
            result = [r for resp in responses for r in resp.results if r.is_final]
        except StreamInterrupted as exc:
            result = exc.code
        with lock:
            outcomes.append(result)

    try:
        threads = [threading.Thread(target=talk) for _ in range(20)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        channel = grpc.insecure_channel(target)
        time.sleep(0.3)
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        channel.close()
        with pytest.raises(StreamInterrupted) as refused, StreamingClient(target) as late:
            list(late.stream(streaming_config(16000), [b"\0\0" * 1600], timeout=10))
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        for thread in threads:
            thread.join(60)
        assert process.wait(grace + 5) == 0
        assert time.monotonic() - signalled < grace + 2
    finally:
        if process.poll() is None:
            process.kill()
    assert len(outcomes) == 20
    assert all(isinstance(o, list) and o for o in outcomes), outcomes


def test_load_held_for_a_minute(make_server, tmp_path):
    """Two real-time streams for 60 s (what this 2-core machine holds within a 2 s
    budget, docs/benchmarks.md): no errors, p95 emission within budget, no lag growth,
    batches of more than one stream on average, median live memory (RSS after a heap trim)
    of the last third of the held load within 5 % of the first third's."""
    import json
    import subprocess
    import sys
    import threading

    import numpy as np
    import soundfile

    clips = ["long_read", "two_utterances", "en_us_female", "en_us_male", "sample"]
    pause = np.zeros(16000, dtype=np.float32)
    pieces = []
    for name in clips * 2:
        samples, _ = soundfile.read(DATA / f"{name}.wav", dtype="float32")
        pieces += [samples, pause]
    audio = tmp_path / "minute.wav"
    soundfile.write(audio, np.concatenate(pieces), 16000)
    running = make_server(max_streams=8, max_wait_ms=60)  # let the two streams share batches
    samples: list[float] = []
    done_sampling = threading.Event()

    def sample_memory() -> None:
        while not done_sampling.wait(1.0):
            # return freed heap first: glibc keeps freed memory resident until a trim (the
            # scheduler trims every 64 batches), a sawtooth of ~200 MB that is not a leak
            trim_heap()
            samples.append(_rss_mb())

    # a daemon, stopped before any assertion: a failing test must not leave it running
    # (pytest would wait for it at exit)
    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    batches_before = running.scheduler.stats.batches
    steps_before = running.scheduler.stats.steps
    out = tmp_path / "bench"
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamstt.client.cli",
                "bench",
                "--server",
                running.target,
                "--audio",
                str(audio),
                "--streams",
                "2",
                "--stagger-ms",
                "300",
                "--duration-s",
                "60",
                "--latency-budget-ms",
                "2000",
                "--budget-ms",
                "2000",
                "--no-plots",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        done_sampling.set()
        sampler.join(5)
    assert done.returncode == 0, done.stderr[-2000:]
    level = json.loads((out / "report.json").read_text())["systems"]["streamstt"]["levels"][0]
    assert level["errors"] == {} or not level["errors"], level["errors"]
    assert level["emission_ms"]["p95"] < 2000, level["emission_ms"]
    assert not level["lag_growth"]
    stats = running.scheduler.stats
    assert (stats.steps - steps_before) / (stats.batches - batches_before) > 1.0
    # after the first utterances have been decoded: a leak raises the typical level from
    # one third of the held load to the last; one long final's activations do not
    held = samples[WARM_UP_S:]
    third = len(held) // 3
    early, late = statistics.median(held[:third]), statistics.median(held[-third:])
    print("live RSS MB, once a second:", [round(x) for x in samples])  # shown with -s
    assert late < early * 1.05, ([round(x) for x in samples], early, late)
