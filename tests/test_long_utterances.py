"""Long speech without a pause: where a forced final cuts, and what the final holds.

A reader who never pauses for `silence_ms` still needs finals: once an utterance is 5 s long
it closes at the next short pause after a committed word, and `max_utterance_ms` is the
backstop. A forced cut must fall between sentences (the quietest committed word boundary), and
each final is decoded afresh over the whole utterance, so it keeps Whisper's casing and
punctuation and repairs words that interims committed at a window edge. A final that goes on
from a cut hears the end of the previous one first (as known text), not a cold start.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from conftest import reference, wer
from test_server import finals, run_stream
from test_stream_engine import feed

from streamstt.server import stream as engine
from streamstt.server.settings import StreamSettings
from streamstt.server.vad import VAD_FRAME
from streamstt.v1 import asr_pb2

SETTINGS = StreamSettings(
    asr_pb2.LINEAR16, 16000, 1, True, False, 1000, 500, 20000, True, True, True
)


def test_forced_cut_goes_at_the_quietest_committed_boundary():
    state = engine.StreamState(SETTINGS)
    frames = 20 * 16000 // VAD_FRAME + 2  # just past max_utterance_ms of speech
    probs = np.full(frames, 0.95, dtype=np.float32)
    pause = int(14.0 * 16000) // VAD_FRAME  # a short dip (< silence_ms) at 14 s
    probs[pause : pause + 4] = 0.4
    # Committed words every 0.5 s from 10 s on; one of them ends at the dip.
    state.committed = [
        engine.TimedWord(f"w{i}", 10.0 + i * 0.5 - 0.4, 10.0 + i * 0.5, 0.9) for i in range(19)
    ]
    engine.on_audio(state, np.zeros(frames * VAD_FRAME, dtype=np.float32), probs)
    ((start, cut),) = state.endpoints
    assert start == 0
    assert abs(cut / 16000 - 14.0) <= 0.1, cut / 16000
    assert state.utterance_start == cut  # the rest opens the next utterance


def test_forced_cut_prefers_a_sentence_end_when_voice_gives_no_hint():
    state = engine.StreamState(SETTINGS)
    frames = 20 * 16000 // VAD_FRAME + 2
    probs = np.full(frames, 0.95, dtype=np.float32)
    state.committed = [
        engine.TimedWord("end." if i == 6 else f"w{i}", 10.0 + i * 0.5 - 0.4, 10.0 + i * 0.5, 0.9)
        for i in range(19)
    ]
    engine.on_audio(state, np.zeros(frames * VAD_FRAME, dtype=np.float32), probs)
    ((_, cut),) = state.endpoints
    assert cut == 13 * 16000


def _speech_with_dips(seconds: float, dips: list[float]) -> engine.StreamState:
    """An open utterance of `seconds` of speech whose voice dips briefly (< silence_ms) at
    `dips`, with no committed words yet."""
    state = engine.StreamState(SETTINGS)
    frames = int(seconds * 16000) // VAD_FRAME
    probs = np.full(frames, 0.95, dtype=np.float32)
    for dip in dips:
        probs[int(dip * 16000) // VAD_FRAME : int(dip * 16000) // VAD_FRAME + 3] = 0.1
    feed(state, probs)
    assert state.in_speech and not state.endpoints
    return state


def _interims(state: engine.StreamState, hypothesis: list[engine.TimedWord]) -> None:
    """Two agreeing interim decodes of the whole window: their words are committed."""
    job = engine.Job(False, 0, state.received, "")
    engine.apply_interim(state, job, hypothesis)
    engine.apply_interim(state, job, hypothesis)


def _words_every_half_second(seconds: float) -> list[engine.TimedWord]:
    return [
        engine.TimedWord(f"w{i}", i * 0.5 + 0.1, (i + 1) * 0.5, 0.9)
        for i in range(int(seconds / 0.5))
    ]


def test_a_pause_closes_a_long_utterance_once_its_word_is_committed():
    # continuous speech: a dip at 3 s (too early to cut) and one at 9 s
    state = _speech_with_dips(10.5, [3.0, 9.0])
    _interims(state, _words_every_half_second(10.0))
    ((start, cut),) = state.endpoints
    assert start == 0 and abs(cut / 16000 - 9.0) <= 0.1, cut / 16000
    assert state.utterance_start == cut  # the speech after the pause opens the next one


def test_no_pause_cut_without_a_pause_or_for_a_single_utterance():
    state = _speech_with_dips(10.5, [])
    _interims(state, _words_every_half_second(10.0))
    assert not state.endpoints  # no pause: the utterance goes on (max_utterance_ms stays)
    single = _speech_with_dips(10.5, [9.0])
    single.settings = dataclasses.replace(SETTINGS, single_utterance=True)
    _interims(single, _words_every_half_second(10.0))
    assert not single.endpoints  # one utterance asked for: only silence_ms or the limit end it


def _final(state: engine.StreamState, words: list[engine.TimedWord]) -> engine.FinalResult:
    """Decode the pending final as a model would: the job's context words, then `words`."""
    job = engine.next_job(state)
    assert job.final
    hypothesis = [w for w in words if w.end * 16000 <= job.end]
    if job.context:
        known = job.prefix.split()
        lead = job.start / 16000
        hypothesis = [
            engine.TimedWord(w, lead + i * 0.3, lead + i * 0.3 + 0.25, 0.9)
            for i, w in enumerate(known)
        ] + hypothesis
    return engine.apply_final(state, job, engine.without_context(job, hypothesis))


def test_a_final_after_a_pause_cut_is_decoded_after_the_previous_words():
    state = _speech_with_dips(10.5, [9.0])
    spoken = _words_every_half_second(10.0)
    _interims(state, spoken)
    ((_, cut),) = state.endpoints
    first = _final(state, spoken)
    assert first.words[-1].word == "w17" and first.end == cut / 16000
    # the voice stops: the second utterance ends
    feed(state, [0.1] * (SETTINGS.silence_ms * 16000 // 1000 // VAD_FRAME + 1))
    job = engine.next_job(state)
    # its window opens with the last 3 s of the first final's words, given as known text
    assert job.final and job.first == cut and job.lead > 0
    assert job.prefix == "w12 w13 w14 w15 w16 w17" and job.context == 6
    assert abs(job.start / 16000 - (6.1 - 0.1)) < 0.01
    assert job.prompt.split()[-1] == "w11"  # earlier words stay the text prompt
    # alignment may put the first new word's start inside the context audio
    own = [w for w in spoken if w.start * 16000 >= cut]
    own[0] = dataclasses.replace(own[0], start=cut / 16000 - 0.15)
    second = _final(state, own)
    # those words are not in the new final, which starts where its own audio does
    assert [w.word for w in second.words] == ["w18", "w19"]
    assert second.start == cut / 16000 == second.words[0].start >= first.words[-1].end
    assert second.utterance_index == 1


def test_no_left_context_after_a_real_pause():
    state = _speech_with_dips(4.0, [])
    endpoint_frames = SETTINGS.silence_ms * 16000 // 1000 // VAD_FRAME + 1
    feed(state, [0.1] * endpoint_frames)
    _final(state, _words_every_half_second(4.0))
    assert state.context  # held while the next speech might continue it...
    feed(state, [0.1] * 40 + [0.95] * 40 + [0.1] * endpoint_frames)
    job = engine.next_job(state)  # ...but 1.3 s of silence dropped its audio
    assert job.final and job.lead == 0 and job.context == 0 and job.prefix == ""


def test_long_read_streamed_without_pauses(server):
    """31 s of read speech with no 500 ms pause: finals cut at short pauses, with
    punctuation, and about as accurate as the offline transcript."""
    results = finals(run_stream(server.target, "long_read", pace=0.05))
    assert len(results) >= 2
    texts = [r.alternatives[0].transcript for r in results]
    # where the pause cuts fall depends on when interim steps run (machine load), and tiny.en
    # then hears "bread" or "red": measured 0.00-0.04 over runs (the issue allows 0.08)
    assert wer([reference("long_read")], [" ".join(texts)]) <= 0.05, texts
    # Whisper's casing and punctuation survive. The text has 7 sentences, tiny.en hears some
    # sentence ends as commas (6 ends offline) and more so in shorter windows: measured 3-5
    # ends over runs, depending on where the pause cuts fall.
    joined = " ".join(texts)
    assert texts[0][0].isupper() and sum(c in ".?!" for c in joined) >= 3, texts
    starts = [r.result_start_time.ToNanoseconds() for r in results]
    ends = [r.result_end_time.ToNanoseconds() for r in results]
    assert starts[0] < 1e9 and all(s < e for s, e in zip(starts, ends))
    assert all(ends[i] <= starts[i + 1] + 1e6 for i in range(len(results) - 1))
