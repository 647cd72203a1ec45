"""The pure streaming steps: voice activity, LocalAgreement commits, finals, resampling."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from streamstt.models.audio import resample
from streamstt.models.transcriber import Word
from streamstt.server.settings import StreamSettings
from streamstt.server.stream import planning, steps
from streamstt.server.stream.endpointing import END_PAD, PRE_ROLL, SpeechBegin
from streamstt.server.stream.ingest import StreamingResampler
from streamstt.server.stream.job import FINAL_OPTIONS, Job
from streamstt.server.stream.state import StreamState
from streamstt.server.stream.vad import VAD_FRAME, SileroVad
from streamstt.v1 import asr_pb2

SETTINGS = StreamSettings(
    asr_pb2.LINEAR16, 16000, 1, True, False, 1000, 500, 20000, True, True, True
)
SILENCE_FRAMES = SETTINGS.silence_ms * 16000 // 1000 // VAD_FRAME + 1  # enough for an endpoint


def words(text: str, start: float = 0.0) -> list[Word]:
    return [
        Word(w, start + i * 0.3, start + i * 0.3 + 0.25, 0.9) for i, w in enumerate(text.split())
    ]


def feed(state: StreamState, probs: list[float]) -> tuple[StreamState, list]:
    """Audio whose VAD frames have these probabilities; the new state and its speech events."""
    return steps.on_audio(state, len(probs) * VAD_FRAME, np.array(probs, dtype=np.float32))


def texts(ws) -> list[str]:
    return [w.word for w in ws]


def finalise(state: StreamState, job: Job, hypothesis: list[Word]):
    """Deliver a final's decode and close its utterance; (state, result)."""
    state, result, closed = steps.take_final(steps.keep_final(state, job, hypothesis))
    assert closed
    return state, result


def test_local_agreement_commits_what_two_hypotheses_share():
    state = StreamState(SETTINGS)
    job = Job(False, 0, 16000, "")
    state = steps.on_interim(state, job, words("the cat sat"))
    assert state.words.committed == () and texts(state.words.tentative) == ["the", "cat", "sat"]
    state = steps.on_interim(state, job, words("the cat sat on the"))
    assert texts(state.words.committed) == ["the", "cat", "sat"]
    assert texts(state.words.tentative) == ["on", "the"]


def test_a_changing_hypothesis_is_not_committed():
    state = StreamState(SETTINGS)
    job = Job(False, 0, 16000, "")
    for text in ("could more", "good more", "would morning", "could morning"):
        state = steps.on_interim(state, job, words(text))
    assert state.words.committed == ()


def test_a_later_interim_never_changes_a_committed_word():
    state = StreamState(SETTINGS)
    job = Job(False, 0, 16000, "")
    for text in ("the cat sat", "the cat sat on", "the hat sat on the", "a hat sat on the mat"):
        state = steps.on_interim(state, job, words(text))
    assert texts(state.words.committed)[:3] == ["the", "cat", "sat"]


def test_decodes_are_given_the_committed_words_as_the_newest_decode_wrote_them():
    """A decode given the committed words as its start may put a sign after the last one;
    the next decode is given them so (the model's own text, not a start it never wrote),
    while the client still sees them as they were committed."""
    state = StreamState(SETTINGS)
    job = Job(False, 0, 16000, "")
    for text in ("Outside the", "Outside the river", "Outside, the river ran"):
        state = steps.on_interim(state, job, words(text))
    assert texts(state.words.committed) == ["Outside", "the", "river"]
    assert state.words.given == ("Outside,", "the", "river")
    state = steps.on_interim(state, job, words("outside the river ran beside"))
    assert texts(state.words.committed) == ["Outside", "the", "river", "ran"]
    assert state.words.given == ("outside", "the", "river", "ran")
    state = steps.on_interim(state, job, words("Outside a river ran beside"))  # not them
    assert state.words.given[:4] == ("outside", "the", "river", "ran")


def test_an_unsure_word_waits_for_a_third_decode_and_an_untrusted_one_for_ever():
    sure, unsure = (
        words("good morning"),
        [Word("good", 0.0, 0.25, 0.9), Word("mourning", 0.3, 0.55, 0.3)],
    )
    state = StreamState(SETTINGS)
    job = Job(False, 0, 16000, "")
    state = steps.on_interim(steps.on_interim(state, job, unsure), job, unsure)
    assert texts(state.words.committed) == ["good"]  # "mourning": only two votes, unsure
    state = steps.on_interim(state, job, unsure)
    assert texts(state.words.committed) == ["good", "mourning"]  # a third vote
    distrusted = StreamState(SETTINGS)
    for _ in range(3):
        distrusted = steps.on_interim(distrusted, job, sure, trusted=False)
    assert distrusted.words.committed == () and texts(distrusted.words.tentative) == texts(sure)


def test_a_word_the_model_all_but_ruled_out_holds_back_itself_and_the_word_before_it():
    """Three decodes that hear "Be pole" for "People" (the model split a word it could not
    resolve, and gives its second half 0.1) commit neither half, nor what follows."""
    heard = [
        Word("once.", 0.0, 0.3, 0.95),
        Word("Be", 0.4, 0.5, 0.7),
        Word("pole", 0.5, 0.7, 0.1),
        Word("folded", 0.8, 1.1, 0.9),
    ]
    state = StreamState(SETTINGS)
    job = Job(False, 0, 16000, "")
    for _ in range(3):
        state = steps.on_interim(state, job, heard)
    assert texts(state.words.committed) == ["once."]
    assert texts(state.words.tentative) == ["Be", "pole", "folded"]
    # a decode that then writes "Be pole-folded" agrees on "Be", but its partner still heard
    # "pole" after it
    state = steps.on_interim(state, job, [*heard[:2], Word("pole-folded", 0.5, 1.1, 0.57)])
    assert texts(state.words.committed) == ["once."]


@pytest.mark.parametrize(
    "signs, trusted",
    [
        ({}, True),
        ({"avg_logprob": -0.39}, True),
        # under MIN_COMMIT_LOGPROB (-0.4; at -0.5, 14-22 % of the words committed in 10 dB
        # white noise were wrong: docs/accuracy.md)
        ({"avg_logprob": -0.45}, False),
        ({"no_speech_prob": 0.7}, False),
        ({"repetition_loop": True}, False),
        ({"text": "the the the the the the the the the the the the the"}, False),
    ],
)
def test_a_hypothesis_with_hallucination_signs_commits_nothing(signs, trusted):
    from streamstt.models.results import Transcript
    from streamstt.server.stream.agreement import trustworthy

    fields = {"text": "the train left the station", "avg_logprob": -0.2, "no_speech_prob": 0.1}
    fields.update(signs)
    transcript = Transcript(
        fields["text"], [], [], [], fields["no_speech_prob"], fields["avg_logprob"], 0.9,
        repetition_loop=fields.get("repetition_loop", False),
    )  # fmt: skip
    assert trustworthy(transcript) is trusted


def test_committed_words_are_not_repeated():
    state = StreamState(SETTINGS)
    job = Job(False, 0, 16000, "")
    for text in ("good morning how", "good morning how are", "good morning how are you"):
        state = steps.on_interim(state, job, words(text))
    assert texts(state.words.committed) == ["good", "morning", "how", "are"]


def test_decodes_carry_the_interim_words_as_their_draft():
    """The decoder checks a guess in one pass (decoding.greedy_decode): an interim's guess is
    the previous hypothesis's tentative tail after its committed words (its known prefix); a
    final's is every interim word of its audio, and its result must keep the committed ones."""
    state, _ = feed(StreamState(SETTINGS), [0.9] * 20)  # speech begins: the step starts
    state, _ = feed(state, [0.9] * 20)
    job = planning.next_job(state)
    assert (job.prefix, job.draft) == ("", "")
    state = steps.on_interim(state, job, words("good morning how"))
    state, _ = feed(state, [0.9] * 20)
    job = planning.next_job(state)
    assert (job.prefix, job.draft) == ("", "good morning how")
    state = steps.on_interim(state, job, words("good morning how are"))
    state, _ = feed(state, [0.9] * 20)
    job = planning.next_job(state)
    assert (job.prefix, job.draft) == ("good morning how", "are")
    state, _ = steps.close(state)
    final = planning.next_job(state)
    assert final.final and (final.prefix, final.draft) == ("", "good morning how are")
    assert final.keeps == 3


def test_a_decode_is_not_given_the_sign_a_window_end_put_after_the_committed_words():
    """Where the audio ended, the model writes a full stop; given it, the next decode must
    start a new sentence there. It is given the words, and its own sign after them once the
    words after it decide it."""
    state, _ = feed(StreamState(SETTINGS), [0.9] * 20)
    for text in ("the tracks.", "the tracks."):
        state, _ = feed(state, [0.9] * 20)
        state = steps.on_interim(state, planning.next_job(state), words(text))
    assert texts(state.words.committed) == ["the", "tracks."]
    state, _ = feed(state, [0.9] * 20)
    assert planning.next_job(state).prefix == "the tracks"
    state = steps.on_interim(state, planning.next_job(state), words("the tracks, for a"))
    assert state.words.given == ("the", "tracks,")
    assert texts(state.words.committed) == ["the", "tracks."]  # as the client saw them
    state, _ = feed(state, [0.9] * 20)
    state = steps.on_interim(state, planning.next_job(state), words("the tracks, for a while"))
    state, _ = feed(state, [0.9] * 20)
    assert planning.next_job(state).prefix == "the tracks, for a"
    assert planning.known_start(("Is", "it?", "Yes!")) == "Is it? Yes"


def test_an_interim_may_join_a_batch_half_way_into_its_step():
    step_frames = SETTINGS.step_ms * 16000 // 1000 // VAD_FRAME
    state, _ = feed(StreamState(SETTINGS), [0.9] * 20)
    state, _ = feed(state, [0.9] * 20)
    state = steps.on_interim(state, planning.next_job(state), words("good"))
    state, _ = feed(state, [0.9] * (step_frames // 2 + 1))
    assert planning.next_job(state) is None  # its own step is not due...
    assert planning.next_job(state, join=True) is not None  # ...but it may join another's batch


def test_speech_begin_and_endpoint_after_the_silence_limit():
    state, events = feed(StreamState(SETTINGS), [0.0] * 5 + [0.9] * 20)
    assert [isinstance(e, SpeechBegin) for e in events] == [True]
    state, events = feed(state, [0.1] * (SILENCE_FRAMES - 2))
    assert events == []
    state, events = feed(state, [0.1] * 2)
    assert [isinstance(e, SpeechBegin) for e in events] == [False]
    job = planning.next_job(state)
    assert job.final and job.end <= (25 * VAD_FRAME) + END_PAD


def _in_a_pause(frames: int) -> tuple[StreamState, Job | None]:
    """Speech for 40 frames, then `frames` quiet ones; the job the stream asks for then."""
    state, _ = feed(StreamState(SETTINGS), [0.9] * 20)
    state, _ = feed(state, [0.9] * 20 + [0.1] * frames)  # an interim step is due by now
    return state, planning.next_job(state)


def test_a_final_is_decoded_early_in_a_pause_and_used_at_the_endpoint():
    pad_frames = -(-END_PAD // VAD_FRAME)
    assert not _in_a_pause(pad_frames - 1)[1].early  # too short a pause: an interim
    state, early = _in_a_pause(pad_frames)
    assert early.final and early.early and early.end == state.speech.last_voiced + END_PAD
    assert planning.next_job(state, allow_early=False).early is False  # busy model: interim
    state = steps.on_interim(state, early, words("hello there"))  # shown as an interim...
    state = steps.keep_final(state, early, words("Hello there."))  # ...and kept
    assert planning.next_job(state) is None  # decoded once per pause
    assert steps.take_final(state)[2] is False  # no endpoint yet
    state, events = feed(state, [0.1] * SILENCE_FRAMES)
    assert [isinstance(e, SpeechBegin) for e in events] == [False]
    state, result, closed = steps.take_final(state)  # the endpoint closes the decoded window
    assert closed and result.transcript == "Hello there." and result.end == early.end / 16000
    assert planning.next_job(state) is None


def test_a_final_decoded_early_is_dropped_when_speech_resumes():
    state, early = _in_a_pause(-(-END_PAD // VAD_FRAME))
    state = steps.keep_final(state, early, words("hello"))
    state, _ = feed(state, [0.9] * 20 + [0.1] * SILENCE_FRAMES)  # more speech, then the endpoint
    assert state.pending and steps.take_final(state)[2] is False  # another window
    job = planning.next_job(state)
    assert job.final and not job.early and job.end > early.end  # decoded as usual


def test_max_utterance_forces_a_final():
    settings = StreamSettings(
        asr_pb2.LINEAR16, 16000, 1, True, False, 1000, 500, 2000, False, False, False
    )
    state, _ = feed(StreamState(settings), [0.9] * (3 * 16000 // VAD_FRAME))
    job = planning.next_job(state)
    assert job is not None and job.final


def test_half_close_finalises_open_speech():
    state, _ = feed(StreamState(SETTINGS), [0.9] * 30)
    state, _ = steps.close(state)
    job = planning.next_job(state)
    assert job.final and job.end == state.received
    state, result = finalise(state, job, words("hello there"))
    # the first utterance opens a sentence: it gets a capital
    assert result.transcript == "Hello there" and result.utterance_index == 0
    assert state.utterance_index == 1 and state.done


def _closed_after_committing_the_cat_sat() -> StreamState:
    """An utterance whose interims committed "the cat sat" (and guessed "on"), closed."""
    state, _ = feed(StreamState(SETTINGS), [0.9] * 20)
    state, _ = feed(state, [0.9] * 20)
    job = planning.next_job(state)
    for text in ("the cat sat", "the cat sat on"):
        state = steps.on_interim(state, job, words(text))
    state, _ = steps.close(state)
    assert texts(state.words.committed) == ["the", "cat", "sat"]
    return state


def test_a_final_that_changes_a_committed_word_is_decoded_again_with_it_given():
    """Stability is a promise: a final may re-punctuate committed words, never replace one."""
    state = _closed_after_committing_the_cat_sat()
    free = planning.next_job(state)
    assert free.prefix == "" and free.keeps == 3
    # "sat on" heard as one word across the last committed word's end: no place to join
    heard = [*words("The cat"), Word("saton.", 0.6, 1.15, 0.9)]
    state, result, closed = steps.take_final(steps.keep_final(state, free, heard))
    assert result is None and not closed and state.constrain_final
    given = planning.next_job(state)
    assert given.prefix == "the cat sat" and given.draft == "on"
    state, result = finalise(state, given, words("the cat sat on the mat."))
    assert result.transcript == "The cat sat on the mat." and not state.constrain_final
    # a final that keeps every committed word (re-cased and punctuated) closes at once
    state = _closed_after_committing_the_cat_sat()
    state, result = finalise(state, planning.next_job(state), words("The cat, sat on."))
    assert result.transcript == "The cat, sat on."


def test_the_final_after_an_untrusted_interim_is_decoded_by_beam_search():
    """Beam search costs a final ~140 ms (8 s of audio): spent where the model was unsure of
    the audio (the utterance's newest interim had hallucination signs,
    agreement.trustworthy), only for that utterance, with the server's final_beam_size."""
    sure = _closed_after_committing_the_cat_sat()
    assert planning.next_job(sure).beam_size == 1
    assert planning.next_job(sure).options is FINAL_OPTIONS
    for trust, beams, size in (((True, False), 5, 5), ((False, True), 5, 1), ((True, False), 1, 1)):
        state, _ = feed(StreamState(replace(SETTINGS, final_beam_size=beams)), [0.9] * 20)
        state, _ = feed(state, [0.9] * 20)
        job = planning.next_job(state)
        for text, trusted in zip(("the cat sat", "the cat sat on"), trust):
            state = steps.on_interim(state, job, words(text), trusted=trusted)
        state, _ = steps.close(state)
        final = planning.next_job(state)
        assert final.final and final.beam_size == size
        assert final.options.decoding.beam_size == size
        assert (final.options is FINAL_OPTIONS) is (size == 1)
        state, _ = finalise(state, final, words("the cat sat on."))
        assert not state.words.doubted  # the next utterance starts afresh


def test_a_final_that_hears_a_committed_word_as_another_keeps_it_without_a_second_decode():
    """A free final that heard the committed words' audio otherwise ("hat" for "cat", two
    words as one) and no word across the last committed word's end: the committed words
    stand and the decode's words after them follow; no decode again."""
    state = _closed_after_committing_the_cat_sat()
    free = planning.next_job(state)
    heard = [replace(w, end=w.end + 0.05) for w in words("The hat sat on the mat.")]
    state, result = finalise(state, free, heard)
    assert result.transcript == "The cat sat on the mat." and not state.constrain_final
    state = _closed_after_committing_the_cat_sat()
    merged = [Word("Thecat", 0.0, 0.55, 0.9), *words("sat on.", 0.6)]
    state, result = finalise(state, free, merged)
    assert result.transcript == "The cat sat on." and not state.constrain_final
    # the last committed word aligned a little later is that word, not a second one
    state = _closed_after_committing_the_cat_sat()
    late = [*words("The cat"), Word("sat", 0.8, 1.0, 0.9), Word("on.", 1.05, 1.3, 0.9)]
    state, result = finalise(state, free, late)
    assert result.transcript == "The cat sat on." and not state.constrain_final
    # the same words, but "sat" ends 0.15 s later: not the same span, decoded again
    state = _closed_after_committing_the_cat_sat()
    heard[2] = replace(heard[2], end=heard[2].end + 0.1)
    state, result, closed = steps.take_final(steps.keep_final(state, free, heard))
    assert result is None and not closed and state.constrain_final


def test_a_committed_word_the_final_holds_does_not_open_the_next_utterance():
    """The interims aligned "day?" (committed) past the cut that the final ends at, and the
    final decode holds "day?" too: it is not carried into the next utterance, whose final
    would have to start with it (given it, the model heard nothing after it: a lost
    sentence). Committed words past the cut that the final does not hold still carry."""
    state = _closed_after_committing_the_cat_sat()
    late = Word("day?", 0.5, 0.95, 0.9)  # begins before the cut at 0.8 s, ends after it
    for carried, kept in (([late], []), ([late, Word("I", 1.0, 1.2, 0.9)], ["I"])):
        committed = (*state.words.committed[:2], *carried)
        cut = replace(state, words=replace(state.words, committed=committed))
        job = Job(True, 0, int(0.8 * 16000), "", keeps=2)
        after, result = finalise(cut, job, words("the cat day?"))
        assert result.transcript == "The cat day?"
        assert texts(after.words.committed) == kept


def test_silence_alone_needs_no_decode_and_keeps_little_audio():
    state = StreamState(SETTINGS)
    for _ in range(50):
        state, _ = feed(state, [0.05] * 10)
        assert planning.next_job(state) is None
    assert state.received - state.audio_start <= PRE_ROLL


def test_a_final_without_words_is_not_an_utterance():
    state, _ = feed(StreamState(SETTINGS), [0.9] * 5)
    state, _ = steps.close(state)
    state, result = finalise(state, planning.next_job(state), [])
    assert result is None and state.utterance_index == 0


def test_single_utterance_ignores_audio_after_its_end():
    single = StreamSettings(
        asr_pb2.LINEAR16, 16000, 1, True, True, 1000, 500, 20000, True, True, True
    )
    state, _ = feed(StreamState(single), [0.9] * 20 + [0.1] * SILENCE_FRAMES + [0.9] * 20)
    assert state.speech.finished and not state.speech.in_speech and len(state.pending) == 1
    later, events = feed(state, [0.9] * 20)
    assert later == state and events == []


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


def test_making_the_vad_leaves_the_model_threads_their_count():
    """onnxruntime sets the process's OpenMP thread count to one when a session is made;
    the server's model thread, started after the VAD, then decoded on one core."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        SileroVad()
        seen: list[int] = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert seen == [3] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


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
