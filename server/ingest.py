"""The ingest stage: raw chunk bytes -> 16 kHz mono samples + speech probabilities.

Runs on the prefetch thread, so decoding, resampling and voice activity of the next chunks
proceed while the model works on a batch. `IngestState` belongs to one stream and is only
touched by that stream's ingest calls, which run one at a time and in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torchaudio.functional as AF

from streamstt.models.audio import SAMPLE_RATE

from .pcm import decode_chunk
from .vad import SileroVad, VadState

RESAMPLE_CONTEXT = 64  # input samples kept on each side; covers the sinc kernel at 8-48 kHz


class StreamingResampler:
    """Chunk-by-chunk resampling that equals resampling the whole signal at once.

    torchaudio's resampler zero-pads at both ends of what it is given; cutting a stream into
    chunks would put those edges (clicks) every 100 ms. So each call keeps `context` input
    samples on both sides, and emits only the output whose kernel saw real input.
    """

    def __init__(self, orig_rate: int) -> None:
        self.orig_rate = orig_rate
        gcd = math.gcd(orig_rate, SAMPLE_RATE)
        self.step_in, self.step_out = orig_rate // gcd, SAMPLE_RATE // gcd
        self.context = self.step_in * -(-RESAMPLE_CONTEXT // self.step_in)
        self.buffer = np.zeros(self.context, dtype=np.float32)  # zeros: as offline padding

    def push(self, samples: np.ndarray) -> np.ndarray:
        if self.orig_rate == SAMPLE_RATE:
            return samples
        self.buffer = np.concatenate([self.buffer, samples])
        usable = len(self.buffer) - self.context  # hold back the right context
        usable -= (usable - self.context) % self.step_in
        if usable <= self.context:
            return np.zeros(0, dtype=np.float32)
        return self._emit(usable)

    def flush(self) -> np.ndarray:
        """Everything left, with zeros as the right context (as offline resampling does)."""
        if self.orig_rate == SAMPLE_RATE:
            return np.zeros(0, dtype=np.float32)
        real = len(self.buffer) - self.context
        if real <= 0:
            return np.zeros(0, dtype=np.float32)
        pad = (-real) % self.step_in + self.context
        self.buffer = np.concatenate([self.buffer, np.zeros(pad, dtype=np.float32)])
        out = self._emit(len(self.buffer) - self.context)
        keep = round(real * self.step_out / self.step_in)
        return out[:keep]

    def _emit(self, end: int) -> np.ndarray:
        segment = torch.from_numpy(self.buffer[: end + self.context].copy())
        out = AF.resample(segment, self.orig_rate, SAMPLE_RATE).numpy()
        first = self.context * self.step_out // self.step_in
        last = end * self.step_out // self.step_in
        self.buffer = self.buffer[end - self.context :]
        return out[first:last].astype(np.float32, copy=False)


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
