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
from conftest import normalise, reference, wer
from test_server import finals, run_stream
from test_stream_engine import SILENCE_FRAMES, feed, finalise, texts

from streamstt.models.transcriber import Word
from streamstt.server.settings import StreamSettings
from streamstt.server.stream import planning, steps
from streamstt.server.stream.job import Job
from streamstt.server.stream.state import StreamState
from streamstt.server.stream.vad import VAD_FRAME
from streamstt.v1 import asr_pb2

SETTINGS = StreamSettings(
    asr_pb2.LINEAR16, 16000, 1, True, False, 1000, 500, 20000, True, True, True
)


def _twenty_seconds_with_committed(words: list[Word], probs: np.ndarray) -> StreamState:
    """Just past max_utterance_ms of speech with these committed words."""
    state = StreamState(SETTINGS)
    state = dataclasses.replace(
        state, words=dataclasses.replace(state.words, committed=tuple(words))
    )
    return steps.on_audio(state, len(probs) * VAD_FRAME, probs)[0]


def test_forced_cut_goes_at_the_quietest_committed_boundary():
    frames = 20 * 16000 // VAD_FRAME + 2  # just past max_utterance_ms of speech
    probs = np.full(frames, 0.95, dtype=np.float32)
    pause = int(14.0 * 16000) // VAD_FRAME  # a short dip (< silence_ms) at 14 s
    probs[pause : pause + 4] = 0.4
    # Committed words every 0.5 s from 10 s on; one of them ends at the dip.
    committed = [Word(f"w{i}", 10.0 + i * 0.5 - 0.4, 10.0 + i * 0.5, 0.9) for i in range(19)]
    state = _twenty_seconds_with_committed(committed, probs)
    ((start, cut),) = state.pending
    assert start == 0
    assert abs(cut / 16000 - 14.0) <= 0.1, cut / 16000
    assert state.speech.utterance_start == cut  # the rest opens the next utterance


def test_forced_cut_prefers_a_sentence_end_when_voice_gives_no_hint():
    frames = 20 * 16000 // VAD_FRAME + 2
    probs = np.full(frames, 0.95, dtype=np.float32)
    committed = [
        Word("end." if i == 6 else f"w{i}", 10.0 + i * 0.5 - 0.4, 10.0 + i * 0.5, 0.9)
        for i in range(19)
    ]
    ((_, cut),) = _twenty_seconds_with_committed(committed, probs).pending
    assert cut == 13 * 16000


def test_forced_cut_without_words_in_the_second_half_goes_at_its_quietest_moment():
    # At 5 dB SNR the decodes stopped after one word ("The") for 15 s of speech: a cut after
    # that word left a 1.4 s utterance whose final was a hallucination.
    frames = 20 * 16000 // VAD_FRAME + 2
    probs = np.full(frames, 0.95, dtype=np.float32)
    dip = int(15.0 * 16000) // VAD_FRAME
    probs[dip : dip + 3] = 0.45
    ((start, cut),) = _twenty_seconds_with_committed([Word("The", 1.0, 1.4, 0.3)], probs).pending
    assert start == 0
    assert abs(cut / 16000 - 15.0) <= 0.1, cut / 16000


def _speech_with_dips(seconds: float, dips: list[float], settings=SETTINGS) -> StreamState:
    """An open utterance of `seconds` of speech whose voice dips briefly (< silence_ms) at
    `dips`, with no committed words yet."""
    frames = int(seconds * 16000) // VAD_FRAME
    probs = np.full(frames, 0.95, dtype=np.float32)
    for dip in dips:
        probs[int(dip * 16000) // VAD_FRAME : int(dip * 16000) // VAD_FRAME + 3] = 0.1
    state, _ = feed(StreamState(settings), list(probs))
    assert state.speech.in_speech and not state.pending
    return state


def _interims(state: StreamState, hypothesis: list[Word]) -> StreamState:
    """Two agreeing interim decodes of the whole window: their words are committed."""
    job = Job(False, 0, state.received, "")
    return steps.on_interim(steps.on_interim(state, job, hypothesis), job, hypothesis)


def _words_every_half_second(seconds: float) -> list[Word]:
    return [Word(f"w{i}", i * 0.5 + 0.1, (i + 1) * 0.5, 0.9) for i in range(int(seconds / 0.5))]


def test_a_pause_closes_a_long_utterance_once_its_word_is_committed():
    # continuous speech: a dip at 3 s (too early to cut) and one at 9 s
    state = _interims(_speech_with_dips(10.5, [3.0, 9.0]), _words_every_half_second(10.0))
    ((start, cut),) = state.pending
    assert start == 0 and abs(cut / 16000 - 9.0) <= 0.1, cut / 16000
    assert state.speech.utterance_start == cut  # the speech after the pause opens the next one


def test_the_final_of_a_pause_cut_is_decoded_early_and_kept():
    """The decode that would confirm a pause cut is the cut's final itself: once it agrees
    on the word before the pause, the utterance closes with no second decode."""
    hypothesis = _words_every_half_second(10.0)
    state = _speech_with_dips(10.5, [9.0])
    job = Job(False, 0, state.received, "")
    state = steps.on_interim(state, job, hypothesis)  # one decode: nothing is committed yet
    assert not state.pending
    early = planning.next_job(state)
    assert early.final and early.early and abs(early.end / 16000 - 9.0) <= 0.1
    state = steps.on_interim(state, early, hypothesis[:18])  # it agrees: the cut is made...
    ((start, cut),) = state.pending
    state, result, closed = steps.take_final(steps.keep_final(state, early, hypothesis[:18]))
    assert closed and cut == early.end and len(result.words) == 18  # ...and closed by it
    assert planning.next_job(state) is None or not planning.next_job(state).final


def test_a_dip_in_a_long_utterance_brings_its_final_forward():
    """The pause cut needs a hypothesis that holds the word before the pause: when the voice
    begins to dip after the last interim step, the final of the audio so far is decoded at
    once instead of an interim a step later, as work done early (only when the model would
    idle: not with `allow_early` False, the scheduler's choice when other streams' work
    waits). Once per dip, and not in a short utterance."""
    state = _speech_with_dips(5.6, [])
    state = dataclasses.replace(state, last_step=state.received)  # an interim just ran
    quiet, _ = feed(state, [0.1] * 4)  # 128 ms of a dip since
    job = planning.next_job(quiet)
    assert job is not None and job.final and job.early and job.end == quiet.received
    assert planning.next_job(quiet, allow_early=False) is None  # others' work waits
    voiced, _ = feed(state, [0.95] * 4)  # the same audio without a dip: the step is 333 ms
    assert planning.next_job(voiced) is None
    heard = _words_every_half_second(5.0)  # no word ends near the dip: no cut
    after = steps.keep_final(steps.on_interim(quiet, job, heard), job, heard)
    assert not after.pending
    after, _ = feed(after, [0.1] * 4)  # the same dip goes on: no second early decode
    assert planning.next_job(after) is None
    short = _speech_with_dips(3.0, [])
    short = dataclasses.replace(short, last_step=short.received)
    short, _ = feed(short, [0.1] * 4)
    assert planning.next_job(short) is None


def test_the_final_decoded_at_a_dip_closes_the_utterance_on_its_own_words():
    """The last interim ran before the word that a pause follows ended; at the dip the final
    of the audio so far is decoded, and having heard that word and the pause after it, its
    words alone make the cut (an interim's would need a second decode) and it is the final."""
    hypothesis = _words_every_half_second(8.5)  # the last word ends at 8.5 s
    state = _speech_with_dips(8.55, [])
    state = steps.on_interim(state, Job(False, 0, state.received, ""), hypothesis[:-1])
    state, _ = feed(state, [0.1] * 3)  # the voice dips right after the last word
    job = planning.next_job(state)
    assert job.final and job.early and job.end == state.received
    interim = dataclasses.replace(job, final=False, early=False)
    assert not steps.on_interim(state, interim, hypothesis).pending  # one interim: no cut
    state = steps.on_interim(state, job, hypothesis)
    ((start, cut),) = state.pending
    assert start == 0 and 8.5 <= cut / 16000 < job.end / 16000
    state, result, closed = steps.take_final(steps.keep_final(state, job, hypothesis))
    assert closed and len(result.words) == len(hypothesis) and result.end == cut / 16000


def test_an_early_final_of_another_pause_is_decoded_again():
    hypothesis = _words_every_half_second(10.0)
    state = _speech_with_dips(10.5, [9.0])
    state = steps.on_interim(state, Job(False, 0, state.received, ""), hypothesis)
    early = planning.next_job(state)
    assert early.early
    stale = dataclasses.replace(early, end=early.end - 8000)  # half a second earlier
    state = steps.keep_final(steps.on_interim(state, early, hypothesis[:18]), stale, [])
    assert state.pending and steps.take_final(state)[2] is False
    assert planning.next_job(state).final and not planning.next_job(state).early


def test_an_early_final_that_heard_words_past_the_cut_is_decoded_again():
    """An early final's window may run past the cut its words made (the dip was a moment
    in noisy speech, not silence): a word it heard after the cut belongs to the next
    utterance, so the final is decoded again over its own window."""
    hypothesis = _words_every_half_second(8.5)
    state = _speech_with_dips(8.55, [])
    state = steps.on_interim(state, Job(False, 0, state.received, ""), hypothesis[:-1])
    state, _ = feed(state, [0.1] * 3)
    job = planning.next_job(state)
    state, _ = feed(state, [0.95] * 3)  # the voice goes on
    job = dataclasses.replace(job, end=state.received)  # the early window, run on to here
    past = Word("next", 8.65, job.end / 16000, 0.9)  # said after the cut
    state = steps.on_interim(state, job, [*hypothesis, past])
    ((_, cut),) = state.pending
    assert cut < past.start * 16000
    state = steps.keep_final(state, job, [*hypothesis, past])
    assert steps.take_final(state)[2] is False
    again = planning.next_job(state)
    assert again.final and not again.early and again.end == cut


def test_no_pause_cut_without_a_pause_or_for_a_single_utterance():
    state = _interims(_speech_with_dips(10.5, []), _words_every_half_second(10.0))
    assert not state.pending  # no pause: the utterance goes on (max_utterance_ms stays)
    single = _speech_with_dips(10.5, [9.0], dataclasses.replace(SETTINGS, single_utterance=True))
    single = _interims(single, _words_every_half_second(10.0))
    assert not single.pending  # one utterance asked for: only silence_ms or the limit end it


def _final(state: StreamState, words: list[Word]):
    """Decode the pending final as a model would: the job's context words, then `words` (the
    window's own, committed ones included)."""
    job = planning.next_job(state)
    assert job.final
    hypothesis = [w for w in words if w.end * 16000 <= job.end]
    if job.context_words:
        lead = job.start / 16000
        known = [
            Word(w, lead + i * 0.3, lead + i * 0.3 + 0.25, 0.9)
            for i, w in enumerate(job.prefix.split()[: job.context_words])
        ]
        hypothesis = known + hypothesis
    return finalise(state, job, planning.without_context(job, hypothesis))


def test_a_final_after_a_pause_cut_is_decoded_after_the_previous_words():
    spoken = _words_every_half_second(11.5)
    state = _interims(_speech_with_dips(11.9, [10.5]), spoken)
    ((_, cut),) = state.pending
    state, first = _final(state, spoken)
    assert first.words[-1].word == "w20" and first.end == cut / 16000
    state, _ = feed(state, [0.1] * SILENCE_FRAMES)  # the voice stops: the second one ends
    job = planning.next_job(state)
    # its window opens with the last 10 s of the first final's words, given as known text
    # (an interim gets only 3 s: its encoder span grows with the lead; a final's window is
    # 30 s anyway); the words committed after the cut stay committed and open its result
    assert job.final and job.first == cut and job.lead_samples > 0
    assert job.prefix == " ".join(f"w{i}" for i in range(1, 21)) and job.context_words == 20
    assert job.draft == "w21 w22" and job.keeps == 2
    assert abs(job.start / 16000 - (0.6 - 0.1)) < 0.01
    assert job.prompt == "W0"  # earlier words stay the text prompt
    # alignment may put the first new word's start inside the context audio
    own = [w for w in spoken if w.start * 16000 >= cut]
    own[0] = dataclasses.replace(own[0], start=cut / 16000 - 0.15)
    state, second = _final(state, own)
    # those words are not in the new final, which starts where its own audio does
    assert texts(second.words) == ["w21", "w22"]
    assert second.start == cut / 16000 == second.words[0].start >= first.words[-1].end
    assert second.utterance_index == 1


def test_an_interim_after_a_pause_cut_hears_the_previous_words_first():
    """Not only the final: the interims of an utterance that goes on from a cut are decoded
    with the end of the previous final in front, so its first words are not heard cold."""
    spoken = _words_every_half_second(10.0)
    state = _interims(_speech_with_dips(10.5, [9.0]), spoken)
    ((_, cut),) = state.pending
    state, _ = _final(state, spoken)
    state, _ = feed(state, [0.95] * 20)  # speech runs on: an interim step is due
    job = planning.next_job(state)
    assert not job.final and job.first == cut and job.lead_samples > 0
    # the last 3 s of the previous final (a final's window gets 10 s)
    assert job.prefix.split()[: job.context_words] == [f"w{i}" for i in range(12, 18)]
    assert job.prefix.split()[job.context_words :] == ["w18", "w19"]  # committed, carried


def test_no_left_context_after_a_real_pause():
    state, _ = feed(_speech_with_dips(4.0, []), [0.1] * SILENCE_FRAMES)
    state, _ = _final(state, _words_every_half_second(4.0))
    assert state.previous_tail  # held while the next speech might continue it...
    state, _ = feed(state, [0.1] * 40 + [0.95] * 40 + [0.1] * SILENCE_FRAMES)
    job = planning.next_job(state)  # ...but 1.3 s of silence dropped its audio
    assert job.final and job.lead_samples == 0 and job.context_words == 0 and job.prefix == ""


def test_long_read_streamed_without_pauses(server):
    """31 s of read speech with no 500 ms pause: finals cut at short pauses, with
    punctuation, and about as accurate as the offline transcript."""
    responses = run_stream(server.target, "long_read", pace=0.05)
    results = finals(responses)
    assert len(results) >= 2
    texts = [r.alternatives[0].transcript for r in results]
    # where the pause cuts fall depends on when interim steps run (machine load), and tiny.en
    # then hears "bread" or "red": measured 0.00-0.04 over runs; the issue allows 0.08
    assert wer([reference("long_read")], [" ".join(texts)]) <= 0.08, texts
    # Finals are decoded afresh, not assembled from interim words, so Whisper's punctuation
    # survives; how many marks and which depends on where the cuts fall (machine load), so
    # only their presence is asserted. What the engine itself guarantees is the casing: the
    # first final and every final after a sentence end open with a capital.
    assert any(c in ".,?!" for c in " ".join(texts)), texts
    opens_sentence = [True] + [t.rstrip()[-1:] in ".?!" for t in texts[:-1]]
    assert all(t[0].isupper() for t, o in zip(texts, opens_sentence) if o), texts
    assert_committed_words_stay(responses)
    starts = [r.result_start_time.ToNanoseconds() for r in results]
    ends = [r.result_end_time.ToNanoseconds() for r in results]
    assert starts[0] < 1e9 and all(s < e for s, e in zip(starts, ends))
    assert all(ends[i] <= starts[i + 1] + 1e6 for i in range(len(results) - 1))


def assert_committed_words_stay(responses) -> None:
    """Stability is a promise: within an utterance the committed words (stability 0.9) only
    ever grow, and its final (or, after a cut, the next one) opens with them."""
    committed: dict[int, list[str]] = {}
    for response in responses:
        for result in response.results:
            if result.is_final or result.stability < 0.5:
                continue
            shown = normalise(result.alternatives[0].transcript).split()
            before = committed.get(result.utterance_index, [])
            assert shown[: len(before)] == before, (before, shown)
            committed[result.utterance_index] = shown
    said = {r.utterance_index: r.alternatives[0].transcript for r in finals(responses)}
    for index, words in committed.items():
        spoken = normalise(said.get(index, "") + " " + said.get(index + 1, "")).split()
        assert spoken[: len(words)] == words, (index, words, spoken)
