"""The command line as a user runs it: serve, stream, transcribe, and a SIGTERM drain."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from conftest import DATA, reference, wer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamstt.client.client import (
    StreamingClient,
    StreamInterrupted,
    file_chunks,
    streaming_config,
)

STREAMSTT = [sys.executable, "-m", "streamstt.client.cli"]
ROOT = Path(__file__).resolve().parents[1]


def spawn_server(*flags: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "STREAMSTT_THREADS": "2"}
    process = subprocess.Popen(
        [*STREAMSTT, "serve", "--port", "0", "--no-log-json", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError("server did not start")


@pytest.fixture
def served():
    process, target = spawn_server("--grace-s", "8")
    yield process, target
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_transcribe_command_text_and_json():
    done = subprocess.run(
        [*STREAMSTT, "transcribe", "--precision", "fp32", str(DATA / "sample.wav")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout.strip()
    assert wer([reference("sample")], [text]) <= 0.10
    done = subprocess.run(
        [*STREAMSTT, "transcribe", "--precision", "fp32", "--json", str(DATA / "sample.wav")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    report = json.loads(done.stdout)
    # the text does not depend on the word times that only --json computes (one precision:
    # `auto` measures at each start and may pick another decoder)
    assert report["text"] == text
    assert report["words"] and all(
        {"word", "start", "end", "confidence"} <= set(w) for w in report["words"]
    )


def test_transcribe_errors_are_messages_not_tracebacks(tmp_path):
    done = subprocess.run(
        [*STREAMSTT, "transcribe", "--model", str(tmp_path / "missing"), str(DATA / "sample.wav")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 2 and "no such model" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_then_stream_realtime_shows_partials_and_final(served):
    process, target = served

    def health(service: str) -> subprocess.CompletedProcess:  # the container HEALTHCHECK
        return subprocess.run(
            [*STREAMSTT, "health", "--server", target, "--service", service],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    for service in ("", "liveness"):
        check = health(service)
        assert check.returncode == 0 and "SERVING" in check.stdout, check
    unknown = health("no.such.Service")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr, unknown
    done = subprocess.run(
        [*STREAMSTT, "stream", str(DATA / "sample.wav"), "--realtime", "--server", target],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()  # not a terminal: finals alone, partials on stderr
    partials = [line for line in done.stderr.splitlines() if line.startswith("... ")]
    finals = [line for line in lines if line.strip()]
    assert len(partials) >= 3, done.stderr
    assert len(finals) == 1 and wer([reference("sample")], finals) <= 0.10, lines
    remote = subprocess.run(
        [*STREAMSTT, "transcribe", "--server", target, str(DATA / "en_us_male.ogg")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert wer([reference("en_us_male")], [remote.stdout]) <= 0.10, remote.stdout


def test_transcribe_server_streams_a_file_too_big_for_one_message(served, tmp_path):
    """62 s of 48 kHz stereo (11.9 MB): more than a server's message limit, so it is streamed."""
    import numpy as np
    import soundfile
    import soxr
    from conftest import load_clip

    _, target = served
    audio = soxr.resample(np.tile(load_clip("long_read"), 2), 16000, 48000)
    path = tmp_path / "long.wav"
    soundfile.write(path, np.stack([audio, audio], axis=1), 48000, subtype="PCM_16")
    assert path.stat().st_size > 8 * 1024 * 1024
    done = subprocess.run(
        [*STREAMSTT, "transcribe", "--server", target, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    said = reference("long_read") + " " + reference("long_read")
    assert wer([said], [done.stdout]) <= 0.10, done.stdout


def test_sigterm_drains_streams_and_exits_zero(served):
    process, target = served
    rate, channels, chunks = file_chunks(DATA / "en_us_female.wav", 100)
    outcome: dict[str, object] = {}

    def talk() -> None:
        with StreamingClient(target) as client:
            responses = list(
                client.stream(
                    streaming_config(rate, channels=channels), chunks, pace_s=0.1, timeout=60
                )
            )
            outcome["finals"] = [r for resp in responses for r in resp.results if r.is_final]

    stream = threading.Thread(target=talk)
    stream.start()
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    channel = grpc.insecure_channel(target)
    health = health_pb2_grpc.HealthStub(channel)
    time.sleep(0.3)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(StreamInterrupted) as refused, StreamingClient(target) as late:
        list(late.stream(streaming_config(16000), [b"\0\0" * 1600], timeout=10))
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    channel.close()
    stream.join(30)
    assert outcome.get("finals"), outcome
    text = outcome["finals"][0].alternatives[0].transcript
    assert wer([reference("en_us_female")], [text]) <= 0.15
    assert process.wait(20) == 0
    assert time.monotonic() - signalled < 8 + 2


def test_every_flag_of_every_subcommand_says_what_it_is():
    """`--help` is where people look: no flag without a description, and the server's
    options come in their groups (network, limits, model, security, observability, ...)."""
    import argparse

    from streamstt.client.cli import build_parser
    from streamstt.server.settings import GROUPS, OPTIONS, ServerConfig

    parser = build_parser()
    (subcommands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, sub in subcommands.choices.items()
        for action in sub._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert not missing, missing
    options = {name for group in OPTIONS.values() for name in group}
    assert options == {f.name for f in dataclasses.fields(ServerConfig)}
    assert set(OPTIONS) == set(GROUPS)
    serve_help = subcommands.choices["serve"].format_help()
    assert all(f"\n{group}:" in serve_help for group in GROUPS), serve_help


@pytest.mark.parametrize("beams", ["0", "17"])
def test_a_final_beam_size_out_of_range_refuses_to_start(beams):
    """--final-beam-size (ServerConfig.final_beam_size) is checked before the model loads."""
    done = subprocess.run(
        [sys.executable, "-m", "streamstt.client.cli", "serve", "--port", "0",
         "--final-beam-size", beams],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"final_beam_size {beams} is outside 1-16" in done.stderr
    assert "Traceback" not in done.stderr
