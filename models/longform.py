"""Offline recognition of a whole recording: 30 s windows, each going on where the last
complete segment ended and prompted with the text so far (Whisper's seek loop).

`Seek` holds the loop's state, so the same loop runs in one call (`transcribe_long`) or one
window at a time between other work (the server's scheduled Recognize, server/recognize.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from .audio import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE
from .options import Request, TranscribeOptions
from .results import Transcript, merge
from .tokenizer import WhisperTokenizer

if TYPE_CHECKING:
    from .transcriber import Transcriber


class Seek:
    """Where a recording's seek loop stands: the next window, and the text so far."""

    def __init__(
        self,
        tokenizer: WhisperTokenizer,
        audio: Tensor,
        prompt: str = "",
        hotwords: tuple[tuple[str, float], ...] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.hotwords = hotwords
        self.audio = audio
        self.position = 0  # samples decoded so far
        self.pieces: list[Transcript] = []
        self._prompt_tokens = tokenizer.encode_text(prompt)

    def next_request(self) -> Request | None:
        """The next window to decode, or None when the recording is done."""
        window = self.audio[self.position : self.position + N_SAMPLES]
        if self.position >= self.audio.shape[-1] or window.shape[-1] < HOP_LENGTH * 2:
            return None
        offset_s = self.position / SAMPLE_RATE
        return Request(window, self._prompt_tokens, offset_s=offset_s, hotwords=self.hotwords)

    def take(self, request: Request, result: Transcript) -> None:
        """The decoded window: keep its complete segments and move on."""
        self.pieces.append(result)
        window = request.audio.shape[-1]
        self.position += _advance(self.tokenizer, result, window, self.position)
        eot = self.tokenizer.special.eot
        self._prompt_tokens = self._prompt_tokens + [t for t in result.tokens if t < eot]

    def transcript(self) -> Transcript:
        return merge(self.pieces)


def transcribe_long(
    transcriber: Transcriber,
    audio: Tensor,
    options: TranscribeOptions,
    prompt: str = "",
    hotwords: tuple[tuple[str, float], ...] = (),
) -> Transcript:
    seek = Seek(transcriber.tokenizer, audio, prompt, hotwords)
    while (request := seek.next_request()) is not None:
        (result,) = transcriber.transcribe_batch([request], options)
        seek.take(request, result)
    return seek.transcript()


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
