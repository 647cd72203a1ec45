"""Offline recognition of a whole recording: 30 s windows, each going on where the last
complete segment ended and prompted with the text so far (Whisper's seek loop).

`Seek` holds the loop's state, so the same loop runs in one call (`transcribe_long`) or one
window at a time between other work (the server's scheduled Recognize, server/recognize.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from torch import Tensor

from .audio import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE, recording_features
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
        options: TranscribeOptions = TranscribeOptions(),
        features: Tensor | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.hotwords = hotwords
        self.audio = audio
        self.options = options
        self.features = features  # the whole recording's log-mel (recording_features) or None
        self.position = 0  # samples decoded so far
        self.pieces: list[Transcript] = []
        self._prompt_tokens = tokenizer.encode_text(prompt)
        self._search = False  # the next window is searched with beams at once

    @property
    def window_options(self) -> TranscribeOptions:
        """The options to decode the next window with: `options`, or with
        `options.search_after_unsure` after an unsure window, its beam search at once."""
        if not self._search:
            return self.options
        decoding = replace(self.options.decoding, beam_size=self.options.unsure_beam_size)
        return replace(self.options, decoding=decoding)

    def next_request(self) -> Request | None:
        """The next window to decode, or None when the recording is done."""
        window = self.audio[self.position : self.position + N_SAMPLES]
        if self.position >= self.audio.shape[-1] or window.shape[-1] < HOP_LENGTH * 2:
            return None
        offset_s = self.position / SAMPLE_RATE
        features = None
        if self.features is not None:
            start = self.position // HOP_LENGTH
            features = self.features[:, start : start + max(1, window.shape[-1] // HOP_LENGTH)]
        return Request(
            window,
            self._prompt_tokens,
            offset_s=offset_s,
            hotwords=self.hotwords,
            features=features,
        )

    def take(self, request: Request, result: Transcript) -> None:
        """The decoded window: keep its complete segments and move on."""
        self.pieces.append(result)
        self._search = self._unsure(result)
        window = request.audio.shape[-1]
        advance, kept = _advance(self.tokenizer, result, window, self.position)
        self.position += advance
        self._prompt_tokens = self._prompt_tokens + result.tokens[:kept]
        # a hot fallback's text is unsure: Whisper does not let it steer the next window
        if (
            not self.options.condition_on_previous_text
            or result.temperature > self.options.prompt_reset_temperature
        ):
            self._prompt_tokens = []

    def transcript(self) -> Transcript:
        return merge(self.pieces)

    def _unsure(self, result: Transcript) -> bool:
        """Whether the window just decoded makes the next one searched at once: its greedy
        decode was unsure (it was searched with beams) or needed a hotter try; a window that
        was itself searched at once has no greedy decode to judge, so its search's average
        is judged instead. A window dropped as silence says nothing of the next."""
        options = self.options
        if not options.search_after_unsure or result.dropped:
            return False
        if options.unsure_beam_size <= options.decoding.beam_size:
            return False  # every window is searched anyway
        if self._search:
            return result.avg_logprob < options.unsure_logprob
        return result.beam_size > options.decoding.beam_size or result.temperature > 0


def transcribe_long(
    transcriber: Transcriber,
    audio: Tensor,
    options: TranscribeOptions,
    prompt: str = "",
    hotwords: tuple[tuple[str, float], ...] = (),
) -> Transcript:
    features = None
    if options.recording_features:
        features = recording_features(audio.float(), transcriber.model.dims.n_mels)
    seek = Seek(transcriber.tokenizer, audio, prompt, hotwords, options, features)
    while (request := seek.next_request()) is not None:
        (result,) = transcriber.transcribe_batch([request], seek.window_options)
        seek.take(request, result)
    return seek.transcript()


def _advance(
    tokenizer: WhisperTokenizer, result: Transcript, window: int, seek: int
) -> tuple[int, int]:
    """Samples to move on, and how many of the window's tokens stand (they join the prompt).

    Whisper's seek rule: a window whose tokens hold a timestamp pair and do not end with a
    closed segment (text, timestamp) restarts at its last timestamp; the segment cut there
    (if any) is dropped here and decoded again from the next window. The last, shorter
    window too: a decode that closes its segments early there (a timestamp pair, then the
    end) leaves the audio after them to a window of its own. Any other window is done as a
    whole; a window dropped as silence gives no prompt."""
    tokens = result.tokens
    if result.dropped:
        return window, 0
    stamps = [tokenizer.is_timestamp(t) for t in tokens]
    pairs = [i + 1 for i in range(len(tokens) - 1) if stamps[i] and stamps[i + 1]]
    if stamps[-2:] == [False, True] or not pairs:
        return window, len(tokens)
    cut = pairs[-1]
    last = tokenizer.timestamp_seconds(tokens[cut])
    advance = int(last * SAMPLE_RATE)
    if advance < SAMPLE_RATE:  # never stall on a window
        return window, len(tokens)
    cutoff = seek / SAMPLE_RATE + last + 1e-6
    result.segments = [s for s in result.segments if s.end <= cutoff]
    result.words = [w for w in result.words if w.start < cutoff]
    result.text = " ".join(s.text for s in result.segments)
    return advance, cut
