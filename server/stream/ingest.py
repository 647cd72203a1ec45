"""The ingest stage: raw chunk bytes -> 16 kHz mono samples + speech probabilities.

Runs on the prefetch thread, so decoding, resampling and voice activity of the next chunks
proceed while the model works on a batch. `IngestState` belongs to one stream and is only
touched by that stream's ingest calls, which run one at a time and in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import soxr

from streamstt.models.audio import RESAMPLE_QUALITY, SAMPLE_RATE

from .pcm import decode_chunk
from .vad import SileroVad, VadState


class StreamingResampler:
    """Chunk-by-chunk resampling to 16 kHz that equals resampling the whole signal at once.

    libsoxr's stream keeps its filter state across chunks, so chunk edges leave no trace and
    the output is sample-for-sample what `models.audio.resample` gives for the whole signal
    (same recipe). Output is time-aligned (linear phase, the filter delay is removed): output
    sample n is input time n / 16000 s. The filter holds back a little output (about 20-40 ms
    at 22-48 kHz input, 60 ms on average at 8 kHz) until input after it arrives; `flush`
    releases it, so audio right before the end of a stream is not lost.
    """

    def __init__(self, orig_rate: int) -> None:
        self.orig_rate = orig_rate
        self.flushed = False
        self._stream = None
        if orig_rate != SAMPLE_RATE:
            self._stream = soxr.ResampleStream(
                orig_rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )

    def push(self, samples: np.ndarray) -> np.ndarray:
        if self.flushed:
            raise RuntimeError("push after flush: the resampled stream has ended")
        if self._stream is None:
            return samples
        chunk = np.ascontiguousarray(samples, dtype=np.float32)
        return self._stream.resample_chunk(chunk)

    def flush(self) -> np.ndarray:
        """The output still held back; the stream ends here (a second flush gives nothing)."""
        if self._stream is None or self.flushed:
            self.flushed = True
            return np.zeros(0, dtype=np.float32)
        self.flushed = True
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream = None  # frees libsoxr's buffers now, not when the session goes
        return tail


@dataclass
class IngestState:
    encoding: int
    channels: int
    resampler: StreamingResampler
    vad: VadState = field(default_factory=VadState)


@dataclass(frozen=True)
class IngestResult:
    audio: np.ndarray  # new 16 kHz mono samples
    speech_probs: np.ndarray  # one per completed 32 ms VAD frame


def ingest(state: IngestState, vad: SileroVad, data: bytes, final: bool = False) -> IngestResult:
    """Decode and resample one chunk (or, with final=True, flush what is held back).

    Raises pcm.AudioFormatError for bytes that do not fit the configured encoding.
    """
    if final:
        audio = state.resampler.flush()
        tail = (-len(state.vad.pending) - len(audio)) % 512
        probs = vad.score(state.vad, np.concatenate([audio, np.zeros(tail, np.float32)]))
        return IngestResult(audio, probs)
    samples = decode_chunk(data, state.encoding, state.channels)
    audio = state.resampler.push(samples)
    return IngestResult(audio, vad.score(state.vad, audio))
