"""One stream's recognition state and the pure steps that advance it.

Nothing here touches the network, threads or the model: `on_audio` feeds samples and voice
activity in, `next_job` says which decode the stream needs now, and `apply_interim` /
`apply_final` fold a decode result back in. The scheduler batches the jobs of many streams.

Stream time is counted in 16 kHz samples from the first byte of audio; results report it in
seconds.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from streamstt.models.audio import N_SAMPLES, SAMPLE_RATE

from .settings import StreamSettings
from .vad import VAD_FRAME

SPEECH_START_PROB = 0.5  # Silero's recommended threshold
SPEECH_END_PROB = 0.35  # hysteresis: speech continues until the probability drops below this
PRE_ROLL = int(0.3 * SAMPLE_RATE)  # samples kept before detected speech (soft onsets)
END_PAD = int(0.2 * SAMPLE_RATE)  # samples kept after the last voiced frame in a final
# Interim window length past which committed words are settled and their audio is left out
# of interim decodes (the final still decodes the whole utterance).
TRIM_AFTER = int(12.0 * SAMPLE_RATE)
FINAL_WINDOW = N_SAMPLES  # the longest utterance a final decodes in one piece
MIN_WINDOW = int(0.3 * SAMPLE_RATE)  # no decode of less audio than this
COMMIT_TOLERANCE = 0.02  # seconds: hypothesis words ending before the last committed word's
# end (minus this jitter) were committed already; repeats that survive are removed as n-grams
STABLE, TENTATIVE = 0.9, 0.1  # stability reported for committed and tentative words
PROMPT_WORDS = 40  # words of earlier text given to the model as context
# A forced cut (max_utterance_ms) goes at the committed word boundary where the voice is
# quietest: read speech pauses between sentences without reaching silence_ms. The VAD
# probability around a boundary is judged over this much audio on each side.
CUT_SPAN = int(0.1 * SAMPLE_RATE)
CUT_MARGIN = int(0.3 * SAMPLE_RATE)  # no cut this close to the newest audio (word may go on)
# Continuous speech (read text, a monologue) pauses between sentences for less than
# silence_ms, so no endpoint comes and the utterance grows until max_utterance_ms: its final
# would come many seconds after its early words, and interim words past a look-back cut would
# move to the next utterance. So once an utterance is this long, it is closed at the first
# newly committed word followed by a pause (VAD probability below SPEECH_END_PROB).
PAUSE_CUT_AFTER = int(5.0 * SAMPLE_RATE)
# A final is decoded ahead of its endpoint: once the voice has been quiet for END_PAD, the
# window that the endpoint will close (up to last_voiced + END_PAD) is known, so it is decoded
# while silence_ms runs out, and the final goes out when the endpoint comes instead of its
# decode starting then. Its words are applied and shown as an interim hypothesis as well; it
# runs only when the model has nothing else to do (else the stream gets a plain interim), and
# it is used only if the endpoint closes exactly that window. Finals decode the same whatever
# their batch (TranscribeOptions.batch_invariant): the result is the one the endpoint would get.
# A final that continues speech cut at a short pause (or forced) is decoded with the end of
# the previous final as left context: its audio leads the window and its words are the known
# start of the transcript (then dropped), so the first words are heard in context, as an
# offline decode hears them, instead of from a cold start at the cut.
CONTEXT = int(3.0 * SAMPLE_RATE)  # at most this much audio of the previous final
CONTEXT_GAP = int(1.0 * SAMPLE_RATE)  # only if the utterance starts within this of its end
CONTEXT_ONSET = int(0.1 * SAMPLE_RATE)  # audio kept before the first context word's start
# A stream whose next interim is this far into its step joins a batch that another stream's
# interim opens: the streams fall into one cycle and share model calls (the decoder's passes
# are shared; two interims in one call cost less than two calls), instead of taking turns.
JOIN_STEP = 0.5
DRAFT_SLACK = 0.3  # seconds: interim words this far outside a final's window still guess it


@dataclass(frozen=True)
class TimedWord:
    word: str  # as written, without surrounding spaces
    start: float  # seconds of stream time
    end: float
    confidence: float


@dataclass(frozen=True)
class Job:
    """A decode the stream needs: `final` closes the utterance."""

    final: bool
    start: int  # first sample of the window (stream time)
    end: int  # one past the last sample
    prompt: str  # earlier text, given to the model as context
    prefix: str = ""  # committed words in the window: the known start of the transcript
    # The window starts after the settled words (their audio is not in it): the final's words
    # are the settled words followed by the decoded ones.
    after_settled: bool = False
    ahead: bool = False  # a final decoded ahead of its endpoint (see the note above)
    # A final's left context (see CONTEXT): samples of the previous utterance's audio at the
    # window's start, and how many of its words `prefix` holds.
    lead: int = 0
    context: int = 0
    # A guess of the words the decode will give after `prefix` (the stream's interim words
    # for this audio): the decoder checks it in one pass instead of decoding it word by word
    # (decoding.greedy_decode). It never changes the result, only how fast it comes.
    draft: str = ""

    @property
    def first(self) -> int:
        """First sample of this stream's own audio in the window (after any context)."""
        return self.start + self.lead


@dataclass(frozen=True)
class SpeechEvent:
    begin: bool  # True: speech started; False: speech ended
    sample: int


@dataclass(frozen=True)
class FinalResult:
    utterance_index: int
    words: tuple[TimedWord, ...]
    start: float
    end: float

    @property
    def transcript(self) -> str:
        return " ".join(w.word for w in self.words)

    @property
    def confidence(self) -> float:
        return float(np.mean([w.confidence for w in self.words])) if self.words else 0.0


@dataclass
class StreamState:
    settings: StreamSettings
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    audio_start: int = 0  # stream sample of audio[0]
    window_start: int = 0  # first sample interim decodes see (settled audio lies before it)
    received: int = 0  # samples received so far
    processed: int = 0  # end of the newest window decoded
    in_speech: bool = False
    silence_run: int = 0  # samples of non-speech since the last voiced frame
    last_voiced: int = 0  # end of the last voiced VAD frame
    vad_frames: int = 0
    utterance_index: int = 0
    utterance_start: int | None = None  # first sample of the open utterance
    settled: list[TimedWord] = field(default_factory=list)  # committed, audio trimmed away
    committed: list[TimedWord] = field(default_factory=list)  # committed, audio in window
    tentative: list[TimedWord] = field(default_factory=list)  # newest hypothesis tail
    history: str = ""  # text of earlier finals (prompt context)
    last_step: int = 0  # `received` at the last interim decode
    # (start, end) samples of ended utterances awaiting their final decode
    endpoints: deque[tuple[int, int]] = field(default_factory=deque)
    closed: bool = False  # client half-closed: everything left gets finalised
    stopped: bool = False  # single_utterance done: ignore further audio
    # (frame start sample, speech probability) of recent VAD frames, for forced cuts: 1024
    # frames of 32 ms = 32.8 s, the second half of the longest allowed utterance
    vad_log: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=1024))
    ahead: tuple[Job, list[TimedWord]] | None = None  # a final decoded ahead, and its words
    context: list[TimedWord] = field(default_factory=list)  # end of the last final (CONTEXT)

    @property
    def backlog(self) -> int:
        return self.received - self.processed


def _normal(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def on_audio(state: StreamState, audio: np.ndarray, probs: np.ndarray) -> list[SpeechEvent]:
    """Append new samples and their VAD frame probabilities; detect speech begin and end."""
    if state.stopped:
        return []
    state.audio = np.concatenate([state.audio, audio])
    state.received += len(audio)
    events: list[SpeechEvent] = []
    for prob in probs:
        frame_start = state.vad_frames * VAD_FRAME
        state.vad_frames += 1
        frame_end = frame_start + VAD_FRAME
        state.vad_log.append((frame_start, float(prob)))
        if not state.in_speech and prob >= SPEECH_START_PROB:
            _begin_utterance(state, frame_start)
            events.append(SpeechEvent(True, frame_start))
        elif state.in_speech:
            if prob >= SPEECH_END_PROB:
                state.silence_run, state.last_voiced = 0, frame_end
            else:
                state.silence_run += VAD_FRAME
                if state.silence_run >= state.settings.silence_ms * SAMPLE_RATE // 1000:
                    end = min(state.last_voiced + END_PAD, frame_end)
                    _end_utterance(state, end)
                    events.append(SpeechEvent(False, state.last_voiced))
    _force_long_utterance(state)
    if not state.in_speech and not state.endpoints:
        _trim(state, state.received - PRE_ROLL)  # idle: keep only the pre-roll
    return events


def _begin_utterance(state: StreamState, frame_start: int) -> None:
    state.in_speech, state.silence_run, state.last_voiced = True, 0, frame_start + VAD_FRAME
    if state.utterance_start is None:
        state.utterance_start = max(state.audio_start, frame_start - PRE_ROLL)
        state.last_step = state.received


def _start(state: StreamState) -> int:
    """First sample of the open utterance (or of the buffer when none is open)."""
    return state.audio_start if state.utterance_start is None else state.utterance_start


def _end_utterance(state: StreamState, end: int) -> None:
    state.in_speech, state.silence_run = False, 0
    state.endpoints.append((_start(state), end))
    state.utterance_start = None
    if state.settings.single_utterance:
        state.stopped = True


def _force_long_utterance(state: StreamState) -> None:
    limit = state.settings.max_utterance_ms * SAMPLE_RATE // 1000
    start = state.utterance_start
    if state.in_speech and start is not None and state.received - start >= limit:
        # Cut at the quietest committed word boundary in the second half of the utterance
        # (a sentence pause, usually), else after the last committed word; never mid-word.
        # The rest opens the next utterance.
        cut = state.received
        if state.committed:
            cut = min(cut, max(start + 1, _cut_point(state, start + limit // 2)))
        state.endpoints.append((start, cut))
        if state.settings.single_utterance:
            state.in_speech, state.stopped = False, True
        state.utterance_start = cut


def _cut_point(state: StreamState, earliest: int) -> int:
    """Sample after the committed word (ending past `earliest`) followed by the lowest voice
    activity; a sentence end wins ties. Falls back to the end of the last committed word."""
    latest = state.received - CUT_MARGIN
    best, best_score = int(state.committed[-1].end * SAMPLE_RATE), float("inf")
    for word in state.committed:
        end = int(word.end * SAMPLE_RATE)
        if not earliest <= end <= latest:
            continue
        quietest = _quietest(state, end)
        if quietest is None:
            continue
        score = quietest[0] - (0.5 if word.word[-1:] in ".?!" else 0.0)
        if score <= best_score:
            best, best_score = end, score
    return best


def _cut_at_pause(state: StreamState, newly_committed: list[TimedWord]) -> None:
    """Close a long utterance after the newest committed word that a pause follows."""
    start = state.utterance_start
    if not state.in_speech or start is None or state.settings.single_utterance:
        return
    for word in reversed(newly_committed):
        end = int(word.end * SAMPLE_RATE)
        if end - start < PAUSE_CUT_AFTER:
            return
        if end > state.received - CUT_MARGIN:
            continue
        quietest = _quietest(state, end)
        if quietest is not None and quietest[0] < SPEECH_END_PROB:
            # cut inside the pause (word ends from alignment can be early by a frame or two)
            cut = max(end, quietest[1])
            state.endpoints.append((start, cut))
            state.utterance_start = cut
            return


def _quietest(state: StreamState, sample: int) -> tuple[float, int] | None:
    """The lowest VAD probability within CUT_SPAN of `sample` and the middle of its frame
    (None when no frame there is logged)."""
    frames = [
        (p, f + VAD_FRAME // 2)
        for f, p in state.vad_log
        if sample - CUT_SPAN < f + VAD_FRAME and f < sample + CUT_SPAN
    ]
    return min(frames, default=None)


def close(state: StreamState) -> list[SpeechEvent]:
    """The client half-closed: whatever speech is open becomes a final (and ends here)."""
    state.closed = True
    events = []
    if state.in_speech:
        events.append(SpeechEvent(False, state.last_voiced))
    if state.in_speech or state.committed or state.tentative:
        state.in_speech = False
        state.endpoints.append((_start(state), state.received))
        state.utterance_start = None
    return events


def _trim(state: StreamState, sample: int) -> None:
    """Drop audio before `sample` (stream time)."""
    cut = min(max(0, sample - state.audio_start), len(state.audio))
    if cut:
        state.audio = state.audio[cut:]
        state.audio_start += cut
    state.window_start = max(state.window_start, state.audio_start)


def _prompt(state: StreamState, settled: bool = True, drop: int = 0) -> str:
    """Earlier text as context: earlier finals (less the last `drop` words, given as the
    window's left context), and the settled words of this utterance when the window leaves
    their audio out."""
    history = state.history.split()
    words = history[: len(history) - drop] + ([w.word for w in state.settled] if settled else [])
    return " ".join(words[-PROMPT_WORDS:])


def _final_job(state: StreamState, start: int, end: int) -> Job:
    """The decode that closes the utterance from `start` to `end`."""
    start = min(max(start, state.audio_start), end)
    if state.settled and end - start > FINAL_WINDOW:  # too long for one decode: the
        start = min(max(start, state.window_start), end)  # settled words stand
        draft = _draft(state, start, end)
        return Job(True, start, end, _prompt(state), after_settled=True, draft=draft)
    # No interim words as prefix: the final is decoded afresh from the whole utterance, so it
    # gets the casing and punctuation that the interims' word-by-word commits lose, and words
    # that the interims committed wrongly at a window edge are decoded again in context.
    context = _context(state, start, end)
    prompt = _prompt(state, settled=False, drop=len(context))
    draft = _draft(state, start, end)
    if not context:
        return Job(True, start, end, prompt, draft=draft)
    lead = start - max(state.audio_start, _onset(context[0]))
    text = " ".join(w.word for w in context)
    return Job(True, start - lead, end, prompt, text, lead=lead, context=len(context), draft=draft)


def _draft(state: StreamState, start: int, end: int) -> str:
    """The interim words heard between `start` and `end`: the final's likely transcript."""
    words = [*state.settled, *state.committed, *state.tentative]
    low, high = start / SAMPLE_RATE - DRAFT_SLACK, end / SAMPLE_RATE + DRAFT_SLACK
    return " ".join(w.word for w in words if w.start >= low and w.end <= high)


def _onset(word: TimedWord) -> int:
    """First sample of audio held for a context word (a little before its aligned start)."""
    return int(word.start * SAMPLE_RATE) - CONTEXT_ONSET


def _context(state: StreamState, start: int, end: int) -> list[TimedWord]:
    """The previous final's words to lead the window from `start` to `end`, if its speech
    ran on into this utterance and their audio is still held."""
    if not state.context or start - int(state.context[-1].end * SAMPLE_RATE) > CONTEXT_GAP:
        return []
    return [
        w
        for w in state.context
        if _onset(w) >= end - FINAL_WINDOW and int(w.start * SAMPLE_RATE) >= state.audio_start
    ]


def without_context(job: Job, hypothesis: list[TimedWord]) -> list[TimedWord]:
    """The decoded words of the job's own audio: its context words dropped."""
    if not job.context:
        return hypothesis
    first = job.first / SAMPLE_RATE
    known = [_normal(w) for w in job.prefix.split()]
    if [_normal(w.word) for w in hypothesis[: job.context]] == known:
        own = hypothesis[job.context :]
    else:  # the model ran the last context word on into a new one (no space): judge by time
        own = [w for w in hypothesis if w.end > first + COMMIT_TOLERANCE]
    # Alignment may start the first own word inside the context audio: the previous final
    # owns that time, so results never overlap.
    return [w if w.start >= first else replace(w, start=first, end=max(w.end, first)) for w in own]


def _ahead_window(state: StreamState) -> Job | None:
    """The final to decode ahead of its endpoint, if the voice has been quiet for END_PAD."""
    if state.silence_run < END_PAD or state.utterance_start is None:
        return None
    end = state.last_voiced + END_PAD
    if end > state.received:
        return None
    job = _final_job(state, state.utterance_start, end)
    return None if job.after_settled else replace(job, ahead=True)


def _same_window(a: Job, b: Job) -> bool:
    """The same decode (the draft only guesses its result)."""
    return replace(a, ahead=False, draft="") == replace(b, ahead=False, draft="")


def keep_ahead(state: StreamState, job: Job, hypothesis: list[TimedWord]) -> None:
    """Store a final decoded ahead of its endpoint."""
    state.ahead = (job, hypothesis)


def take_ahead(state: StreamState) -> tuple[Job, list[TimedWord]] | None:
    """The pending endpoint's final job and words, if they were decoded ahead."""
    if not state.endpoints or state.ahead is None:
        return None
    job = _final_job(state, *state.endpoints[0])
    ahead, words = state.ahead
    if not _same_window(ahead, job):
        return None
    state.ahead = None
    return job, words


def next_job(state: StreamState, ahead: bool = True, join: bool = False) -> Job | None:
    """The decode this stream needs now, if any (finals first). In a pause that may be an
    endpoint, the final decoded ahead (unless `ahead` is False: then a plain interim).
    `join`: another stream's batch is forming; an interim is due after JOIN_STEP of its step."""
    if state.endpoints:
        return _final_job(state, *state.endpoints[0])
    if not (state.in_speech and state.settings.interim_results):
        return None
    window = _ahead_window(state) if ahead else None
    if window is not None:  # once per pause; its words serve as an interim hypothesis too
        done = state.ahead is not None and _same_window(state.ahead[0], window)
        return None if done else window
    step = state.settings.step_ms * SAMPLE_RATE // 1000
    if join:
        step = int(step * JOIN_STEP)
    start = max(state.window_start, _start(state))
    if state.received - state.last_step < step or state.received - start < MIN_WINDOW:
        return None
    prefix = " ".join(w.word for w in state.committed)
    draft = " ".join(w.word for w in state.tentative)
    return Job(False, start, state.received, _prompt(state), prefix, draft=draft)


def window_audio(state: StreamState, job: Job) -> np.ndarray:
    return state.audio[job.start - state.audio_start : job.end - state.audio_start].copy()


def agreed_prefix(new: list[TimedWord], previous: list[TimedWord]) -> int:
    """Length of the longest common prefix of two hypotheses, compared as normalised words."""
    count = 0
    for a, b in zip(new, previous):
        if _normal(a.word) != _normal(b.word):
            break
        count += 1
    return count


def apply_interim(state: StreamState, job: Job, hypothesis: list[TimedWord]) -> None:
    """LocalAgreement-2: commit the words on which this and the previous hypothesis agree."""
    state.last_step = max(state.last_step, job.end)
    state.processed = max(state.processed, job.end)
    done = state.committed or state.settled
    last_end = done[-1].end if done else job.first / SAMPLE_RATE
    # Alignment stretches words, so judge "already committed" by where a word ends.
    new = [w for w in hypothesis if w.end > last_end - COMMIT_TOLERANCE]
    if done and new:  # the model often repeats the last committed words: drop the overlap
        for n in range(min(5, len(done), len(new)), 0, -1):
            if [_normal(w.word) for w in done[-n:]] == [_normal(w.word) for w in new[:n]]:
                new = new[n:]
                break
    agreed = agreed_prefix(new, state.tentative)
    state.committed.extend(new[:agreed])
    state.tentative = new[agreed:]
    if agreed:
        _cut_at_pause(state, new[:agreed])
    if job.end - state.window_start > TRIM_AFTER and state.committed:
        # Interims stop re-decoding the committed audio, so a long utterance costs no more
        # per step than a short one; its audio stays for the final.
        state.settled.extend(state.committed)
        state.committed = []
        state.window_start = max(state.window_start, int(state.settled[-1].end * SAMPLE_RATE))


def apply_final(state: StreamState, job: Job, hypothesis: list[TimedWord]) -> FinalResult | None:
    """Close the utterance: the final decode's words are final."""
    state.endpoints.popleft()
    state.ahead = None
    state.processed = max(state.processed, job.end)
    words = (list(state.settled) if job.after_settled else []) + list(hypothesis)
    if not hypothesis and (state.settled or state.committed):
        # the final decode lost words the interims had agreed on: keep those
        words = list(state.settled) + list(state.committed)
    state.settled, state.committed, state.tentative = [], [], []
    # the end of this final stays as the next one's left context while speech runs on
    state.context = [w for w in words if w.start * SAMPLE_RATE >= job.end - CONTEXT]
    _trim(state, min(_onset(state.context[0]), job.end) if state.context else job.end)
    state.window_start = max(state.window_start, job.end)
    state.last_step = state.received
    if not words:
        return None  # no words: a false VAD trigger, not an utterance
    # The window may start after the utterance did (its early words were settled and their
    # audio trimmed): the utterance starts at its first word then.
    start = min(job.first / SAMPLE_RATE, words[0].start)
    result = FinalResult(state.utterance_index, tuple(words), start, job.end / SAMPLE_RATE)
    state.utterance_index += 1
    state.history = (state.history + " " + result.transcript).strip()[-2000:]
    return result


def interim_view(state: StreamState) -> tuple[list[TimedWord], list[TimedWord]]:
    """(committed words incl. settled, tentative words) for an interim response."""
    return list(state.settled) + list(state.committed), list(state.tentative)
