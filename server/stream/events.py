"""What a stream tells its client, as typed events; server/responses.py turns them into
protocol messages. The session emits them through one exit (`StreamSession._emit`)."""

from __future__ import annotations

from dataclasses import dataclass

from streamstt.models.transcriber import Word

from .state import FinalResult


@dataclass(frozen=True)
class Progress:
    """How far the stream is, and what the decode behind an event cost."""

    received_s: float  # audio received so far (stream time)
    processed_s: float  # audio decoded so far
    queue_ms: float | None = None  # the decode's wait before the model took it
    compute_ms: float | None = None  # the decode's model time


@dataclass(frozen=True)
class SpeechActivity:
    begin: bool  # True: speech started; False: it stopped
    time_s: float
    progress: Progress


@dataclass(frozen=True)
class SingleUtteranceEnded:
    """single_utterance was asked for and the utterance is over."""

    time_s: float
    progress: Progress


@dataclass(frozen=True)
class Interim:
    utterance_index: int
    committed: tuple[Word, ...]  # words that stay (LocalAgreement)
    tentative: tuple[Word, ...]  # the newest hypothesis after them
    end_s: float  # end of the audio the hypothesis covers
    progress: Progress


@dataclass(frozen=True)
class Final:
    result: FinalResult
    progress: Progress


@dataclass(frozen=True)
class End:
    """The stream is over: the call ends with this status (a grpc.StatusCode name)."""

    code: str
    message: str = ""


Event = SpeechActivity | SingleUtteranceEnded | Interim | Final | End
