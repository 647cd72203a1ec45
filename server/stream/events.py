"""What a stream tells its client, as typed events; server/responses.py turns them into
protocol messages. The session emits them through one exit (`StreamSession._emit`)."""

from __future__ import annotations

from dataclasses import dataclass

from streamstt.models.audio import SAMPLE_RATE
from streamstt.models.transcriber import Word

from ..settings import StreamSettings
from .endpointing import SpeechBegin, SpeechEnd
from .state import FinalResult, StreamState


@dataclass(frozen=True)
class Progress:
    """How far the stream is, and what the decode behind an event cost."""

    received_s: float  # audio received so far (stream time)
    processed_s: float  # audio decoded so far
    queue_ms: float | None = None  # the decode's wait before the model took it
    compute_ms: float | None = None  # the decode's model time


@dataclass(frozen=True)
class SpeechEvent:
    """Voice activity began or ended (`kind` BEGIN, END), or the one utterance that
    single_utterance asked for is over (END_OF_SINGLE_UTTERANCE)."""

    kind: str
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


Event = SpeechEvent | Interim | Final | End


def progress(state: StreamState, queue_ms: float | None = None, compute_ms: float | None = None):
    return Progress(
        state.received / SAMPLE_RATE, state.processed / SAMPLE_RATE, queue_ms, compute_ms
    )


def interim(state: StreamState, end: int, queue_ms: float, compute_ms: float) -> Interim:
    """The open utterance's hypothesis after a decode of audio up to sample `end`."""
    words = state.words
    return Interim(
        state.utterance_index,
        words.stable,
        words.tentative,
        end / SAMPLE_RATE,
        progress(state, queue_ms, compute_ms),
    )


def speech(
    found: list[SpeechBegin | SpeechEnd], settings: StreamSettings, state: StreamState
) -> list[Event]:
    """What the client asked to hear of voice activity (and of a single utterance's end)."""
    out: list[Event] = []
    for event in found:
        begin = isinstance(event, SpeechBegin)
        time_s = event.sample / SAMPLE_RATE
        if settings.vad_events:
            out.append(SpeechEvent("BEGIN" if begin else "END", time_s, progress(state)))
        if not begin and settings.single_utterance:
            out.append(SpeechEvent("END_OF_SINGLE_UTTERANCE", time_s, progress(state)))
    return out
