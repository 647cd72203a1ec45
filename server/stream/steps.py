"""The stream's pure steps: each takes a `StreamState` and an input and returns the new state
(and what a client should hear of it). No network, threads, clocks or model here.

- `on_audio`: new samples and their VAD probabilities (endpointing).
- `on_interim`: an interim hypothesis (agreement, then the pause cut).
- `keep_final` / `take_final`: a final's decode, and the one place a final result is made.
- `close`: the client half-closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from streamstt.models.audio import SAMPLE_RATE
from streamstt.models.transcriber import Word

from . import agreement, endpointing
from .endpointing import PRE_ROLL, SpeechBegin, SpeechEnd, UtteranceEnd
from .job import Job
from .planning import FINAL_LEFT_CONTEXT, final_job, onset, serves, within
from .state import Decoded, FinalResult, StreamState

# seconds around the last committed word's end within which a free final's word is that word
SPLICE_TOLERANCE = 0.1
HISTORY_CHARS = 2000  # text of earlier finals kept for prompts (PROMPT_WORDS take its end)


def on_audio(
    state: StreamState, samples: int, probs: np.ndarray
) -> tuple[StreamState, list[SpeechBegin | SpeechEnd]]:
    """`samples` new samples arrived, with the probabilities of the VAD frames they
    completed. Returns the speech events the client may be told of."""
    if state.speech.finished:
        return state, []  # single_utterance is over: later audio is ignored
    received = state.received + samples
    boundaries = state.words.committed + state.words.tentative  # candidate forced cuts
    speech, events = endpointing.on_vad(
        state.speech, probs, state.settings, state.audio_start, received, boundaries
    )
    state = replace(state, received=received, speech=speech)
    shown: list[SpeechBegin | SpeechEnd] = []
    for event in events:
        if isinstance(event, UtteranceEnd):
            state = replace(state, pending=(*state.pending, (event.start, event.end)))
            continue
        if isinstance(event, SpeechBegin) and event.opens_utterance:
            state = replace(state, last_step=received)
        shown.append(event)
    state = _pause_cut(state)
    if state.idle:
        state = _trim(state, received - PRE_ROLL)  # keep only the pre-roll
    return state, shown


def on_interim(
    state: StreamState, job: Job, hypothesis: Sequence[Word], trusted: bool = True
) -> StreamState:
    """LocalAgreement-2 over an interim decode, or an early final's (`trusted`: it may commit
    words); a long utterance may close at a pause."""
    state = replace(
        state, last_step=max(state.last_step, job.end), processed=max(state.processed, job.end)
    )
    first = job.first / SAMPLE_RATE
    words, _ = agreement.commit(state.words, hypothesis, first, trusted)
    return _pause_cut(replace(state, words=agreement.settle(words, job.end)), job.final)


def _pause_cut(state: StreamState, final: bool = False) -> StreamState:
    """Close a long utterance at a short pause after a word that two decodes agree on, or
    that a `final` decode (early, of the window up to the pause) heard: it decoded the
    whole utterance with the pause after that word. Checked when new audio shows a pause
    and when a new hypothesis agrees on the word."""
    words = state.words
    heard = words.stable + words.tentative if final else words.heard
    speech, cut = endpointing.pause_cut(state.speech, heard, state.received, state.settings)
    if cut is None:
        return state
    return replace(state, speech=speech, pending=(*state.pending, (cut.start, cut.end)))


def keep_final(state: StreamState, job: Job, hypothesis: Sequence[Word]) -> StreamState:
    """Hold a final's decode until `take_final` finds its utterance next in line."""
    return replace(state, decoded=Decoded(job, tuple(hypothesis)))


def take_final(state: StreamState) -> tuple[StreamState, FinalResult | None, bool]:
    """Close the oldest ended utterance if its final has been decoded. A final decoded early
    counts only if the endpoint closed exactly the window it decoded. Returns the state, the
    final (None for an utterance without words: a false VAD trigger) and whether one closed.
    An early final that heard a word past the cut (the dip it ended in was a moment of
    noisy speech, not silence) is decoded again over the cut's window: that word is the next
    utterance's."""
    if not state.pending or state.decoded is None:
        return state, None, False
    job, words = state.decoded.job, state.decoded.words
    if job.early:
        planned = final_job(state, *state.pending[0])
        if not serves(job, planned) or len(within(words, planned.end)) < len(words):
            return state, None, False
        job = planned
    committed = within(state.words.stable, job.end)[: job.keeps]
    if not agreement.same_words(words[: job.keeps], committed):
        spliced = _splice(words, committed)
        if spliced is None:
            return replace(state, decoded=None, constrain_final=True), None, False
        words = spliced
    state, result = _close_utterance(state, job, words)
    return state, result, True


def _splice(words: Sequence[Word], committed: Sequence[Word]) -> tuple[Word, ...] | None:
    """A free final decode that heard the committed words' audio otherwise ("7." for
    "seven.", a near-homophone, two words as one): the committed words stand and the
    decode's words after the last of them follow, as a decode given them would go on (it
    cost a second decode, ~0.45 s on 2 cores, in a third of the finals of a read passage).
    None where a decoded word straddles the last committed word's end: the final is decoded
    again with the committed words given."""
    if not committed:
        return None
    last = committed[-1]
    after = [w for w in words if w.end > last.end + SPLICE_TOLERANCE]
    if after and after[0].start < last.end - SPLICE_TOLERANCE:
        return None
    same = after and agreement.normal(after[0].word) == agreement.normal(last.word)
    if same and after[0].start < last.end:
        after = after[1:]  # the last committed word, aligned a little later
    return (*committed, *after)


def close(
    state: StreamState, half_close: bool = True
) -> tuple[StreamState, list[SpeechBegin | SpeechEnd]]:
    """Whatever speech is open becomes an utterance that ends here, awaiting its final: the
    client half-closed (no more audio comes) or, `half_close` False, asked to finalize (the
    audio after this starts a new utterance)."""
    has_words = bool(state.words.committed or state.words.tentative)
    speech, events = endpointing.close(state.speech, state.audio_start, state.received, has_words)
    state = replace(state, speech=speech, closed=state.closed or half_close)
    shown: list[SpeechBegin | SpeechEnd] = []
    for event in events:
        if isinstance(event, UtteranceEnd):
            state = replace(state, pending=(*state.pending, (event.start, event.end)))
        else:
            shown.append(event)
    return state, shown


def _close_utterance(
    state: StreamState, job: Job, hypothesis: tuple[Word, ...]
) -> tuple[StreamState, FinalResult | None]:
    """The final decode's words are final (its committed words were its given prefix); the
    utterance's state is reset, but committed words past its end (a cut) stay committed in
    the next utterance."""
    settled, committed = state.words.settled, state.words.committed
    words = (settled if job.after_settled else ()) + hypothesis
    if not hypothesis and (settled or committed):
        words = settled + committed  # the final decode lost words the interims agreed on
    words = _sentence_case(words, state)
    carried = _unheard(committed[len(within(committed, job.end)) :], hypothesis, job.end)
    # the end of this final stays as the next one's left context while speech runs on
    tail = tuple(w for w in words if w.start * SAMPLE_RATE >= job.end - FINAL_LEFT_CONTEXT)
    state = replace(
        state,
        pending=state.pending[1:],
        decoded=None,
        constrain_final=False,
        processed=max(state.processed, job.end),
        words=agreement.Agreement(committed=carried, window_start=state.words.window_start),
        previous_tail=tail,
        last_step=state.received,
    )
    state = _trim(state, min(onset(tail[0]), job.end) if tail else job.end)
    state = replace(
        state, words=replace(state.words, window_start=max(state.words.window_start, job.end))
    )
    if not words:
        return state, None
    # The window may start after the utterance did (its early words were settled and their
    # audio trimmed): the utterance starts at its first word then.
    start = min(job.first / SAMPLE_RATE, words[0].start)
    result = FinalResult(state.utterance_index, words, start, job.end / SAMPLE_RATE)
    history = (state.history + " " + result.transcript).strip()[-HISTORY_CHARS:]
    return replace(state, utterance_index=state.utterance_index + 1, history=history), result


def _unheard(carried: tuple[Word, ...], final: Sequence[Word], end: int) -> tuple[Word, ...]:
    """Committed words past a cut, less those that the final already holds: the interims may
    align the word before a pause later than the final does, past the cut, and carried on it
    would open the next utterance again, where the committed words must stay (its final,
    decoded with that word given, then heard nothing after it). Such a word starts before
    the cut and ends the final with the same text."""
    for k in range(min(len(carried), len(final)), 0, -1):
        before_cut = all(w.start * SAMPLE_RATE < end for w in carried[:k])
        if before_cut and agreement.same_words(final[len(final) - k :], carried[:k]):
            return carried[k:]
    return carried


def _sentence_case(words: tuple[Word, ...], state: StreamState) -> tuple[Word, ...]:
    """An utterance that opens a sentence starts with a capital (interim decodes of a short
    first window often give none, and committed words are kept as they were shown)."""
    opens = state.utterance_index == 0 or state.history.rstrip()[-1:] in ".?!"
    if not words or not opens or not words[0].word[:1].islower():
        return words
    first = words[0]
    return (replace(first, word=first.word[0].upper() + first.word[1:]), *words[1:])


def _trim(state: StreamState, sample: int) -> StreamState:
    """Hold no audio before `sample` (stream time)."""
    audio_start = min(max(sample, state.audio_start), state.received)
    window_start = max(state.words.window_start, audio_start)
    return replace(
        state, audio_start=audio_start, words=replace(state.words, window_start=window_start)
    )
