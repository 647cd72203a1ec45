"""Decode raw streaming audio chunks (LINEAR16, FLOAT32, G.711 mu-law / A-law) to mono float32.

Pure numpy, no torch, so it can run on the gRPC request path and in tests without a model.

Framing is strict: every chunk must hold whole frames (one sample for each channel). A client
that splits a LINEAR16 stream at an odd byte gets ``AudioFormatError`` (mapped to
INVALID_ARGUMENT by the servicer) rather than having the server carry a partial sample over to
the next chunk; the wire contract (asr.proto, ``audio_content``) documents this.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from streamstt.v1 import asr_pb2

FloatArray = npt.NDArray[np.float32]

# Full scale of 16-bit linear PCM: int16 sample / PCM16_FULL_SCALE lies in [-1, 1).
PCM16_FULL_SCALE: Final = 32768.0
# FLOAT32 samples are nominally in [-1, 1]; louder samples are clipped to this bound.
FLOAT32_CLIP: Final = 1.0

# Bytes per sample per channel for the encodings a stream may carry.
STREAMING_BYTES_PER_SAMPLE: Final[dict[int, int]] = {
    asr_pb2.LINEAR16: 2,  # int16, little-endian
    asr_pb2.FLOAT32: 4,  # IEEE-754 binary32, little-endian
    asr_pb2.MULAW: 1,  # G.711 mu-law code
    asr_pb2.ALAW: 1,  # G.711 A-law code
}
# Self-describing file formats; they need a whole file, so only the unary Recognize takes them.
CONTAINER_ENCODINGS: Final = frozenset({asr_pb2.FLAC, asr_pb2.WAV, asr_pb2.OGG_OPUS, asr_pb2.MP3})

_LITTLE_INT16: Final = np.dtype("<i2")
_LITTLE_FLOAT32: Final = np.dtype("<f4")

# G.711 bit fields shared by both laws: 1 sign bit, 3-bit segment (exponent), 4-bit step.
_G711_SIGN_BIT: Final = 0x80
_G711_SEG_MASK: Final = 0x70
_G711_SEG_SHIFT: Final = 4
_G711_STEP_MASK: Final = 0x0F
# mu-law bias added before encoding (33 in 14-bit units, x4 for 16-bit scale).
_MULAW_BIAS: Final = 0x84
# A-law transmits codes with the even bits inverted (XOR 0x55).
_ALAW_XOR: Final = 0x55


class AudioFormatError(ValueError):
    """The audio bytes do not match the declared encoding / channel count.

    The message is addressed to the client: it says what to change.
    """


def _encoding_name(encoding: int) -> str:
    """Return the enum name for ``encoding``, or its number if it is not a known value."""
    try:
        return asr_pb2.AudioEncoding.Name(encoding)
    except ValueError:
        return str(encoding)


def _mulaw_table() -> FloatArray:
    """Build the 256-entry mu-law code -> float table.

    ITU-T Recommendation G.711 (11/88), mu-law expansion, in the widely used integer form
    (Sun Microsystems' public-domain g711.c): invert the code, rebuild the biased magnitude
    ``((step << 3) + 0x84) << segment`` and remove the bias. Results span +/-32124 on the
    16-bit scale, so code 0xFF (and 0x7F) decode to exactly 0.
    """
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    step = codes & _G711_STEP_MASK
    segment = (codes & _G711_SEG_MASK) >> _G711_SEG_SHIFT
    magnitude = (((step << 3) + _MULAW_BIAS) << segment) - _MULAW_BIAS
    # After inversion a set sign bit means a negative sample.
    linear = np.where(codes & _G711_SIGN_BIT, -magnitude, magnitude)
    return (linear / PCM16_FULL_SCALE).astype(np.float32)


def _alaw_table() -> FloatArray:
    """Build the 256-entry A-law code -> float table.

    ITU-T Recommendation G.711 (11/88), A-law expansion, in the integer form of Sun's g711.c:
    undo the 0x55 bit inversion, take the segment's step as ``(step << 4) + 8`` (segment 0) or
    ``((step << 4) + 0x108) << (segment - 1)`` (segments 1-7). Results span +/-32256 on the
    16-bit scale; A-law has no zero code, the smallest magnitude is 8 (e.g. 0xD5 -> +8).
    """
    codes = np.arange(256, dtype=np.int32) ^ _ALAW_XOR
    step = (codes & _G711_STEP_MASK) << 4
    segment = (codes & _G711_SEG_MASK) >> _G711_SEG_SHIFT
    magnitude = np.where(
        segment == 0,
        step + 8,
        (step + 0x108) << np.maximum(segment - 1, 0),
    )
    # Unlike mu-law, a set sign bit (after the XOR) means a positive sample.
    linear = np.where(codes & _G711_SIGN_BIT, magnitude, -magnitude)
    return (linear / PCM16_FULL_SCALE).astype(np.float32)


# Built once at import; decoding is a single vectorised table lookup per chunk.
MULAW_TABLE: Final = _mulaw_table()
ALAW_TABLE: Final = _alaw_table()


def bytes_per_frame(encoding: int, channels: int) -> int:
    """Return the size in bytes of one frame (one sample for every channel).

    Raises AudioFormatError if ``encoding`` cannot be streamed or ``channels`` is below 1.
    """
    if channels < 1:
        raise AudioFormatError(
            f"audio_channel_count is {channels}; it must be at least 1 for raw audio"
        )
    if encoding in STREAMING_BYTES_PER_SAMPLE:
        return STREAMING_BYTES_PER_SAMPLE[encoding] * channels
    name = _encoding_name(encoding)
    if encoding == asr_pb2.ENCODING_UNSPECIFIED:
        problem = "encoding is not set"
    elif encoding in CONTAINER_ENCODINGS:
        problem = f"{name} is a container format, accepted only by the unary Recognize call"
    else:
        problem = f"encoding {name} is not supported"
    raise AudioFormatError(
        f"{problem}; streaming audio must be raw LINEAR16, FLOAT32, MULAW or ALAW"
    )


def _check_whole_frames(data: bytes, encoding: int, channels: int) -> None:
    """Reject chunks that end part-way through a frame (strict framing, see module doc)."""
    frame = bytes_per_frame(encoding, channels)
    if len(data) % frame == 0:
        return
    sample = STREAMING_BYTES_PER_SAMPLE[encoding]
    odd = " (an odd byte count)" if sample == 2 and len(data) % 2 else ""
    raise AudioFormatError(
        f"{_encoding_name(encoding)} audio_content has {len(data)} bytes{odd}; it must be a "
        f"multiple of {frame} ({sample} bytes per sample x {channels} channel(s)). "
        "Split the stream on frame boundaries."
    )


def _samples(data: bytes, encoding: int) -> FloatArray:
    """Decode interleaved samples of any channel layout to float32 in [-1, 1]."""
    if encoding == asr_pb2.LINEAR16:
        pcm = np.frombuffer(data, dtype=_LITTLE_INT16)
        return pcm.astype(np.float32) / np.float32(PCM16_FULL_SCALE)
    if encoding == asr_pb2.FLOAT32:
        raw = np.frombuffer(data, dtype=_LITTLE_FLOAT32)
        if not np.isfinite(raw).all():
            raise AudioFormatError(
                "non-finite FLOAT32 samples (NaN or infinity) in audio_content; "
                "send finite values, nominally in [-1, 1]"
            )
        # Overdriven input is clipped like a DAC would, so downstream code can rely on [-1, 1].
        return np.clip(raw, -FLOAT32_CLIP, FLOAT32_CLIP).astype(np.float32)
    codes = np.frombuffer(data, dtype=np.uint8)
    table = MULAW_TABLE if encoding == asr_pb2.MULAW else ALAW_TABLE
    return table[codes]


def _downmix(samples: FloatArray, channels: int) -> FloatArray:
    """Average interleaved channels to mono (the recogniser is single-channel)."""
    if channels == 1:
        return samples
    return samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)


def decode_chunk(data: bytes, encoding: int, channels: int) -> FloatArray:
    """Decode one streamed ``audio_content`` chunk to mono float32 samples in [-1, 1].

    Args:
        data: raw audio bytes; must hold whole frames (see ``bytes_per_frame``).
        encoding: an ``asr_pb2.AudioEncoding`` number (LINEAR16, FLOAT32, MULAW or ALAW).
        channels: number of interleaved channels (at least 1); they are averaged.

    Returns:
        A new, writable float32 array with ``len(data) // bytes_per_frame(...)`` samples.

    Raises:
        AudioFormatError: unsupported encoding, bad channel count, a partial trailing frame,
            or non-finite FLOAT32 samples.
    """
    _check_whole_frames(data, encoding, channels)
    return _downmix(_samples(data, encoding), channels)
