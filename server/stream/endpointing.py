"""Endpointing: where utterances begin and end, from voice activity and committed words.

Pure steps over an explicit, frozen `Endpointing` state: VAD hysteresis with `silence_ms`,
the pause cut that closes long continuous speech at its first short pause, and the forced
cut at `max_utterance_ms`. docs/architecture.md says why each rule exists.
Sample counts are stream time at 16 kHz.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from streamstt.models.audio import SAMPLE_RATE
from streamstt.models.transcriber import Word

from ..settings import StreamSettings
from .vad import VAD_FRAME

SPEECH_START_PROB = 0.5  # Silero's recommended threshold
SPEECH_END_PROB = 0.35  # hysteresis: speech continues until the probability drops below this
PRE_ROLL = int(0.3 * SAMPLE_RATE)  # samples kept before detected speech (soft onsets)
END_PAD = int(0.2 * SAMPLE_RATE)  # samples kept after the last voiced frame in a final
CUT_SPAN = int(0.1 * SAMPLE_RATE)  # audio each side of a word boundary judged for a cut
CUT_MARGIN = int(0.3 * SAMPLE_RATE)  # no forced cut this close to the newest audio
# Audio heard after a word before a pause may end it: enough for the VAD frame after the word
# (32 ms) to show the dip; more only delays the final (the cuts were the same at 0.12 s).
PAUSE_MARGIN = int(0.05 * SAMPLE_RATE)
PAUSE_CUT_AFTER = int(5.0 * SAMPLE_RATE)  # utterance length from which a short pause ends it
VAD_LOG_FRAMES = 1024  # frames of probabilities kept for cuts (32.8 s: half the longest)


@dataclass(frozen=True)
class SpeechBegin:
    sample: int  # start of the first voiced frame
    opens_utterance: bool  # False: speech resumed inside the open utterance


@dataclass(frozen=True)
class SpeechEnd:
    sample: int  # end of the last voiced frame


@dataclass(frozen=True)
class UtteranceEnd:
    """An utterance is over: the window [start, end) awaits its final decode."""

    start: int
    end: int


Event = SpeechBegin | SpeechEnd | UtteranceEnd


@dataclass(frozen=True, eq=False)
class Endpointing:
    in_speech: bool = False
    silence_run: int = 0  # samples of non-speech since the last voiced frame
    last_voiced: int = 0  # end of the last voiced VAD frame
    frames: int = 0  # VAD frames seen
    utterance_start: int | None = None  # first sample of the open utterance
    finished: bool = False  # single_utterance: the one utterance has ended
    # speech probabilities of the newest VAD_LOG_FRAMES frames (the last is frame frames - 1)
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def start_or(self, fallback: int) -> int:
        """First sample of the open utterance, or `fallback` when none is open."""
        return fallback if self.utterance_start is None else self.utterance_start


def on_vad(
    state: Endpointing,
    probs: np.ndarray,
    settings: StreamSettings,
    audio_start: int,
    received: int,
    committed: Sequence[Word],
) -> tuple[Endpointing, list[Event]]:
    """Fold the probabilities of newly completed VAD frames in; then the forced cut.
    `audio_start`: first sample still held; `received`: samples so far (after this audio)."""
    if state.finished:
        return state, []
    silence_limit = settings.silence_ms * SAMPLE_RATE // 1000
    events: list[Event] = []
    s = replace(state, recent=np.concatenate([state.recent, probs])[-VAD_LOG_FRAMES:])
    for prob in probs:
        frame_start = s.frames * VAD_FRAME
        s = replace(s, frames=s.frames + 1)
        if not s.in_speech and prob >= SPEECH_START_PROB:
            s, begin = _begin(s, frame_start, audio_start)
            events.append(begin)
        elif s.in_speech and prob >= SPEECH_END_PROB:
            s = replace(s, silence_run=0, last_voiced=frame_start + VAD_FRAME)
        elif s.in_speech:
            s = replace(s, silence_run=s.silence_run + VAD_FRAME)
            if s.silence_run >= silence_limit:
                end = min(s.last_voiced + END_PAD, frame_start + VAD_FRAME)
                start = s.start_or(audio_start)
                events += [SpeechEnd(s.last_voiced)] + ([UtteranceEnd(start, end)] * (end > start))
                s = _end(s, settings)
                if s.finished:  # the one utterance asked for: later frames are ignored
                    return replace(s, frames=state.frames + len(probs)), events

    s, forced = _force_cut(s, settings, received, committed)
    return s, events + forced


def _begin(s: Endpointing, frame_start: int, audio_start: int) -> tuple[Endpointing, SpeechBegin]:
    opens = s.utterance_start is None
    start = max(audio_start, frame_start - PRE_ROLL) if opens else s.utterance_start
    s = replace(
        s, in_speech=True, silence_run=0, last_voiced=frame_start + VAD_FRAME, utterance_start=start
    )
    return s, SpeechBegin(frame_start, opens)


def _end(s: Endpointing, settings: StreamSettings) -> Endpointing:
    return replace(
        s,
        in_speech=False,
        silence_run=0,
        utterance_start=None,
        finished=settings.single_utterance,
    )


def _force_cut(
    s: Endpointing, settings: StreamSettings, received: int, committed: Sequence[Word]
) -> tuple[Endpointing, list[Event]]:
    """At max_utterance_ms: cut at the quietest word boundary in the utterance's second half
    (a sentence pause, usually), else at its quietest moment. The rest opens the next
    utterance."""
    limit = settings.max_utterance_ms * SAMPLE_RATE // 1000
    start = s.utterance_start
    if not s.in_speech or start is None or received - start < limit:
        return s, []
    cut = min(received, max(start + 1, _cut_point(s, committed, start + limit // 2, received)))
    if settings.single_utterance:
        s = replace(s, in_speech=False, finished=True)
    return replace(s, utterance_start=cut), [UtteranceEnd(start, cut)]


def _cut_point(s: Endpointing, words: Sequence[Word], earliest: int, received: int) -> int:
    """Sample after the word (ending past `earliest`) followed by the lowest voice activity;
    a sentence end wins ties. Where the decodes heard no word there (noise, or decodes that
    stopped short: "The" over 15 s of speech at 5 dB SNR), the quietest VAD frame there: a
    cut after an earlier word left a sliver of an utterance, and its final, decoded without
    the words after it, was a hallucination that then led the next window (docs/accuracy.md)."""
    latest = received - CUT_MARGIN
    best, best_score = None, float("inf")
    for word in words:
        end = int(word.end * SAMPLE_RATE)
        if not earliest <= end <= latest:
            continue
        quietest = _quietest(s, end)
        if quietest is None:
            continue
        score = quietest[0] - (0.5 if word.word[-1:] in ".?!" else 0.0)
        if score <= best_score:
            best, best_score = end, score
    if best is not None:
        return best
    quietest = _quietest_between(s, earliest, latest)
    return received if quietest is None else quietest[1]


def pause_cut(
    s: Endpointing, words: Sequence[Word], received: int, settings: StreamSettings
) -> tuple[Endpointing, UtteranceEnd | None]:
    """Continuous speech (reading, a monologue) pauses between phrases for less than
    silence_ms: an utterance PAUSE_CUT_AFTER long closes after the newest of `words` that a
    pause follows (the VAD probability under SPEECH_END_PROB near its end), so its final
    comes a moment after that word. The rest opens the next utterance."""
    start = s.utterance_start
    if not s.in_speech or start is None or settings.single_utterance:
        return s, None
    for word in reversed(words):
        end = int(word.end * SAMPLE_RATE)
        if end - start < PAUSE_CUT_AFTER:
            return s, None
        if end > received - PAUSE_MARGIN:
            continue
        quietest = _quietest(s, end)
        if quietest is not None and quietest[0] < SPEECH_END_PROB:
            # cut inside the pause (word ends from alignment can be early by a frame or two)
            cut = max(end, quietest[1])
            return replace(s, utterance_start=cut), UtteranceEnd(start, cut)
    return s, None


def dipped_since(s: Endpointing, sample: int) -> bool:
    """Whether the voice began to dip under SPEECH_END_PROB (a pause that a cut might
    follow) in a frame that began at or after `sample`, in an utterance long enough to be
    cut."""
    start = s.utterance_start
    if not s.in_speech or start is None or s.frames * VAD_FRAME - start < PAUSE_CUT_AFTER:
        return False
    first = max(-(-sample // VAD_FRAME), s.frames - len(s.recent) + 1)
    if first >= s.frames:
        return False
    quiet = s.recent < SPEECH_END_PROB
    onsets = quiet[1:] & ~quiet[:-1]  # onsets[k]: frame k + 1 is the first quiet one
    return bool(onsets[first - (s.frames - len(s.recent)) - 1 :].any())


def _quietest(s: Endpointing, sample: int) -> tuple[float, int] | None:
    """The lowest VAD probability within CUT_SPAN of `sample` and the middle of its frame,
    the earliest on ties (None when no frame there is logged)."""
    return _quietest_between(s, sample - CUT_SPAN, sample + CUT_SPAN)


def _quietest_between(
    s: Endpointing, low_sample: int, high_sample: int
) -> tuple[float, int] | None:
    """The lowest VAD probability of the logged frames that overlap [low_sample,
    high_sample) and the middle of its frame, the earliest on ties."""
    first = s.frames - len(s.recent)  # frame number of recent[0]
    # frames f with f * VAD_FRAME in (low_sample - VAD_FRAME, high_sample)
    low = max(low_sample // VAD_FRAME, first)
    high = min(-(-high_sample // VAD_FRAME), s.frames)
    if low >= high:
        return None
    best = low + int(np.argmin(s.recent[low - first : high - first]))
    return float(s.recent[best - first]), best * VAD_FRAME + VAD_FRAME // 2


def close(
    s: Endpointing, audio_start: int, received: int, has_words: bool
) -> tuple[Endpointing, list[Event]]:
    """The client half-closed: whatever speech is open becomes an utterance that ends here."""
    events: list[Event] = []
    if s.in_speech:
        events.append(SpeechEnd(s.last_voiced))
    if s.in_speech or has_words:
        events.append(UtteranceEnd(s.start_or(audio_start), received))
        s = replace(s, in_speech=False, utterance_start=None)
    return s, events
