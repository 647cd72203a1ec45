"""The pure streaming steps: voice activity, LocalAgreement commits, finals, resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from streamstt.server import stream as engine
from streamstt.server.ingest import StreamingResampler
from streamstt.server.settings import StreamSettings
from streamstt.server.vad import VAD_FRAME
from streamstt.v1 import asr_pb2

SETTINGS = StreamSettings(
    asr_pb2.LINEAR16, 16000, 1, True, False, 1000, 500, 20000, True, True, True
)


def words(text: str, start: float = 0.0) -> list[engine.TimedWord]:
    return [
        engine.TimedWord(w, start + i * 0.3, start + i * 0.3 + 0.25, 0.9)
        for i, w in enumerate(text.split())
    ]


def feed(state: engine.StreamState, probs: list[float]) -> list[engine.SpeechEvent]:
    audio = np.zeros(len(probs) * VAD_FRAME, dtype=np.float32)
    return engine.on_audio(state, audio, np.array(probs, dtype=np.float32))


def test_local_agreement_commits_what_two_hypotheses_share():
    state = engine.StreamState(SETTINGS)
    job = engine.Job(False, 0, 16000, "")
    engine.apply_interim(state, job, words("the cat sat"))
    assert state.committed == [] and [w.word for w in state.tentative] == ["the", "cat", "sat"]
    engine.apply_interim(state, job, words("the cat sat on the"))
    assert [w.word for w in state.committed] == ["the", "cat", "sat"]
    assert [w.word for w in state.tentative] == ["on", "the"]


def test_a_changing_hypothesis_is_not_committed():
    state = engine.StreamState(SETTINGS)
    job = engine.Job(False, 0, 16000, "")
    for text in ("could more", "good more", "would morning", "could morning"):
        engine.apply_interim(state, job, words(text))
    assert state.committed == []


def test_committed_words_are_not_repeated():
    state = engine.StreamState(SETTINGS)
    job = engine.Job(False, 0, 16000, "")
    engine.apply_interim(state, job, words("good morning how"))
    engine.apply_interim(state, job, words("good morning how are"))
    engine.apply_interim(state, job, words("good morning how are you"))
    assert [w.word for w in state.committed] == ["good", "morning", "how", "are"]


def test_speech_begin_and_endpoint_after_the_silence_limit():
    state = engine.StreamState(SETTINGS)
    events = feed(state, [0.0] * 5 + [0.9] * 20)
    assert [e.begin for e in events] == [True]
    silence_frames = SETTINGS.silence_ms * 16000 // 1000 // VAD_FRAME
    assert feed(state, [0.1] * (silence_frames - 1)) == []
    events = feed(state, [0.1] * 2)
    assert [e.begin for e in events] == [False]
    job = engine.next_job(state)
    assert job.final and job.end <= (25 * VAD_FRAME) + engine.END_PAD


def test_max_utterance_forces_a_final():
    settings = StreamSettings(
        asr_pb2.LINEAR16, 16000, 1, True, False, 1000, 500, 2000, False, False, False
    )
    state = engine.StreamState(settings)
    feed(state, [0.9] * (3 * 16000 // VAD_FRAME))
    job = engine.next_job(state)
    assert job is not None and job.final


def test_half_close_finalises_open_speech():
    state = engine.StreamState(SETTINGS)
    feed(state, [0.9] * 30)
    engine.close(state)
    job = engine.next_job(state)
    assert job.final and job.end == state.received
    result = engine.apply_final(state, job, words("hello there"))
    assert result.transcript == "hello there" and result.utterance_index == 0
    assert state.utterance_index == 1


def test_silence_alone_needs_no_decode_and_keeps_little_audio():
    state = engine.StreamState(SETTINGS)
    for _ in range(50):
        feed(state, [0.05] * 10)
        assert engine.next_job(state) is None
    assert len(state.audio) <= engine.PRE_ROLL


def test_a_final_without_words_is_not_an_utterance():
    state = engine.StreamState(SETTINGS)
    feed(state, [0.9] * 5)
    engine.close(state)
    job = engine.next_job(state)
    assert engine.apply_final(state, job, []) is None
    assert state.utterance_index == 0


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_streaming_resampler_equals_whole_signal(rate):
    generator = np.random.default_rng(0)
    signal = generator.uniform(-0.5, 0.5, rate * 2).astype(np.float32)
    expected = AF.resample(torch.from_numpy(signal), rate, 16000).numpy()
    resampler = StreamingResampler(rate)
    pieces = [resampler.push(signal[i : i + 1234]) for i in range(0, len(signal), 1234)]
    pieces.append(resampler.flush())
    got = np.concatenate(pieces)
    assert abs(len(got) - len(expected)) <= 1
    size = min(len(got), len(expected))
    assert np.abs(got[:size] - expected[:size]).max() < 1e-4
