"""A stream in virtual time: audio is fed to a real `StreamSession` 100 ms at a time, and
every decode the session asks for runs at once on the model, as if the model were
infinitely fast. Only the session's own rules then decide what is decoded when, so a replay
gives the same result on every run; at real time, where each window ends depends on how
busy the machine is. Benchmarks judge engine rules this way before a real-time run
(benchmarks/replay.py), and tests check what the rules guarantee without the load's noise.
"""

from __future__ import annotations

import numpy as np

from streamstt.models.transcriber import Transcriber
from streamstt.server.settings import ServerConfig, StreamSettings
from streamstt.server.stream.events import Final, Interim
from streamstt.server.stream.outbox import Outbox
from streamstt.server.stream.session import StreamSession, Timing
from streamstt.server.stream.vad import SileroVad
from streamstt.v1 import asr_pb2

CHUNK_SAMPLES = 1600  # 100 ms of 16 kHz audio a request, as the bench sends
DEFAULTS = ServerConfig()


def replay_settings() -> StreamSettings:
    """A LINEAR16 16 kHz mono stream with interims, word times and the server's defaults."""
    return StreamSettings(
        asr_pb2.LINEAR16, 16000, 1, True, False, DEFAULTS.latency_budget_ms,
        DEFAULTS.silence_ms, DEFAULTS.max_utterance_ms, True, True, True,
    )  # fmt: skip


async def replay(
    model: Transcriber,
    vad: SileroVad,
    audio: np.ndarray,
    phrases: str = "",
    hotwords: tuple[tuple[str, float], ...] = (),
    schedule: tuple[int, int] = (1, 0),
) -> list[Final | Interim]:
    """One stream of `audio` (16 kHz float) through a session: its finals and interims, each
    stamped with the stream time it came at (`progress.received_s`). `phrases`: the stream's
    phrase hints as prompt text, `hotwords`: its boosted phrases (server.validation).
    `schedule` (every, phase): decodes run after the n-th chunk where (n + phase) % every is
    0, so that a model busy for `every` chunks is replayed, still the same on every run."""
    events: list[Final | Interim] = []

    async def at_once(fn, *args):
        return fn(*args)

    def record(event) -> None:
        if isinstance(event, Final | Interim):
            events.append(event)

    session = StreamSession(
        replay_settings(), Outbox(1 << 30, 1e9), prefetch=at_once, vad=vad,
        notify=lambda: None, max_samples=1 << 40, on_event=record, phrases=phrases,
        hotwords=hotwords,
    )  # fmt: skip
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    every, phase = schedule
    for n, start in enumerate(range(0, len(pcm), 2 * CHUNK_SAMPLES), 1):
        await session.feed(pcm[start : start + 2 * CHUNK_SAMPLES])
        if (n + phase) % every == 0:
            _decode_due(model, session)
    await session.finish()
    _decode_due(model, session)
    return events


def _decode_due(model: Transcriber, session: StreamSession) -> None:
    while (job := session.next_job()) is not None:
        (transcript,) = model.transcribe_batch([session.request(job)], job.options)
        session.deliver(job, transcript, Timing(0.0, 0.0))
