"""Audio front end: file decoding, resampling and Whisper's log-mel spectrogram.

Every number below is Whisper's; the model was trained on exactly these features, so any
deviation (another window, mel scale or clamp) costs accuracy.
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

SAMPLE_RATE = 16000  # Hz: the only rate the model understands
N_FFT = 400  # samples: 25 ms analysis window
HOP_LENGTH = 160  # samples: 10 ms between frames
CHUNK_LENGTH = 30  # seconds: the window the model was trained on
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in one window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in one window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames a second
TOKENS_PER_SECOND = FRAMES_PER_SECOND // 2  # 50 encoder positions a second (conv2 stride 2)
RECORDING_CHUNK_FRAMES = 3000  # recording_features' frames a piece (30 s)
DYNAMIC_RANGE_DB = 8.0  # log10 units (80 dB) kept below each utterance's loudest bin

MIN_INPUT_RATE = 8000  # Hz: lowest rate we resample from
MAX_INPUT_RATE = 192000  # Hz: highest rate a file may have

# libsoxr's "HQ" recipe (20-bit precision, linear phase, so no time shift): its stopband and
# passband ripple lie far below the 80 dB the log-mel keeps under each utterance's peak, so
# "VHQ" (28-bit) cannot change the features; VHQ's longer filter would also hold back up to
# 85 ms in a stream instead of 20-40 ms (at 22-48 kHz input). Offline (`resample`) and
# streaming (server/stream/ingest.py) use the same recipe, so both give the same samples.
RESAMPLE_QUALITY = "HQ"


class AudioDecodeError(ValueError):
    """Raised when bytes or a file cannot be decoded as audio; the message says why."""


def downmix(samples: np.ndarray) -> np.ndarray:
    """Average channels: (frames, channels) -> (frames,) float32."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray | torch.Tensor, orig_rate: int) -> torch.Tensor:
    """Resample mono audio to 16 kHz with libsoxr (`RESAMPLE_QUALITY`); float32 tensor."""
    audio = torch.as_tensor(samples, dtype=torch.float32)
    if orig_rate == SAMPLE_RATE:
        return audio
    if not MIN_INPUT_RATE <= orig_rate <= MAX_INPUT_RATE:
        raise AudioDecodeError(
            f"sample rate {orig_rate} Hz is outside {MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz"
        )
    if audio.numel() == 0:
        return torch.zeros(0)
    source = np.ascontiguousarray(audio.detach().cpu().numpy())
    return torch.from_numpy(soxr.resample(source, orig_rate, SAMPLE_RATE, RESAMPLE_QUALITY))


def decode_audio(source: str | Path | bytes) -> torch.Tensor:
    """Decode WAV/FLAC/OGG/MP3 (anything libsndfile reads) to 16 kHz mono float32."""
    samples, rate = _read(source)
    if samples.shape[0] == 0:
        return torch.zeros(0)
    return resample(downmix(samples), rate)


def decode_channels(source: str | Path | bytes) -> list[torch.Tensor]:
    """Like decode_audio, but each channel on its own (16 kHz float32 each)."""
    samples, rate = _read(source)
    if samples.shape[0] == 0:
        return [torch.zeros(0) for _ in range(samples.shape[1])]
    return [resample(np.ascontiguousarray(samples[:, c]), rate) for c in range(samples.shape[1])]


def _read(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise AudioDecodeError(f"{name}: no such audio file")
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        samples, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioDecodeError(f"{name}: not a readable audio file ({exc})") from exc
    return samples, int(rate)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * 200.0 / 3.0
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log, linear)


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int, device: str = "cpu") -> torch.Tensor:
    """Slaney-normalised mel filterbank, shape (n_mels, N_FFT // 2 + 1), as librosa builds it.

    Hand-written (librosa.filters.mel with htk=False, norm="slaney"; Whisper's own
    mel_filters.npz was made with it): torchaudio's melscale_fbanks did this before, but
    torchaudio's PyPI wheels link libtorch_cuda and cannot load beside a CPU-only torch, and
    librosa would pull numba and scipy for these lines. tests/test_model.py checks it against
    faster-whisper's copy.
    """
    fft_hz = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)  # the 201 bin centres, 0-8000 Hz
    # n_mels + 2 edges evenly spaced in mels from 0 Hz to Nyquist: filter i rises from
    # edge i to edge i + 1 and falls to edge i + 2
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz - lo) / (mid - lo)
    falling = (hi - fft_hz) / (hi - mid)
    banks = np.maximum(0.0, np.minimum(rising, falling))
    banks *= 2.0 / (hi - lo)  # slaney norm: each triangle has the same area
    return torch.from_numpy(banks.astype(np.float32)).to(device)


@functools.lru_cache(maxsize=8)
def _hann_window(device: str) -> torch.Tensor:
    return torch.hann_window(N_FFT, device=device)


def log_mel_spectrogram(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log-mel features.

    audio: (samples,) or (batch, samples) float32 at 16 kHz; items shorter than the longest must
    be zero-padded by the caller (the clamp below is taken per item, so padding is harmless).
    Returns (n_mels, frames) or (batch, n_mels, frames) with frames = samples // HOP_LENGTH.
    """
    squeeze = audio.dim() == 1
    batch = audio.unsqueeze(0) if squeeze else audio
    device = str(batch.device)
    stft = torch.stft(batch, N_FFT, HOP_LENGTH, window=_hann_window(device), return_complex=True)
    power = stft[..., :-1].abs() ** 2  # drop the last frame, as Whisper does
    mel = mel_filters(n_mels, device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - DYNAMIC_RANGE_DB)
    log_spec = (log_spec + 4.0) / 4.0
    return log_spec[0] if squeeze else log_spec


def pad_or_trim(audio: torch.Tensor, length: int = N_SAMPLES) -> torch.Tensor:
    """Zero-pad or cut the last dimension to `length` samples."""
    size = audio.shape[-1]
    if size > length:
        return audio[..., :length]
    if size < length:
        return torch.nn.functional.pad(audio, (0, length - size))
    return audio


def recording_features(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Log-mel of a whole recording, shape (n_mels, samples // HOP_LENGTH): one frame per
    hop of real audio (one hop of zeros is added so the last samples get a frame). Its
    dynamic range is taken over the whole recording, as Whisper and faster-whisper do for
    long form: cut into windows (`pad_features`), a quiet window keeps its true level.

    The frames log_mel_spectrogram makes of the whole signal, bit for bit, computed
    RECORDING_CHUNK_FRAMES at a time into one output tensor, so ten minutes need the 19 MB
    of their features and a few MB more, not copies of the signal and of its spectrum."""
    # a recording shorter than the reflect padding (a few ms) gets zeros up to it
    audio = torch.nn.functional.pad(audio, (0, max(HOP_LENGTH, N_FFT // 2 + 1 - audio.shape[-1])))
    frames = audio.shape[-1] // HOP_LENGTH
    out = torch.empty(n_mels, frames, device=audio.device)
    window, filters = _hann_window(str(audio.device)), mel_filters(n_mels, str(audio.device))
    for first in range(0, frames, RECORDING_CHUNK_FRAMES):
        last = min(first + RECORDING_CHUNK_FRAMES, frames)
        span = _reflect_span(
            audio, first * HOP_LENGTH - N_FFT // 2, (last - 1) * HOP_LENGTH + N_FFT // 2
        )
        stft = torch.stft(span, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        out[:, first:last] = torch.clamp(filters @ (stft.abs() ** 2), min=1e-10).log10()
    out = out[:, : max(1, frames - 1)]
    out.clamp_(min=(out.max() - DYNAMIC_RANGE_DB).item())
    return out.add_(4.0).div_(4.0)


def _reflect_span(audio: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """audio[start:end] of the signal reflect-padded at both ends (as torch.stft's center
    padding does), copying only this span."""
    inner = audio[max(0, start) : min(end, audio.shape[-1])]
    left, right = max(0, -start), max(0, end - audio.shape[-1])
    if not (left or right):
        return inner
    head = audio[1 : left + 1].flip(-1)
    tail = audio[audio.shape[-1] - 1 - right : audio.shape[-1] - 1].flip(-1)
    return torch.cat([head, inner, tail])


def pad_features(mel: torch.Tensor, span_frames: int = N_FRAMES) -> torch.Tensor:
    """A window's features (n_mels, <= N_FRAMES frames of real audio) zero-padded with zero
    *features*, as faster-whisper and CTranslate2 do, to span_frames (more if the audio is
    longer, always even for the encoder's stride 2)."""
    content = mel.shape[-1]
    frames = max(span_frames, content + content % 2)
    return pad_or_trim(mel, min(N_FRAMES, frames))


def window_features(
    audio: torch.Tensor, n_mels: int = 80, span_frames: int = N_FRAMES
) -> torch.Tensor:
    """Features for one model window of at most 30 s of audio, shape (n_mels, span_frames).

    span_frames=N_FRAMES is the full 30 s window (the training condition); fewer frames is a
    shorter encoder span: less encoder work (see `encoder_frames_for`).
    """
    return pad_features(recording_features(audio[:N_SAMPLES], n_mels), span_frames)


def encoder_frames_for(samples: int, min_encoder_s: float, margin_s: float) -> int:
    """Encoder span for a window of `samples`: at least `min_encoder_s`, and at least
    `margin_s` of padding after the audio, never more than 30 s; always even (conv stride 2).

    Measured (docs/benchmarks.md): encoding only the real audio makes tiny.en loop or stop
    early on most clips; with >= 15 s of span it matches the full window at half the cost.
    """
    seconds = max(min_encoder_s, samples / SAMPLE_RATE + margin_s)
    # rounded up to whole seconds: a streaming window grows by a few frames every step, and
    # each distinct encoder width is a new shape for the CPU kernels (oneDNN caches
    # primitives per shape: resident memory crept up over a held load) and for CUDA caches
    frames = min(N_FRAMES, math.ceil(seconds - 1e-9) * FRAMES_PER_SECOND)
    return frames + frames % 2
