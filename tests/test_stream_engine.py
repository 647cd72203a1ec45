"""The pure streaming steps: voice activity, LocalAgreement commits, finals, resampling."""

from __future__ import annotations

import numpy as np
import pytest

from streamstt.models.audio import resample
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


def test_decodes_carry_the_interim_words_as_their_draft():
    """The decoder checks a guess in one pass (decoding.greedy_decode): an interim's guess is
    the previous hypothesis's tentative tail, a final's is every interim word of its audio."""
    state = engine.StreamState(SETTINGS)
    feed(state, [0.9] * 20)
    feed(state, [0.9] * 20)
    job = engine.next_job(state)
    assert (job.prefix, job.draft) == ("", "")
    engine.apply_interim(state, job, words("good morning how"))
    feed(state, [0.9] * 20)
    job = engine.next_job(state)
    assert (job.prefix, job.draft) == ("", "good morning how")
    engine.apply_interim(state, job, words("good morning how are"))
    feed(state, [0.9] * 20)
    job = engine.next_job(state)
    assert (job.prefix, job.draft) == ("good morning how", "are")
    engine.close(state)
    final = engine.next_job(state)
    assert final.final and (final.prefix, final.draft) == ("", "good morning how are")


def test_an_interim_may_join_a_batch_half_way_into_its_step():
    state = engine.StreamState(SETTINGS)
    step_frames = SETTINGS.step_ms * 16000 // 1000 // VAD_FRAME
    feed(state, [0.9] * 20)
    feed(state, [0.9] * 20)
    engine.apply_interim(state, engine.next_job(state), words("good"))
    feed(state, [0.9] * (step_frames // 2 + 1))
    assert engine.next_job(state) is None  # its own step is not due...
    assert engine.next_job(state, join=True) is not None  # ...but it may join another's batch


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


def _in_a_pause(state: engine.StreamState, frames: int) -> engine.Job | None:
    """Speech for 40 frames, then `frames` quiet ones; the job the stream asks for then."""
    feed(state, [0.9] * 20)
    feed(state, [0.9] * 20 + [0.1] * frames)  # an interim step is due by now
    return engine.next_job(state)


def test_a_final_is_decoded_ahead_in_a_pause_and_used_at_the_endpoint():
    state = engine.StreamState(SETTINGS)
    pad_frames = -(-engine.END_PAD // VAD_FRAME)
    assert not _in_a_pause(state, pad_frames - 1).ahead  # too short a pause: an interim
    state = engine.StreamState(SETTINGS)
    ahead = _in_a_pause(state, pad_frames)
    assert ahead.final and ahead.ahead and ahead.end == state.last_voiced + engine.END_PAD
    assert engine.next_job(state, ahead=False).ahead is False  # a busy model: plain interim
    engine.apply_interim(state, ahead, words("hello there"))  # shown as an interim, and kept
    engine.keep_ahead(state, ahead, words("Hello there."))
    assert engine.next_job(state) is None  # decoded once per pause
    assert engine.take_ahead(state) is None  # no endpoint yet
    silence = SETTINGS.silence_ms * 16000 // 1000 // VAD_FRAME + 1
    events = feed(state, [0.1] * silence)
    assert [e.begin for e in events] == [False]
    job, hypothesis = engine.take_ahead(state)  # the endpoint closes the decoded window
    assert (job.start, job.end, job.ahead) == (ahead.start, ahead.end, False)
    result = engine.apply_final(state, job, hypothesis)
    assert result.transcript == "Hello there." and engine.next_job(state) is None


def test_a_final_decoded_ahead_is_dropped_when_speech_resumes():
    state = engine.StreamState(SETTINGS)
    ahead = _in_a_pause(state, -(-engine.END_PAD // VAD_FRAME))
    engine.keep_ahead(state, ahead, words("hello"))
    silence = SETTINGS.silence_ms * 16000 // 1000 // VAD_FRAME + 1
    feed(state, [0.9] * 20 + [0.1] * silence)  # more speech, then the endpoint
    assert state.endpoints and engine.take_ahead(state) is None  # another window
    job = engine.next_job(state)
    assert job.final and not job.ahead and job.end > ahead.end  # decoded as usual


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


RESAMPLE_RATES = [8000, 11025, 22050, 44100, 48000]


def stream_resample(rate: int, signal: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Push `signal` in chunks of the given sizes (cycled), then flush; the pieces."""
    resampler = StreamingResampler(rate)
    pieces, start, i = [], 0, 0
    while start < len(signal):
        pieces.append(resampler.push(signal[start : start + sizes[i % len(sizes)]]))
        start += sizes[i % len(sizes)]
        i += 1
    pieces.append(resampler.flush())
    return pieces


@pytest.mark.parametrize("rate", RESAMPLE_RATES)
def test_streaming_resampler_equals_whole_signal(rate):
    """Odd chunk sizes (1 sample, primes, ~100 ms): the same samples as one-shot resampling."""
    generator = np.random.default_rng(0)
    signal = generator.uniform(-0.5, 0.5, rate * 2 + 77).astype(np.float32)
    expected = resample(signal, rate).numpy()
    got = np.concatenate(stream_resample(rate, signal, [1, 7, 333, 1234, 0, 4097, rate // 10]))
    assert got.dtype == np.float32
    assert len(got) == len(expected) == round(len(signal) * 16000 / rate)
    assert np.abs(got - expected).max() < 1e-6  # measured: 0.0 (libsoxr keeps its state)


@pytest.mark.parametrize("rate", RESAMPLE_RATES)
def test_streaming_resampler_keeps_time_and_flushes_the_tail(rate):
    """A tone burst keeps its position (word times depend on it), and the audio right before
    the end of the stream comes out of flush() instead of being lost."""
    seconds = np.arange(rate) / rate  # 1 s of input
    burst = (seconds >= 0.5) & (seconds < 0.9)
    tone = (0.5 * np.sin(2 * np.pi * 440 * seconds) * burst).astype(np.float32)
    tone[-rate // 50 :] = 0.25  # the last 20 ms: a plateau
    pieces = stream_resample(rate, tone, [rate // 10])
    got = np.concatenate(pieces)
    assert len(got) == 16000
    loud = np.flatnonzero(np.abs(got[:15000]) > 0.05)
    assert abs(loud[0] - 8000) <= 16 and abs(loud[-1] - 14400) <= 16  # within 1 ms
    assert len(pieces[-1]) > 0
    assert np.abs(got[-200:-60] - 0.25).max() < 0.01  # the plateau, up to the filter's edge
