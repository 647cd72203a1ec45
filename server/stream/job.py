"""A decode that a stream needs, and the decoding options of each kind."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import torch

from streamstt.models.audio import SAMPLE_RATE
from streamstt.models.decoding import DecodingOptions
from streamstt.models.options import FALLBACK_TEMPERATURES
from streamstt.models.transcriber import Request, TranscribeOptions

# Chosen by measurement (docs/benchmarks.md). Interims re-decode often, so they encode a
# shorter span (>= 15 s); a final is decoded once per utterance with the full 30 s window and
# the batch-invariant kernels. Neither samples timestamp tokens: word times come from the
# alignment heads. A final whose decode loops (the loop guard cut it, its text compresses
# above 2.4, or it says a three-word phrase three times in a row) is decoded again, first
# by the same search with timestamp tokens (`retry_with_timestamps`), then hotter, as
# offline: kept, its words were the next final's left context, and the finals after it
# wrote the loop on over 20-30 s of speech (docs/accuracy.md). An untrusted interim commits
# nothing, so it needs no second try.
INTERIM_OPTIONS = TranscribeOptions(full_window=False, decoding=DecodingOptions(timestamps=False))
FINAL_OPTIONS = TranscribeOptions(
    full_window=True,
    decoding=DecodingOptions(timestamps=False),
    batch_invariant=True,
    temperatures=FALLBACK_TEMPERATURES,
    fallback_on_logprob=False,
    loop_phrase_repeats=3,
    retry_with_timestamps=True,
)


@cache
def final_options(beam_size: int) -> TranscribeOptions:
    """A final's options: beam search of `beam_size` (models.beam) for the final of an
    utterance whose interims the model was unsure of (planning.final_job); on noisy audio
    it cut the streamed finals' WER by several points (docs/accuracy.md), on clear speech
    it changed no word and is not paid."""
    if beam_size <= 1:
        return FINAL_OPTIONS
    return replace(FINAL_OPTIONS, decoding=replace(FINAL_OPTIONS.decoding, beam_size=beam_size))


@dataclass(frozen=True)
class Job:
    """A decode of the window [start, end) of stream time; `final` closes the utterance."""

    final: bool
    start: int
    end: int
    prompt: str  # earlier text, given to the model as context
    prefix: str = ""  # known start of the transcript: committed words, or left-context words
    # The window starts after the settled words (their audio is not in it): the final's words
    # are the settled words followed by the decoded ones.
    after_settled: bool = False
    # Done ahead of need, only when the model would idle (server.scheduler._collect): a
    # final decoded before its endpoint came, or an interim brought forward by a dip (planning)
    early: bool = False
    # A final's left context: samples of the previous utterance's audio that lead the window,
    # and how many of its words open `prefix`.
    lead_samples: int = 0
    context_words: int = 0
    # A guess of the words after `prefix` (the stream's interim words for this audio): the
    # decoder checks it in one pass. It changes how fast the result comes; in fp32 never the
    # result (with a bf16 decoder the rounding of a block differs: models.options.Request).
    draft: str = ""
    # A final decoded freely: how many committed words its result must open with (else they
    # replace its words for their audio, or it is decoded again with them given: a committed
    # word stays).
    keeps: int = 0
    beam_size: int = 1  # a final's beams (final_options); 1: greedy

    @property
    def first(self) -> int:
        """First sample of this utterance's own audio in the window (after any lead)."""
        return self.start + self.lead_samples

    @property
    def options(self) -> TranscribeOptions:
        if not self.final:
            return INTERIM_OPTIONS
        return final_options(self.beam_size)

    def request(self, audio: np.ndarray) -> Request:
        """What the model is asked, given the window's samples."""
        return Request(
            torch.from_numpy(audio), self.prompt, self.prefix, self.draft, self.start / SAMPLE_RATE
        )
