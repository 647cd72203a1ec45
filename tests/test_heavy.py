"""Long reliability tests (marker `heavy`; run by benchmarks/heavy.sh, not in every CI run)."""

from __future__ import annotations

import asyncio
import gc
import resource
import time

import grpc
import pytest
from conftest import DATA

from streamstt.client.client import file_chunks
from streamstt.v1 import asr_pb2, asr_pb2_grpc

pytestmark = pytest.mark.heavy
CANCELS = 1000


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
            memory.append(_rss_mb())
    channel.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        running.running.servicer.active or running.scheduler.sessions
    ):
        time.sleep(0.2)
    assert not running.running.servicer.active
    assert not running.scheduler.sessions
    gc.collect()
    assert tasks() <= baseline_tasks + 2
    assert memory[-1] - memory[0] < 0.05 * memory[0], memory


async def _count_tasks() -> int:
    await asyncio.sleep(0.5)  # let cancelled handlers unwind
    return len(asyncio.all_tasks())
