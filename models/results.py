"""From decoded tokens to what callers read: text, segments, words, confidences, guards."""

from __future__ import annotations

import math
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

from .alignment import Word
from .audio import TOKENS_PER_SECOND
from .decoding import DecodedSequence
from .options import TranscribeOptions
from .tokenizer import WhisperTokenizer


@dataclass(frozen=True)
class Segment:
    start: float  # seconds, in the caller's time (the window's offset added)
    end: float
    text: str
    tokens: tuple[int, ...]


@dataclass
class Transcript:
    text: str
    segments: list[Segment]
    words: list[Word]
    tokens: list[int]  # sampled tokens of every window, timestamps included
    no_speech_prob: float
    avg_logprob: float
    confidence: float  # mean token probability of the text
    repetition_loop: bool = False
    temperature: float = 0.0  # of the decode kept (models.fallback; the highest of a merge)
    beam_size: int = 1  # beams of the search kept (1: greedy or sampled; the most of a merge)
    dropped: str = ""  # why text was suppressed by a guard ("" = kept)
    # the text tokens (no specials) and their probabilities, for word alignment
    text_tokens: list[int] = field(default_factory=list, repr=False)
    token_probs: list[float] = field(default_factory=list, repr=False)


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / max(1, len(zlib.compress(raw)))


def normal(word: str) -> str:
    """A word as transcripts are compared (the stream's agreement, loop checks): lower case,
    no punctuation."""
    return re.sub(r"[^\w']", "", word.lower())


def repeated_phrase(text: str, length: int, times: int, period: int) -> bool:
    """Whether some run of `length` words is said `times` times in a row in `text`, each copy
    starting at most `period` words after the one before (compared lower case, without
    punctuation): a decoder's loop over a short clause, a word changed or the last copy cut
    short ("half a three-fold in case they're half a three-fold in case they're half a
    three-fold"), that neither the token loop guard (exact repeats in a row) nor the
    compression ratio (short text) sees. Speech says a phrase three times that close only on
    purpose, and a hotter decode of it says so too."""
    words = [w for w in map(normal, text.split()) if w]
    starts: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i in range(len(words) - length + 1):
        starts[tuple(words[i : i + length])].append(i)
    for positions in starts.values():
        run = 1
        for before, after in zip(positions, positions[1:]):
            run = run + 1 if after - before <= period else 1
            if run >= times:
                return True
    return False


def is_silence(seq: DecodedSequence, options: TranscribeOptions) -> bool:
    """Whisper's no-speech rule: a likely <|nospeech|> and an unsure transcript."""
    return (
        seq.no_speech_prob > options.no_speech_threshold
        and seq.avg_logprob < options.logprob_threshold
    )


def guard(seq: DecodedSequence, text: str, options: TranscribeOptions) -> str:
    """Why Whisper's guards drop this window's text ("" = it is kept): the silence rule
    (`is_silence`), a degenerate loop, or punctuation alone."""
    if is_silence(seq, options):
        return "no_speech"
    if compression_ratio(text) > options.compression_ratio_threshold:
        return "compression_ratio"
    if text.strip() and not any(c.isalnum() for c in text):
        return "no_words"  # a lone "." or "..." over hum or noise: nothing was said
    return ""


def to_transcript(
    seq: DecodedSequence,
    tokenizer: WhisperTokenizer,
    options: TranscribeOptions,
    positions: int,
    offset: float,
) -> Transcript:
    """A window's transcript (words are added by alignment); `positions`: encoder positions
    of real audio, `offset`: the window's start in the caller's time."""
    eot = tokenizer.special.eot
    text_tokens = [t for t in seq.tokens if t < eot]
    probs = [math.exp(lp) for t, lp in zip(seq.tokens, seq.token_logprobs) if t < eot]
    text = tokenizer.decode(text_tokens)
    dropped = guard(seq, text, options)
    if dropped:
        text_tokens, probs, text = [], [], ""
    return Transcript(
        text=text.strip(),
        segments=[] if dropped else segments(tokenizer, seq.tokens, offset, positions),
        words=[],
        tokens=list(seq.tokens),
        no_speech_prob=seq.no_speech_prob,
        avg_logprob=seq.avg_logprob,
        confidence=sum(probs) / len(probs) if probs else 0.0,
        repetition_loop=seq.repetition_loop,
        temperature=seq.temperature,
        beam_size=seq.beam_size,
        dropped=dropped,
        text_tokens=text_tokens,
        token_probs=probs,
    )


def segments(
    tokenizer: WhisperTokenizer, tokens: list[int], offset: float, positions: int
) -> list[Segment]:
    """Split sampled tokens at timestamp pairs; text without timestamps is one segment."""
    end_of_audio = positions / TOKENS_PER_SECOND
    found: list[Segment] = []
    current: list[int] = []
    start = 0.0
    for token in tokens:
        if not tokenizer.is_timestamp(token):
            current.append(token)
            continue
        stamp = tokenizer.timestamp_seconds(token)
        if current:
            end = offset + min(stamp, end_of_audio)
            found.append(_segment(tokenizer, current, offset + start, end))
            current = []
        start = stamp
    if current:
        found.append(_segment(tokenizer, current, offset + start, offset + end_of_audio))
    return [s for s in found if s.text]


def _segment(tokenizer: WhisperTokenizer, tokens: list[int], start: float, end: float) -> Segment:
    return Segment(start, end, tokenizer.decode(tokens).strip(), tuple(tokens))


def merge(pieces: list[Transcript]) -> Transcript:
    """The transcripts of consecutive windows as one."""
    if not pieces:
        return Transcript("", [], [], [], 1.0, 0.0, 0.0)
    texts = [p.text for p in pieces if p.text]
    confidences = [p.confidence for p in pieces if p.text]
    return Transcript(
        text=" ".join(texts),
        segments=[s for p in pieces for s in p.segments],
        words=[w for p in pieces for w in p.words],
        tokens=[t for p in pieces for t in p.tokens],
        no_speech_prob=min(p.no_speech_prob for p in pieces),
        avg_logprob=sum(p.avg_logprob for p in pieces) / len(pieces),
        confidence=sum(confidences) / len(confidences) if confidences else 0.0,
        repetition_loop=any(p.repetition_loop for p in pieces),
        temperature=max(p.temperature for p in pieces),
        beam_size=max(p.beam_size for p in pieces),
        dropped=",".join(p.dropped for p in pieces if p.dropped),
    )
