"""Scale-out on loopback: three server processes, one balanced client.

The client spreads new streams round-robin over the replicas whose health says SERVING; a
replica that gets SIGTERM drains (its streams end with their finals) and gets no new streams;
a replica that dies mid-stream is survived by `stream_resumable`, which replays the audio after
the last final on another replica. Every stream has a deadline, so none can hang the test.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from conftest import DATA, reference, utterance_times, wer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_cli import spawn_server

from streamstt.client.client import (
    AsyncStreamingClient,
    StreamingClient,
    StreamInterrupted,
    file_chunks,
    streaming_config,
)

REPLICAS = 3
STREAMS = 12
GRACE_S = 30  # drain grace: generous, three servers share two cores here
CLIPS = ["en_us_male", "en_us_female", "sample", "en_hts_female"]


@pytest.fixture(scope="module")
def replicas():
    """Three `streamstt serve` processes, started together (one core's worth of threads each)."""
    with ThreadPoolExecutor(REPLICAS) as pool:
        started = list(
            pool.map(
                lambda i: spawn_server(
                    "--threads",
                    "1",
                    "--replica-name",
                    f"r{i}",
                    "--grace-s",
                    str(GRACE_S),
                    "--max-streams",
                    "8",
                    "--admission-utilization",
                    "1000000",
                ),  # fmt: skip
                range(REPLICAS),
            )
        )
    yield started
    for process, _ in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


class Outcome:
    def __init__(self) -> None:
        self.replica = ""
        self.finals: list = []
        self.error: StreamInterrupted | None = None
        self.started = threading.Event()


def _run_stream(client: StreamingClient, clip: str, outcome: Outcome, pace_s: float) -> None:
    rate, channels, chunks = file_chunks(DATA / f"{clip}.wav", 100)
    config = streaming_config(rate, channels=channels, interim_results=False)

    def on_replica(name: str) -> None:
        outcome.replica = name
        outcome.started.set()

    try:
        for response in client.stream(
            config, chunks, pace_s=pace_s, timeout=90, on_replica=on_replica
        ):
            outcome.finals.extend(r for r in response.results if r.is_final)
    except StreamInterrupted as exc:
        outcome.error = exc
    finally:
        outcome.started.set()


def _text(finals) -> str:
    return " ".join(f.alternatives[0].transcript for f in finals if f.alternatives)


def test_streams_spread_and_drain_on_sigterm(replicas):
    targets = [target for _, target in replicas]
    names = {f"r{i}": process for i, (process, _) in enumerate(replicas)}
    with StreamingClient(targets) as client:
        client.wait_ready(30)
        time.sleep(1.0)  # every subchannel's first health answer is in
        outcomes = [Outcome() for _ in range(STREAMS)]
        threads = []
        for i, outcome in enumerate(outcomes):
            clip = CLIPS[i % len(CLIPS)]
            thread = threading.Thread(target=_run_stream, args=(client, clip, outcome, 0.1))
            thread.start()
            threads.append(thread)
            assert outcome.started.wait(30), f"stream {i} did not start"
        spread = Counter(o.replica for o in outcomes)
        assert set(spread) == set(names), spread
        assert max(spread.values()) - min(spread.values()) <= 1, spread  # round-robin

        # SIGTERM one replica while its streams are mid-audio.
        victim = outcomes[-1].replica
        names[victim].send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.5)
        assert _health(targets[int(victim[1:])]) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert _health(targets[int(victim[1:])], "liveness") == (
            health_pb2.HealthCheckResponse.SERVING
        )

        # New streams go to the other replicas.
        late = [Outcome() for _ in range(4)]
        late_threads = [
            threading.Thread(target=_run_stream, args=(client, "sample", o, 0.0)) for o in late
        ]
        for thread in late_threads:
            thread.start()
        for thread in threads + late_threads:
            thread.join(120)
            assert not thread.is_alive(), "a stream hung"

    for i, outcome in enumerate(outcomes):
        clip = CLIPS[i % len(CLIPS)]
        assert outcome.error is None, (i, outcome.replica, outcome.error)
        assert wer([reference(clip)], [_text(outcome.finals)]) <= 0.15, (i, outcome.finals)
    for outcome in late:
        assert outcome.error is None, (outcome.replica, outcome.error)
        assert outcome.replica != victim
        assert wer([reference("sample")], [_text(outcome.finals)]) <= 0.15
    assert names[victim].wait(GRACE_S + 5) == 0
    assert time.monotonic() - signalled < GRACE_S + 2


def test_resumable_stream_survives_a_dying_replica(replicas):
    """SIGKILL the replica serving a stream after its first final: the stream continues on
    another replica from the end of that final, with one timeline and no lost words."""
    alive = [(p, t) for p, t in replicas if p.poll() is None]
    assert len(alive) >= 2
    rate, channels, chunks = file_chunks(DATA / "two_utterances.wav", 100)
    config = streaming_config(rate, channels=channels, interim_results=False)
    served_by: list[str] = []
    finals = []
    with StreamingClient([t for _, t in alive]) as client:
        client.wait_ready(30)
        time.sleep(1.0)
        stream = client.stream_resumable(
            config, chunks, pace_s=0.1, timeout=60, on_replica=served_by.append
        )
        for response in stream:
            for result in response.results:
                if result.is_final:
                    finals.append(result)
                    if len(finals) == 1:  # kill the replica mid second utterance
                        time.sleep(1.0)
                        victim = int(served_by[-1][1:])
                        replicas[victim][0].kill()
    assert len(served_by) == 2 and served_by[0] != served_by[1], served_by
    texts = [f.alternatives[0].transcript for f in finals]
    expected = [u["text"] for u in utterance_times()["utterances"]]
    assert wer([" ".join(expected)], [" ".join(texts)]) <= 0.10, texts
    assert [f.utterance_index for f in finals] == list(range(len(finals)))
    # The resumed stream's word times are on the original timeline.
    last_word = finals[-1].alternatives[0].words[-1]
    second = utterance_times()["utterances"][1]
    assert abs(last_word.end_time.ToNanoseconds() / 1e9 - second["end_s"]) <= 0.3


def test_async_client_resumes_too(replicas):
    """The asyncio client on the replicas still alive: a balanced, resumable stream."""
    alive = [t for p, t in replicas if p.poll() is None]
    rate, channels, chunks = file_chunks(DATA / "sample.wav", 100)
    config = streaming_config(rate, channels=channels, interim_results=False)
    served: list[str] = []

    async def run() -> list:
        async with AsyncStreamingClient(alive) as client:
            stream = client.stream_resumable(config, chunks, timeout=60, on_replica=served.append)
            return [r async for response in stream for r in response.results if r.is_final]

    finals = asyncio.run(run())
    assert served and wer([reference("sample")], [_text(finals)]) <= 0.15
