"""`streamstt mic` through a real audio device: a PulseAudio null sink whose monitor is the
default source, speech played into the sink with paplay, then Ctrl-C (SIGINT).

On CI (`CI` set, as `.ci/run` does) a machine where PulseAudio cannot start fails the test
with the reason; elsewhere the test is skipped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import pytest
from conftest import DATA, reference, unavailable, wer

SINK = "streamstt_mic"
# Time from Ctrl-C to the final is a speed figure (benchmarks/mic_ctrl_c.sh, recorded in
# docs/benchmarks.md), not a test bar: on a slow CPU the final's decode alone takes seconds.
FINISH_TIMEOUT_S = "60"


def _unavailable(reason: str) -> NoReturn:
    unavailable(
        f"no PulseAudio for the microphone test: {reason}",
        "pulseaudio, pulseaudio-utils, libportaudio2",
    )


@pytest.fixture
def pulse(tmp_path: Path):
    """A private PulseAudio daemon with a null sink; ALSA's default routed to it. Yields the
    environment a client needs to use it."""
    if not (shutil.which("pulseaudio") and shutil.which("paplay") and shutil.which("pactl")):
        _unavailable("pulseaudio / paplay / pactl not installed")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    (tmp_path / ".asoundrc").write_text(
        "pcm.!default { type pulse }\nctl.!default { type pulse }\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)}
    started = subprocess.run(
        ["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
         "-L", "module-native-protocol-unix", "-L", f"module-null-sink sink_name={SINK}"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if started.returncode != 0:
        _unavailable(f"pulseaudio exited {started.returncode}: {started.stderr.strip()}")
    try:
        for command in (["set-default-source", f"{SINK}.monitor"], ["set-default-sink", SINK]):
            subprocess.run(["pactl", *command], env=env, check=True, timeout=30)
        yield env
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True, timeout=30)


def _lines(stream, into: list[str], seen: threading.Event) -> None:
    for line in stream:
        into.append(line)
        if line.startswith("listening"):
            seen.set()


@contextlib.contextmanager
def _listening_mic(env: dict[str, str], target: str):
    """`streamstt mic` against `target`, once it says it is listening; yields the process
    and the lines of its stdout and stderr as they come. Killed on the way out if still up."""
    mic = subprocess.Popen(
        [
            sys.executable, "-m", "streamstt.client.cli", "mic", "--server", target,
            "--finish-timeout-s", FINISH_TIMEOUT_S,
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    listening = threading.Event()
    readers = [
        threading.Thread(target=_lines, args=(mic.stdout, out, threading.Event()), daemon=True),
        threading.Thread(target=_lines, args=(mic.stderr, err, listening), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        assert listening.wait(60), f"mic never listened: {''.join(err)}"
        yield mic, out, err
    finally:
        if mic.poll() is None:
            mic.kill()
        for reader in readers:
            reader.join(10)


def test_mic_ctrl_c_prints_the_final_and_exits_zero(pulse, server):
    with _listening_mic(pulse, server.target) as (mic, out, err):
        # No silence after the speech: the final can only come from the half-close.
        subprocess.run(
            ["paplay", f"--device={SINK}", str(DATA / "en_us_female.wav")],
            env=pulse, check=True, timeout=60,
        )  # fmt: skip
        time.sleep(0.2)  # the sink's monitor latency: the last words reach the client
        signalled = time.monotonic()
        mic.send_signal(signal.SIGINT)
        code = mic.wait(90)
        took = time.monotonic() - signalled
    assert code == 0, "".join(err)
    print(f"{took:.2f} s from Ctrl-C to exit")
    finals = [line.strip() for line in out if line.strip()]
    assert finals, f"no final printed; stderr: {''.join(err)}"
    assert wer([reference("en_us_female")], [" ".join(finals)]) <= 0.10, finals
    assert not any(line.startswith("... ") for line in out), "partials leaked to stdout"


def test_mic_second_ctrl_c_exits_at_once(pulse, server):
    with _listening_mic(pulse, server.target) as (mic, _, _):
        mic.send_signal(signal.SIGINT)
        time.sleep(0.3)  # signals arriving together are handled once
        mic.send_signal(signal.SIGINT)
        assert mic.wait(10) == 130


def test_mic_list_devices_marks_inputs(pulse):
    done = subprocess.run(
        [sys.executable, "-m", "streamstt.client.cli", "mic", "--list-devices"],
        env=pulse, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert any(row.startswith("* in") for row in rows), rows  # the default input
    assert rows[-1] == "in = input device; * = default input"
