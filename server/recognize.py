"""Recognize as scheduled work: a whole recording decoded one 30 s window at a time by the
same scheduler as the live streams, after them.

A window runs alone (it is a final-like job: the full window with the offline options), and
only while no live stream is open (server.scheduler._eligible: the model is not preempted, so
a window beside live streams would hold their interims back). Between Recognize calls the
one that waited longest goes next, so calls take turns. The call's
handler awaits `result`; the call going away cancels the work (no more windows).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from torch import Tensor

from streamstt.models.audio import (
    SAMPLE_RATE,
    AudioDecodeError,
    decode_audio,
    decode_channels,
    resample,
)
from streamstt.models.longform import Seek
from streamstt.models.options import OFFLINE_OPTIONS, Request, TranscribeOptions
from streamstt.models.results import Transcript
from streamstt.models.tokenizer import WhisperTokenizer

from . import validation
from .stream.channels import split
from .stream.pcm import AudioFormatError, bytes_per_frame, decode_chunk

_IDS = itertools.count(1)
# Added to a Recognize window's deadline: later than any live stream's (budgets are <= 60 s).
BACKGROUND_S = 1e6


@dataclass(frozen=True)
class Window:
    """The scheduler's job for one window; like a final it runs alone."""

    request: Request
    final: bool = True
    early: bool = False
    options: TranscribeOptions = field(default=OFFLINE_OPTIONS)


class RecognizeFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class RecognizeWork:
    """One Recognize call as seen by the scheduler (server.scheduler.Session)."""

    background = True  # runs when no live stream is open (scheduler._eligible)

    def __init__(
        self,
        tokenizer: WhisperTokenizer,
        audio: Tensor,
        notify: Callable[[], None],
        prompt: str = "",
        hotwords: tuple[tuple[str, float], ...] = (),
        features: Tensor | None = None,
    ) -> None:
        self.stream_id = f"r{next(_IDS)}"
        self.result: asyncio.Future[Transcript] = asyncio.get_running_loop().create_future()
        self._seek = Seek(tokenizer, audio, prompt, hotwords, OFFLINE_OPTIONS, features)
        self._waiting_since = time.monotonic()
        self._notify = notify

    def next_job(self, allow_early: bool = True, join: bool = False) -> Window | None:
        if self.result.done() or join:
            return None
        request = self._seek.next_request()
        if request is None:  # an empty recording: nothing to decode
            self.result.set_result(self._seek.transcript())
            return None
        return Window(request, options=self._seek.window_options)

    def ahead(self) -> bool:
        return False

    def request(self, job: Window) -> Request:
        return job.request

    def deadline(self) -> float:
        return self._waiting_since + BACKGROUND_S

    def deliver(self, job: Window, transcript: Transcript, timing: object) -> None:
        if self.result.done():
            return
        self._seek.take(job.request, transcript)
        self._waiting_since = time.monotonic()
        if self._seek.next_request() is None:
            self.result.set_result(self._seek.transcript())
        self._notify()

    def end(self, code: str, message: str = "") -> None:
        if not self.result.done():
            self.result.set_exception(RecognizeFailed(code, message))

    def cancel(self) -> None:
        """The call is over (or gone): no more windows."""
        self.result.cancel()


def recognize_audio(data: bytes, config, channels: int, max_seconds: float) -> list[Tensor]:
    """A Recognize request's audio as 16 kHz samples: one mono track, or one a channel with
    enable_separate_recognition_per_channel (InvalidRequest if unusable)."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    separate = config.enable_separate_recognition_per_channel
    try:
        tracks = _decode(data, config, channels, separate)
    except (AudioFormatError, AudioDecodeError) as exc:
        raise validation.InvalidRequest(invalid, str(exc)) from exc
    seconds = tracks[0].shape[-1] / SAMPLE_RATE
    if seconds > max_seconds:
        raise validation.InvalidRequest(
            grpc.StatusCode.OUT_OF_RANGE,
            f"audio is {seconds:.0f} s; Recognize takes at most {max_seconds:g} s "
            "(max_recognize_seconds; use StreamingRecognize)",
        )
    return tracks


def _decode(data: bytes, config, channels: int, separate: bool) -> list[Tensor]:
    if config.encoding in validation.RAW_ENCODINGS:
        validation.check_rate(config.sample_rate_hertz)
        rate = config.sample_rate_hertz
        if not separate or channels == 1:
            return [resample(decode_chunk(data, config.encoding, channels), rate)]
        frame = bytes_per_frame(config.encoding, channels)
        parts = split(data, channels, frame)
        return [resample(decode_chunk(part, config.encoding, 1), rate) for part in parts]
    if not data:
        raise validation.InvalidRequest(grpc.StatusCode.INVALID_ARGUMENT, "audio_content is empty")
    return decode_channels(bytes(data)) if separate else [decode_audio(bytes(data))]
