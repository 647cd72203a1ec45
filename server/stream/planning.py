"""Job planning: which decode a stream needs now. Pure functions of its `StreamState`.

- A final for the oldest ended utterance, decoded afresh over its whole audio, with the end of
  the previous final as left context when speech ran on across the cut.
- While the voice pauses inside an utterance, the final that an endpoint would close, decoded
  early (the model would idle otherwise); in a long utterance, at the first dip of the
  voice, the final of the audio so far (a pause cut may close the utterance on its words).
- An interim of the open utterance every `step_ms`, or half-way into its step when another
  stream's batch is forming (so streams share model calls).
docs/architecture.md explains each rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from streamstt.models.audio import N_SAMPLES, SAMPLE_RATE
from streamstt.models.transcriber import Word

from . import endpointing
from .agreement import COMMIT_TOLERANCE, normal
from .endpointing import END_PAD
from .job import Job
from .state import StreamState

FINAL_WINDOW = N_SAMPLES  # the longest utterance a final decodes in one piece
MIN_WINDOW = int(0.3 * SAMPLE_RATE)  # no decode of less audio than this
PROMPT_WORDS = 40  # words of earlier text given to the model as its prompt
# When speech runs on across a cut (the utterance starts within LEFT_CONTEXT_GAP of the
# previous final's end), the end of the previous final leads each window: this much of it
# before an interim, and more before a final, whose window is 30 s anyway (measured:
# docs/accuracy.md).
LEFT_CONTEXT = int(3.0 * SAMPLE_RATE)
FINAL_LEFT_CONTEXT = int(10.0 * SAMPLE_RATE)
LEFT_CONTEXT_GAP = int(1.0 * SAMPLE_RATE)
CONTEXT_ONSET = int(0.1 * SAMPLE_RATE)  # audio held before the first context word's start
JOIN_STEP = 0.5  # share of its step after which an interim may join another stream's batch
# A long utterance whose voice dips after the last interim step is decoded now: its final so
# far (`_early_final`), or, too long for one final decode, its next interim (once this much
# audio came since the step). The pause cut needs a hypothesis that holds the word before
# the pause, and waiting for the step delayed that final by half a step.
PAUSE_STEP = int(0.1 * SAMPLE_RATE)
DRAFT_SLACK = 0.3  # seconds: interim words this far outside a final's window still guess it
CLOSING_SIGNS = ".,;:?!"  # left off the last committed word of a decode's known start


def next_job(state: StreamState, allow_early: bool = True, join: bool = False) -> Job | None:
    """The decode this stream needs now, if any (finals first). In a pause that may be an
    endpoint, the final decoded early (unless `allow_early` is False: then a plain interim).
    `join`: another stream's batch is forming; an interim is due after JOIN_STEP of its step."""
    if state.pending:
        return final_job(state, *state.pending[0])
    if not (state.speech.in_speech and state.settings.interim_results):
        return None
    early = _early_final(state) if allow_early else None
    if early is not None:
        if not (state.decoded and serves(state.decoded.job, early)):
            return early  # once per pause; its words serve as an interim hypothesis too
        if state.speech.silence_run >= END_PAD:
            return None  # nothing but silence since it was decoded
    return _interim_job(state, join, allow_early)


def backlog(state: StreamState) -> int:
    """Samples received that wait for a decode the stream will need: the ended utterances
    awaiting their finals, and the open utterance's audio since its last interim step."""
    waiting = sum(end - start for start, end in state.pending)
    if state.speech.in_speech and state.settings.interim_results:
        waiting += state.received - max(state.last_step, state.speech.start_or(state.audio_start))
    return waiting


def _interim_job(state: StreamState, join: bool, allow_early: bool = True) -> Job | None:
    """An interim of the open utterance, once its step is due: the committed words are its
    known prefix, the tentative tail its draft. At a dip of the voice (`allow_early`) it
    comes early: `early`, like an early final, it only fills time the model would idle."""
    step = state.settings.step_ms * SAMPLE_RATE // 1000
    if join:
        step = int(step * JOIN_STEP)
    start = max(state.words.window_start, state.speech.start_or(state.audio_start))
    since = state.received - state.last_step
    early = since < step and allow_early and since >= PAUSE_STEP and _pause_since_step(state)
    if not (since >= step or early) or state.received - start < MIN_WINDOW:
        return None
    return replace(_plain_interim(state, start), early=early)


def _plain_interim(state: StreamState, start: int) -> Job:
    words = state.words
    draft = " ".join(w.word for w in words.tentative)
    if words.settled:  # the window starts after settled words: their text is the prompt
        prefix = known_start(words.given)
        return Job(False, start, state.received, _prompt(state), prefix, draft=draft)
    return _led(state, False, start, state.received, words.given, draft)


def _pause_since_step(state: StreamState) -> bool:
    """The voice began to dip (a pause that may end a long utterance) after the last
    interim step."""
    return endpointing.dipped_since(state.speech, state.last_step)


def final_job(state: StreamState, start: int, end: int) -> Job:
    """The decode that closes the utterance from `start` to `end`: afresh over its whole
    audio in the full window, so it gets Whisper's casing and punctuation and the benefit of
    the words after each one. A committed word stays, so the result must open with the
    committed words; where it does not, the committed words replace the words it heard for
    their audio (steps._splice) or, where one of its words straddles the last committed
    word's end, the final is decoded again with them as its given start (`constrain_final`,
    steps.take_final). Where the utterance's interims were unsure, it is decoded by beam
    search (job.final_options)."""
    start = min(max(start, state.audio_start), end)
    beams = state.settings.final_beam_size if state.words.doubted else 1
    return replace(_final_job(state, start, end), beam_size=beams)


def _final_job(state: StreamState, start: int, end: int) -> Job:
    words = state.words
    if words.settled and end - start > FINAL_WINDOW:  # too long for one decode: the
        start = min(max(start, words.window_start), end)  # settled words stand
        prefix = known_start(words.given[: len(within(words.committed, end))])
        draft = _draft(state, start, end)
        return Job(True, start, end, _prompt(state), prefix, after_settled=True, draft=draft)
    given = (*(w.word for w in words.settled), *words.given)
    committed = given[: len(within(words.stable, end))]
    if state.constrain_final:
        return _led(state, True, start, end, committed, _draft(state, start, end))
    draft = " ".join([*committed, _draft(state, start, end)]).strip()
    return replace(_led(state, True, start, end, (), draft), keeps=len(committed))


def _led(
    state: StreamState, final: bool, start: int, end: int, known: Sequence[str], draft: str
) -> Job:
    """A job for [start, end) with `known` as the start of its transcript, led by the end of
    the previous final when speech ran on across a cut: that audio opens the window and its
    words open the prefix (dropped from the result by `without_context`), so the first words
    after the cut are heard in context, not from a cold start."""
    context = _left_context(state, start, end, FINAL_LEFT_CONTEXT if final else LEFT_CONTEXT)
    prompt = _prompt(state, settled=False, drop=len(context))
    text = " ".join([w.word for w in context] + [known_start(known)]).strip()
    if not context:
        return Job(final, start, end, prompt, text, draft=draft)
    lead = start - max(state.audio_start, onset(context[0]))
    return Job(
        final, start - lead, end, prompt, text, lead_samples=lead, context_words=len(context),
        draft=draft,
    )  # fmt: skip


def known_start(committed: Sequence[str]) -> str:
    """Committed words as a decode's known start, the sign after the last one left off: it
    was written where the audio then ended (a window's end reads as a full stop), and a
    decode given it must go on after it ("tracks. For a while" where it hears "tracks for a
    while"). The decode puts its own, and the committed words take it when it goes on past
    them (agreement._respelled, `Agreement.given`)."""
    return " ".join(committed).rstrip(CLOSING_SIGNS).rstrip()


def within(words: Sequence[Word], end: int) -> tuple[Word, ...]:
    """The words that end by sample `end` (the rest go on into the next utterance)."""
    return tuple(w for w in words if w.end * SAMPLE_RATE <= end + COMMIT_TOLERANCE * SAMPLE_RATE)


def same_window(a: Job, b: Job) -> bool:
    """The same decode (the draft only guesses its result)."""
    return replace(a, early=False, draft="") == replace(b, early=False, draft="")


def serves(early: Job, planned: Job) -> bool:
    """An early final's decode serves the final an endpoint planned when only silence tells
    them apart: the planned window ends within END_PAD of the early one (a pause cut ends
    in the same pause that the early window ends in), and the words it must keep are
    checked against the committed words then (`keeps` is no input of the decode)."""
    if abs(early.end - planned.end) > END_PAD:
        return False
    return same_window(
        replace(early, end=planned.end, keeps=planned.keeps, beam_size=planned.beam_size),
        planned,
    )


def without_context(job: Job, hypothesis: list[Word]) -> list[Word]:
    """The decoded words of the job's own audio: its left-context words dropped."""
    if not job.context_words:
        return hypothesis
    first = job.first / SAMPLE_RATE
    known = [normal(w) for w in job.prefix.split()[: job.context_words]]
    if [normal(w.word) for w in hypothesis[: job.context_words]] == known:
        own = hypothesis[job.context_words :]
    else:  # the model ran the last context word on into a new one (no space): judge by time
        own = [w for w in hypothesis if w.end > first + COMMIT_TOLERANCE]
    # Alignment may start the first own word inside the context audio: the previous final
    # owns that time, so results never overlap.
    return [w if w.start >= first else replace(w, start=first, end=max(w.end, first)) for w in own]


def onset(word: Word) -> int:
    """First sample of audio held for a context word (a little before its aligned start)."""
    return int(word.start * SAMPLE_RATE) - CONTEXT_ONSET


def _early_final(state: StreamState) -> Job | None:
    """The final an endpoint would close in this pause, decoded before the endpoint is sure.
    Where no hypothesis word marks that end yet, but the voice of a long utterance began to
    dip after the last interim step, the final of the audio so far: it heard the word before
    the dip and the dip after it, so a pause cut may close the utterance on its words
    (steps.on_interim), and it is then that cut's final (`serves`). Without it, an interim
    had to find the word first and the final came one interim decode later (~0.2 s here)."""
    speech = state.speech
    end = _pause_end(state)
    if end is None and _pause_since_step(state):
        end = state.received
    if speech.utterance_start is None or end is None or end > state.received:
        return None
    job = final_job(state, speech.utterance_start, end)
    return None if job.after_settled else replace(job, early=True)


def _pause_end(state: StreamState) -> int | None:
    """Where the open utterance would end in the current pause: END_PAD after the last voiced
    frame once the voice has been quiet that long, or where a pause cut would close it if
    the newest hypothesis's words stand (the early decode is the second decode that a pause
    cut waits for, endpointing.pause_cut)."""
    speech, words = state.speech, state.words
    if speech.silence_run >= END_PAD:
        return speech.last_voiced + END_PAD
    hypothesis = words.stable + words.tentative
    _, cut = endpointing.pause_cut(speech, hypothesis, state.received, state.settings)
    return None if cut is None else cut.end


def _prompt(state: StreamState, settled: bool = True, drop: int = 0) -> str:
    """Earlier text as context: earlier finals (less the last `drop` words, given as the
    window's left context), and the settled words of this utterance when the window leaves
    their audio out."""
    history = state.history.split()
    own = [w.word for w in state.words.settled] if settled else []
    return " ".join((history[: len(history) - drop] + own)[-PROMPT_WORDS:])


def _draft(state: StreamState, start: int, end: int) -> str:
    """The tentative words heard between `start` and `end`: a guess of what a decode of that
    window gives after its committed words."""
    low, high = start / SAMPLE_RATE - DRAFT_SLACK, end / SAMPLE_RATE + DRAFT_SLACK
    return " ".join(w.word for w in state.words.tentative if w.start >= low and w.end <= high)


def _left_context(state: StreamState, start: int, end: int, reach: int) -> list[Word]:
    """The previous final's words (those of its last `reach` samples) to lead the window from
    `start` to `end`, if its speech ran on into this utterance and their audio is still
    held."""
    tail = state.previous_tail
    if not tail or start - int(tail[-1].end * SAMPLE_RATE) > LEFT_CONTEXT_GAP:
        return []
    first = max(state.audio_start, int(tail[-1].end * SAMPLE_RATE) - reach)
    return [
        w for w in tail if onset(w) >= end - FINAL_WINDOW and int(w.start * SAMPLE_RATE) >= first
    ]
