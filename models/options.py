"""What a recognition call hands the model: `Request`s of audio and text, and the
`TranscribeOptions` (frozen, validated) that say how to decode them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from .decoding import DecodingOptions


@dataclass(frozen=True)
class TranscribeOptions:
    full_window: bool = False  # pad every window to 30 s (True) or encode a shorter span
    # The shorter encoder span (full_window=False): at least this many seconds of encoder
    # input, and at least `encoder_margin_s` of padding after the audio. Chosen by measurement
    # (docs/benchmarks.md): less made tiny.en loop or stop early.
    min_encoder_s: float = 15.0
    encoder_margin_s: float = 5.0
    word_timestamps: bool = True  # align words with the cross-attention heads
    decoding: DecodingOptions = DecodingOptions()
    # Silence guard (Whisper's rule): a window whose <|nospeech|> probability is above this
    # and whose average token log-probability is below `logprob_threshold` yields no text.
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    # Text whose zlib compression ratio is above this is a degenerate loop; it is dropped.
    compression_ratio_threshold: float = 2.4
    # Decode with the batch-invariant twin of the decoder (Whisper.exact_decoder, where the
    # precision has one): each item computes exactly as it would alone, a little slower.
    batch_invariant: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_encoder_s <= 30.0 or self.encoder_margin_s < 0:
            raise ValueError("min_encoder_s must lie in 0-30 s and encoder_margin_s >= 0")
        if not 0.0 <= self.no_speech_threshold <= 1.0:
            raise ValueError(f"no_speech_threshold {self.no_speech_threshold} is outside 0-1")
        if self.compression_ratio_threshold <= 0:
            raise ValueError("compression_ratio_threshold must be positive")


@dataclass(frozen=True)
class Request:
    """One window to recognise."""

    audio: Tensor  # 16 kHz mono float samples, at most 30 s
    prompt: str | Sequence[int] = ""  # earlier text (or its tokens): context, not transcribed
    prefix: str = ""  # the known start of the transcript: fed in one pass and kept as it is
    draft: str = ""  # a guess of the words after the prefix: speeds decoding, never changes it
    offset_s: float = 0.0  # where the window starts in the caller's time (added to all times)
    # phrases the decoder is biased toward, each with its boost in logit units
    # (decoding.PhraseBias); a boost of 0 biases nothing
    hotwords: tuple[tuple[str, float], ...] = ()
