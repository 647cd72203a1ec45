"""Offline recognition of a whole recording: 30 s windows, each going on where the last
complete segment ended and prompted with the text so far (Whisper's seek loop)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from .audio import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE
from .options import Request, TranscribeOptions
from .results import Transcript, merge
from .tokenizer import WhisperTokenizer

if TYPE_CHECKING:
    from .transcriber import Transcriber


def transcribe_long(
    transcriber: Transcriber, audio: Tensor, options: TranscribeOptions, prompt: str = ""
) -> Transcript:
    tokenizer = transcriber.tokenizer
    total = audio.shape[-1]
    seek, pieces = 0, []
    prompt_tokens = tokenizer.encode_text(prompt)
    while seek < total:
        window = audio[seek : seek + N_SAMPLES]
        if window.shape[-1] < HOP_LENGTH * 2:
            break
        request = Request(window, prompt_tokens, offset_s=seek / SAMPLE_RATE)
        (result,) = transcriber.transcribe_batch([request], options)
        pieces.append(result)
        seek += _advance(tokenizer, result, window.shape[-1], seek)
        prompt_tokens = prompt_tokens + [t for t in result.tokens if t < tokenizer.special.eot]
    return merge(pieces)


def _advance(tokenizer: WhisperTokenizer, result: Transcript, window: int, seek: int) -> int:
    """Samples to move on. A full window that was cut mid-segment restarts at its last
    timestamp, and the cut segment is decoded again from the next window."""
    stamps = [t for t in result.tokens if tokenizer.is_timestamp(t)]
    if window < N_SAMPLES or not stamps:
        return window
    last = tokenizer.timestamp_seconds(stamps[-1])
    advance = int(last * SAMPLE_RATE)
    if advance < SAMPLE_RATE:  # never stall on a window
        return window
    cutoff = seek / SAMPLE_RATE + last + 1e-6
    result.segments = [s for s in result.segments if s.end <= cutoff]
    result.words = [w for w in result.words if w.start < cutoff]
    result.text = " ".join(s.text for s in result.segments)
    return advance
