"""The real server on a loopback port, real speech through the real model."""

from __future__ import annotations

import re
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import torch
from conftest import DATA, load_clip, reference, utterance_times, wer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamstt.client.client import (
    StreamingClient,
    StreamInterrupted,
    file_chunks,
    pcm16,
    streaming_config,
)
from streamstt.v1 import asr_pb2, asr_pb2_grpc

CHUNK_MS = 100
FAST_PACE = 0.02  # seconds between 100 ms chunks: 5x real time


def run_stream(target: str, name: str, pace: float = FAST_PACE, **config_args):
    rate, channels, chunks = file_chunks(DATA / f"{name}.wav", CHUNK_MS)
    config = streaming_config(rate, channels=channels, **config_args)
    with StreamingClient(target) as client:
        return list(client.stream(config, chunks, pace_s=pace, timeout=120))


def finals(responses) -> list:
    return [r for resp in responses for r in resp.results if r.is_final]


def interims(responses) -> list[str]:
    return [
        " ".join(r.alternatives[0].transcript for r in resp.results)
        for resp in responses
        if resp.results and not resp.results[0].is_final
    ]


def test_health_serving_and_list_models(server):
    channel = grpc.insecure_channel(server.target)
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="streamstt.v1.Recognizer"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    models = asr_pb2_grpc.RecognizerStub(channel).ListModels(asr_pb2.ListModelsRequest())
    (model,) = models.models
    assert model.name == "tiny.en" and model.is_default and model.device == "cpu"
    assert model.precision
    channel.close()


def test_health_not_serving_at_capacity_but_alive(make_server):
    """At max_streams, readiness ("") turns NOT_SERVING so balancers send new streams
    elsewhere; liveness stays SERVING; a refused stream carries the retry trailer; when the
    stream ends the replica is ready again."""
    running = make_server(max_streams=1, admission_utilization=1e6)
    channel = grpc.insecure_channel(running.target)
    health = health_pb2_grpc.HealthStub(channel)

    def status(service: str = "") -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    assert status() == health_pb2.HealthCheckResponse.SERVING
    rate, channels, chunks = file_chunks(DATA / "en_us_male.wav", CHUNK_MS)
    replicas: list[str] = []
    with StreamingClient(running.target) as client:
        stream = client.stream(
            streaming_config(rate, channels=channels), chunks, pace_s=0.1, timeout=60,
            on_replica=replicas.append,
        )  # fmt: skip
        next(stream)
        time.sleep(0.3)
        assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
        assert status("streamstt.v1.Recognizer") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert status("liveness") == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(StreamInterrupted) as refused:
            list(client.stream(streaming_config(16000), [b"\0\0" * 1600], timeout=10))
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(refused.value.error.trailing_metadata())
        assert trailers.get("streamstt-retryable", "").startswith("max_streams")
        list(stream)
    assert replicas == [f"{socket.gethostname()}:{running.running.port}"]
    deadline = time.monotonic() + 5
    while status() != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status() == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_stream_interims_grow_and_final_matches_offline(server, transcriber):
    responses = run_stream(server.target, "en_us_female", pace=0.1)
    texts = interims(responses)
    assert len(texts) >= 3, texts
    assert max(len(t.split()) for t in texts) > len(texts[0].split())
    stable = [
        r.alternatives[0].transcript.split()
        for resp in responses
        for r in resp.results
        if not r.is_final and r.stability > 0.85
    ]
    assert stable, "nothing was committed before the final"
    for earlier, later in zip(stable, stable[1:]):  # committed words only ever grow
        assert later[: len(earlier)] == earlier
    results = finals(responses)
    assert len(results) == 1
    final = results[0].alternatives[0]
    offline = transcriber.transcribe(torch.from_numpy(load_clip("en_us_female"))).text
    assert wer([offline], [final.transcript]) <= 0.05, (offline, final.transcript)
    assert wer([reference("en_us_female")], [final.transcript]) <= 0.10
    assert final.words and 0 < final.confidence <= 1
    last = responses[-1].processing
    assert last.audio_received.ToTimedelta().total_seconds() > 6


def test_two_utterances_two_finals_with_word_times(server):
    responses = run_stream(server.target, "two_utterances")
    results = finals(responses)
    assert [r.utterance_index for r in results] == [0, 1]
    times = utterance_times()["utterances"]
    for result, expected in zip(results, times):
        words = result.alternatives[0].words
        assert wer([expected["text"]], [result.alternatives[0].transcript]) <= 0.2
        assert abs(words[0].start_time.ToTimedelta().total_seconds() - expected["start_s"]) <= 0.3
        assert abs(words[-1].end_time.ToTimedelta().total_seconds() - expected["end_s"]) <= 0.3
    transcript = " ".join(r.alternatives[0].transcript for r in results)
    assert wer([reference("two_utterances")], [transcript]) <= 0.08


def test_a_pause_final_is_decoded_ahead_at_real_time_pace(server):
    """In the 1.5 s pause the first utterance's final is decoded while silence_ms runs out
    (the model is idle); the finals are as right as ever. silence_ms 1000 leaves the model
    0.8 s of that pause after END_PAD: with the default 500 (0.3 s), an interim still
    decoding on a loaded machine (0.6 s a step in one CI run) took all of it, and the final
    was planned at the endpoint instead, as the engine does when the model is busy."""
    before = server.scheduler.stats.early_finals
    results = finals(run_stream(server.target, "two_utterances", pace=0.1, silence_ms=1000))
    assert server.scheduler.stats.early_finals > before
    times = utterance_times()["utterances"]
    assert [r.utterance_index for r in results] == [0, 1]
    for result, expected in zip(results, times):
        assert wer([expected["text"]], [result.alternatives[0].transcript]) <= 0.2
        words = result.alternatives[0].words
        assert abs(words[-1].end_time.ToTimedelta().total_seconds() - expected["end_s"]) <= 0.3


def test_audio_right_before_half_close_is_in_the_final(server):
    """The clip ends right after the last word: no silence lets the VAD end it; half-close must."""
    samples = load_clip("sample")
    last = np.nonzero(np.abs(samples) > 0.01)[0][-1]
    chunks = [pcm16(samples[i : i + 1600]) for i in range(0, last + 1, 1600)]
    with StreamingClient(server.target) as client:
        responses = list(client.stream(streaming_config(16000), chunks, timeout=60))
    text = finals(responses)[-1].alternatives[0].transcript
    assert "talking" in text.lower(), text


@pytest.mark.parametrize("name", ["silence", "noise", "hum"])
def test_non_speech_yields_no_text(server, name):
    responses = run_stream(server.target, name)
    assert not [r for resp in responses for r in resp.results], name


def test_empty_stream_ends_ok_without_results(server):
    with StreamingClient(server.target) as client:
        assert list(client.stream(streaming_config(16000), [], timeout=30)) == []


def test_streams_share_batched_model_calls(make_server):
    running = make_server(max_batch_size=4, max_wait_ms=30)
    before = running.scheduler.stats.multi_stream_batches
    errors = []

    def talk(name: str) -> None:
        try:
            run_stream(running.target, name, pace=0.05)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [
        threading.Thread(target=talk, args=(n,))
        for n in ("en_us_male", "en_us_female", "en_hts_female")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert running.scheduler.stats.multi_stream_batches > before
    assert running.scheduler.stats.max_batch >= 2
    # Interims share calls; a final (30 s window, exact kernels) runs alone.
    timeline = list(running.scheduler.stats.timeline)
    assert any(t.finals for t in timeline)
    assert all(t.size == 1 for t in timeline if t.finals)


def test_prefetch_overlaps_the_model(make_server):
    """With batches of one stream each, batch k+1's features are ready before k's model ends."""
    running = make_server(max_batch_size=1, max_wait_ms=0)
    threads = [
        threading.Thread(target=run_stream, args=(running.target, n, 0.05))
        for n in ("en_us_male", "en_us_female")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    timeline = list(running.scheduler.stats.timeline)
    overlapped = [
        b
        for a, b in zip(timeline, timeline[1:])
        if b.prep_end <= a.model_end and b.prep_start >= a.model_start
    ]
    assert overlapped, [(t.prep_start, t.prep_end, t.model_start, t.model_end) for t in timeline]


def test_a_failing_batch_fails_only_its_streams(make_server):
    running = make_server(max_batch_size=1, max_wait_ms=0)
    victims: set[str] = set()

    def hook(stream_ids: list[str]) -> None:
        if not victims:
            victims.update(stream_ids)
        if victims & set(stream_ids):
            raise RuntimeError("injected fault")

    running.scheduler.fault_hook = hook
    outcomes: dict[str, object] = {}

    def talk(name: str) -> None:
        try:
            outcomes[name] = finals(run_stream(running.target, name, pace=0.05))
        except StreamInterrupted as exc:
            outcomes[name] = exc.code

    first = threading.Thread(target=talk, args=("en_us_male",))
    first.start()
    time.sleep(1.0)
    second = threading.Thread(target=talk, args=("en_us_female",))
    second.start()
    first.join(120)
    second.join(120)
    assert outcomes["en_us_male"] == grpc.StatusCode.INTERNAL
    assert isinstance(outcomes["en_us_female"], list) and outcomes["en_us_female"]
    running.scheduler.fault_hook = None
    assert finals(run_stream(running.target, "sample"))


def test_out_of_memory_in_a_batch_is_resource_exhausted(make_server):
    running = make_server(max_batch_size=1, max_wait_ms=0)

    def hook(stream_ids: list[str]) -> None:
        raise MemoryError("simulated")

    running.scheduler.fault_hook = hook
    with pytest.raises(StreamInterrupted) as caught:
        run_stream(running.target, "sample")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_recognize_whole_file(server):
    with StreamingClient(server.target) as client:
        response = client.recognize((DATA / "en_us_male_44k_stereo.flac").read_bytes())
    text = " ".join(r.alternatives[0].transcript for r in response.results)
    assert wer([reference("en_us_male")], [text]) <= 0.10, text
    assert response.results[0].alternatives[0].words
    assert response.total_audio.ToTimedelta().total_seconds() > 6


@pytest.mark.parametrize("samples", [0, 1, 40])
def test_recognize_of_a_few_samples_is_ok_and_empty(server, samples):
    """Raw audio shorter than one analysis frame: no words, and no error."""
    config = asr_pb2.RecognitionConfig(encoding=asr_pb2.LINEAR16, sample_rate_hertz=16000)
    with StreamingClient(server.target) as client:
        response = client.recognize(b"\x01\x00" * samples, config)
    assert not any(r.alternatives[0].transcript for r in response.results)


def test_single_utterance_ends_after_the_first(server):
    responses = run_stream(server.target, "two_utterances", single_utterance=True)
    events = [r.speech_event_type for r in responses]
    assert events.count(asr_pb2.StreamingRecognizeResponse.END_OF_SINGLE_UTTERANCE) == 1
    results = finals(responses)
    assert len(results) == 1 and results[0].utterance_index == 0
    # The contract's order: the event, then the final, then nothing.
    event_at = events.index(asr_pb2.StreamingRecognizeResponse.END_OF_SINGLE_UTTERANCE)
    final_at = next(i for i, r in enumerate(responses) if any(x.is_final for x in r.results))
    assert event_at < final_at == len(responses) - 1


def test_voice_activity_events(server):
    responses = run_stream(server.target, "two_utterances", vad_events=True)
    kinds = [r.speech_event_type for r in responses if r.speech_event_type]
    begin = asr_pb2.StreamingRecognizeResponse.SPEECH_ACTIVITY_BEGIN
    end = asr_pb2.StreamingRecognizeResponse.SPEECH_ACTIVITY_END
    assert kinds == [begin, end, begin, end]


def test_client_generated_from_the_proto_alone(server, tmp_path):
    """Compile asr.proto into a fresh folder and talk to the server with that code only."""
    import subprocess
    import sys
    from pathlib import Path

    protos = Path(__file__).resolve().parents[1] / "protos"
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{protos}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(protos / "streamstt/v1/asr.proto"),
        ],
        check=True,
    )
    script = f"""
import sys, soundfile
sys.path.insert(0, {str(tmp_path)!r})
import grpc
from streamstt.v1 import asr_pb2, asr_pb2_grpc
assert asr_pb2.__file__.startswith({str(tmp_path)!r})
samples, rate = soundfile.read({str(DATA / "sample.wav")!r}, dtype='int16')
def requests():
    config = asr_pb2.RecognitionConfig(encoding=asr_pb2.LINEAR16, sample_rate_hertz=rate)
    yield asr_pb2.StreamingRecognizeRequest(
        streaming_config=asr_pb2.StreamingRecognitionConfig(config=config))
    for i in range(0, len(samples), 1600):
        yield asr_pb2.StreamingRecognizeRequest(audio_content=samples[i:i+1600].tobytes())
stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel({server.target!r}))
for response in stub.StreamingRecognize(requests(), timeout=60):
    for result in response.results:
        if result.is_final:
            print(result.alternatives[0].transcript)
"""
    # run outside the package's import path so only the generated code is used
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert wer([reference("sample")], [done.stdout]) <= 0.15, done.stdout


def test_admission_control_refuses_streams_past_measured_capacity(make_server):
    """With a tiny utilisation limit, a second stream does not fit once costs are measured."""
    running = make_server(admission_utilization=0.01)
    assert finals(run_stream(running.target, "sample"))  # measures the cost of a step
    assert running.scheduler.stats.cost_per_step_s > 0
    rate, channels, chunks = file_chunks(DATA / "en_us_female.wav", CHUNK_MS)
    holder_done = threading.Event()

    def hold() -> None:
        with StreamingClient(running.target) as client:
            list(
                client.stream(
                    streaming_config(rate, channels=channels), chunks, pace_s=0.05, timeout=60
                )
            )
        holder_done.set()

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.5)
    with pytest.raises(StreamInterrupted) as refused:
        run_stream(running.target, "sample")
    holder.join(60)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "capacity" in str(refused.value)


def test_admission_on_a_fresh_server_waits_for_the_first_measurement(make_server):
    """A stream that arrives while a fresh server's first batch is on the model is judged on
    that batch's cost, not admitted blindly because nothing was measured yet."""
    running = make_server(admission_utilization=0.01)
    scheduler = running.scheduler
    holder = threading.Thread(
        target=lambda: run_stream(running.target, "en_us_female", pace=0.05), daemon=True
    )
    holder.start()
    deadline = time.monotonic() + 30
    while not scheduler.busy and time.monotonic() < deadline:
        time.sleep(0.002)
    assert scheduler.stats.batches == 0 and scheduler.busy  # the first batch is running
    with pytest.raises(StreamInterrupted) as refused:
        run_stream(running.target, "sample")
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "capacity" in str(refused.value)
    holder.join(60)


def test_prometheus_metrics(make_server):
    import urllib.request

    running = make_server(metrics_port=0)
    assert finals(run_stream(running.target, "sample"))
    port = running.running.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'streamstt_streams_total{code="OK"} 1.0' in text
    assert "streamstt_active_streams 0.0" in text
    assert "streamstt_batch_size_count" in text and "streamstt_compute_seconds_count" in text
    emitted = [
        line
        for line in text.splitlines()
        if line.startswith("streamstt_emission_latency_seconds_count")
    ]
    assert emitted and float(emitted[0].split()[-1]) >= 10  # the sample has 14 words
    assert "streamstt_audio_seconds_total 5.3" in text


def test_reflection_lists_the_services(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    channel = grpc.insecure_channel(server.target)
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    channel.close()
    assert {"streamstt.v1.Recognizer", "grpc.health.v1.Health"} <= services


def test_microphone_without_a_device_is_a_clear_message():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "streamstt.client.cli", "mic"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode == 0:
        pytest.skip("this machine has a usable microphone")
    assert done.returncode == 2 and "no usable input device" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_tight_budget_holds_no_one_hostage(make_server):
    """Admission judges a new stream on its own budget: a stream with the smallest budget
    does not make the server refuse default-budget streams, and a new stream whose own
    budget cannot be kept is refused with the budget that would fit."""
    running = make_server()
    assert finals(run_stream(running.target, "sample"))  # measures the cost of a step
    cost = running.scheduler.stats.cost_per_step_s
    admission = running.running.servicer.admission
    # Alone, a 100 ms budget that cannot be kept is refused too (admitted, it would outrank
    # every later stream); the server's default budget alone is always admitted.
    admission.utilization = 8 * cost  # one stream's cycle is 2.5x what 100 ms allows
    with pytest.raises(StreamInterrupted) as alone:
        run_stream(running.target, "sample", latency_budget_ms=100)
    assert alone.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # One stream fits a 100 ms budget, two fit 1 s 5-fold; three miss 100 ms 3-fold.
    admission.utilization = 20 * cost
    tight = threading.Thread(
        target=run_stream,
        args=(running.target, "en_us_female"),
        kwargs={"pace": 0.1, "latency_budget_ms": 100},
        daemon=True,
    )
    tight.start()
    deadline = time.monotonic() + 30
    while not running.running.servicer.active and time.monotonic() < deadline:
        time.sleep(0.01)
    other = threading.Thread(
        target=run_stream, args=(running.target, "en_us_male"), kwargs={"pace": 0.1}, daemon=True
    )
    other.start()
    while len(running.running.servicer.active) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(running.running.servicer.active) == 2  # the default-budget stream got in
    with pytest.raises(StreamInterrupted) as refused:
        run_stream(running.target, "sample", latency_budget_ms=100)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert re.search(r"latency_budget_ms >= \d+ would fit", str(refused.value)), refused.value
    tight.join(60)
    other.join(60)
