"""A stream's recognition state: one frozen value that the pure steps (steps.py) replace.

Sample counts are stream time: 16 kHz samples from the first byte of audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamstt.models.transcriber import Word

from ..settings import StreamSettings
from .agreement import Agreement
from .endpointing import Endpointing
from .job import Job


@dataclass(frozen=True)
class Decoded:
    """A final's decode that waits for its utterance to be the next one to close."""

    job: Job
    words: tuple[Word, ...]


@dataclass(frozen=True)
class FinalResult:
    utterance_index: int
    words: tuple[Word, ...]
    start: float  # seconds
    end: float

    @property
    def transcript(self) -> str:
        return " ".join(w.word for w in self.words)

    @property
    def confidence(self) -> float:
        return float(np.mean([w.probability for w in self.words])) if self.words else 0.0


@dataclass(frozen=True)
class StreamState:
    settings: StreamSettings
    received: int = 0  # samples received so far
    processed: int = 0  # end of the newest window decoded
    audio_start: int = 0  # first sample still held
    speech: Endpointing = Endpointing()
    words: Agreement = Agreement()
    pending: tuple[tuple[int, int], ...] = ()  # ended utterances awaiting their final
    utterance_index: int = 0  # of the open utterance (finals so far)
    last_step: int = 0  # `received` at the last interim decode
    history: str = ""  # text of earlier finals (and phrase hints): the prompt
    previous_tail: tuple[Word, ...] = ()  # end of the last final: left context for the next
    decoded: Decoded | None = None  # a final decoded (perhaps before its endpoint), unsent
    # The next final's free decode changed a committed word: decode it again with the
    # committed words as its given start (steps.take_final).
    constrain_final: bool = False
    closed: bool = False  # the client half-closed: everything left gets finalised

    @property
    def idle(self) -> bool:
        """No utterance open and none waiting for its final."""
        return not self.pending and not self.speech.in_speech

    @property
    def done(self) -> bool:
        """Nothing more will come: half-closed (or the one utterance over) and idle."""
        return (self.closed or self.speech.finished) and self.idle
