"""Shared fixtures: the real model, real audio, a real server on a loopback port."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import jiwer
import numpy as np
import pytest
import soundfile
import torch

DATA = Path(__file__).parent / "data"
# Clean speech clips with references (espeak_hard is a deliberately hard voice: no WER bar).
SPEECH_CLIPS = ["en_us_male", "en_us_female", "en_scottish_fast", "en_hts_female", "sample"]
THREADS = 2

torch.set_num_threads(THREADS)


def unavailable(message: str, installs: str) -> NoReturn:
    """A system tool or service a test needs is missing: skipped on a developer's machine,
    failed in CI (`CI` set), where .ci/run installs `installs`."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (.ci/run installs {installs})")
    pytest.skip(message)


def normalise(text: str) -> str:
    """Lower-case, punctuation removed, hyphens split (the WER convention of the tests)."""
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split())


def wer(references: list[str], hypotheses: list[str]) -> float:
    return jiwer.wer([normalise(r) for r in references], [normalise(h) for h in hypotheses])


def reference(name: str) -> str:
    return (DATA / f"{name}.txt").read_text().strip()


def load_clip(name: str) -> np.ndarray:
    samples, rate = soundfile.read(DATA / f"{name}.wav", dtype="float32")
    assert rate == 16000
    return samples


def wait_until(condition, timeout_s: float = 30.0, poll_s: float = 0.02) -> bool:
    """Poll `condition()` until it holds or `timeout_s` passes; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def utterance_times() -> dict:
    return json.loads((DATA / "two_utterances.json").read_text())


def pytest_collection_modifyitems(config, items) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def transcriber():
    """The bundled tiny.en at the precision `auto` picks on this machine."""
    from streamstt.models.transcriber import Transcriber

    return Transcriber.load()


@pytest.fixture(scope="session")
def transcriber_fp32():
    from streamstt.models.transcriber import Transcriber

    return Transcriber.load(precision="fp32", device="cpu")


class ServerThread:
    """A real server (its own event loop, in a thread) on 127.0.0.1:<free port>."""

    def __init__(self, config, transcriber) -> None:
        self.config, self.transcriber = config, transcriber
        self.loop = asyncio.new_event_loop()
        self.running = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from streamstt.server.app import start_server

        asyncio.set_event_loop(self.loop)
        try:
            self.running = self.loop.run_until_complete(start_server(self.config, self.transcriber))
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc
        self._ready.set()
        if self._error is None:
            self.loop.run_forever()

    def start(self) -> ServerThread:
        self.thread.start()
        self._ready.wait(120)
        if self._error is not None:
            raise self._error
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def scheduler(self):
        return self.running.scheduler

    def call(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        if self.running is not None and self.loop.is_running():
            self.call(self.running.drain_and_stop(), timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def server_config(**overrides):
    from streamstt.server.settings import ServerConfig

    return replace(ServerConfig(port=0, log_json=False), **overrides)


@pytest.fixture(scope="session")
def server(transcriber) -> Iterator[ServerThread]:
    running = ServerThread(server_config(max_streams=8, idle_timeout_s=20), transcriber).start()
    yield running
    running.stop()


@pytest.fixture
def make_server(transcriber):
    """Start servers with special limits; stopped at the end of the test."""
    started: list[ServerThread] = []

    def make(**overrides) -> ServerThread:
        running = ServerThread(server_config(**overrides), transcriber).start()
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()
