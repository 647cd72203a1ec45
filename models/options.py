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
    # Temperature fallback (models.fallback): a window that fails the guards above (or loops)
    # is decoded again at each next temperature. (0.0,): greedy only (a stream's interims).
    temperatures: tuple[float, ...] = (0.0,)
    # Whether a low average log-probability alone (`logprob_threshold`) sends a window to the
    # fallback, as in the reference (offline). A stream's finals are tried again only when
    # their text is degenerate (a loop): each hotter try is one more decode of the window,
    # and on noisy speech most finals average under -1.0 (babble at 5 dB: -1.2 offline).
    fallback_on_logprob: bool = True
    # A phrase of `loop_phrase_words` words said this many times in a row in one window's
    # text, each copy within `loop_phrase_period` words of the one before, is a loop too
    # (results.repeated_phrase); 0: off, as in the reference (offline).
    loop_phrase_repeats: int = 0
    loop_phrase_words: int = 3
    loop_phrase_period: int = 8
    # A window decoded without timestamp tokens (a stream's final) whose decode needs the
    # fallback is decoded again at temperature 0 with them before any hotter try: Whisper
    # learned to close a segment with a timestamp, and without them its beams can loop on
    # a phrase where with them they do not (white noise at 5 dB, docs/accuracy.md).
    retry_with_timestamps: bool = False
    # Long form (models.longform): the text so far is the next window's prompt, unless a
    # window needed a temperature above this (its text is unsure: Whisper starts afresh).
    condition_on_previous_text: bool = True
    prompt_reset_temperature: float = 0.5
    # Beam search where greedy is unsure (models.fallback): a window whose greedy decode
    # averages a log-probability under `unsure_logprob` (and is not silence) is decoded again
    # by beam search of this many beams at temperature 0, before any hotter try. 1: off.
    # Clear speech stays greedy (-0.17 to -0.26 on the hard fixtures' clean windows, -0.37
    # and below in noise); -0.4 is the streaming engine's trust floor too
    # (server.stream.agreement.MIN_COMMIT_LOGPROB).
    unsure_beam_size: int = 1
    unsure_logprob: float = -0.4
    # Long form (models.longform): the window after one whose greedy decode was unsure (or
    # needed a hotter try) is searched with `unsure_beam_size` beams at once, without its
    # own greedy decode, which would most likely be thrown away: a recording's windows share
    # its noise. It stays so while each searched window averages under `unsure_logprob`; a
    # window dropped as silence ends it. (Offline, 32 noisy 44 s files: the same text in
    # 10 % less time; 168 s of long form in white noise: 22-27 % less; docs/accuracy.md.)
    search_after_unsure: bool = False
    # Long form: cut each window's log-mel from the whole recording's (its dynamic range
    # taken over the whole file, as the reference does) instead of computing it per window.
    recording_features: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_encoder_s <= 30.0 or self.encoder_margin_s < 0:
            raise ValueError("min_encoder_s must lie in 0-30 s and encoder_margin_s >= 0")
        if not 0.0 <= self.no_speech_threshold <= 1.0:
            raise ValueError(f"no_speech_threshold {self.no_speech_threshold} is outside 0-1")
        if self.compression_ratio_threshold <= 0:
            raise ValueError("compression_ratio_threshold must be positive")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ValueError(f"temperatures {self.temperatures} must be non-negative, at least one")
        if self.loop_phrase_repeats < 0 or min(self.loop_phrase_words, self.loop_phrase_period) < 1:
            raise ValueError(
                "loop_phrase_repeats must be >= 0, loop_phrase_words and loop_phrase_period >= 1"
            )
        if self.unsure_beam_size < 1:
            raise ValueError(f"unsure_beam_size must be at least 1, not {self.unsure_beam_size}")


# Whisper's fallback temperatures: greedy first, then sampling hotter and hotter.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# What a whole recording gets offline (`streamstt transcribe`, Recognize): the 30 s window
# Whisper was trained on, its temperature fallback, and beam search of 5 (the reference's
# default) where greedy is unsure.
OFFLINE_OPTIONS = TranscribeOptions(
    full_window=True,
    temperatures=FALLBACK_TEMPERATURES,
    unsure_beam_size=5,
    search_after_unsure=True,
)


@dataclass(frozen=True)
class Request:
    """One window to recognise."""

    audio: Tensor  # 16 kHz mono float samples, at most 30 s
    prompt: str | Sequence[int] = ""  # earlier text (or its tokens): context, not transcribed
    prefix: str = ""  # the known start of the transcript: fed in one pass and kept as it is
    # a guess of the words after the prefix: speeds decoding. In fp32 it never changes the
    # result; a bf16 decoder rounds a block of tokens differently from one token at a time,
    # which flipped 14 of 84 greedy decodes of noisy windows (a draft of their own words,
    # or others), so there the draft can change the text
    draft: str = ""
    offset_s: float = 0.0  # where the window starts in the caller's time (added to all times)
    # phrases the decoder is biased toward, each with its boost in logit units
    # (decoding.PhraseBias); a boost of 0 biases nothing
    hotwords: tuple[tuple[str, float], ...] = ()
    # the window's log-mel, cut from its whole recording's (audio.recording_features; long
    # form), (n_mels, frames); None: computed from `audio` alone
    features: Tensor | None = None
