"""Tests for streamstt.server.stream.pcm: raw streaming audio -> mono float32."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamstt.server.stream import pcm
from streamstt.server.stream.pcm import AudioFormatError, bytes_per_frame, decode_chunk
from streamstt.v1 import asr_pb2

STREAMING_ENCODINGS = [asr_pb2.LINEAR16, asr_pb2.FLOAT32, asr_pb2.MULAW, asr_pb2.ALAW]
CONTAINER_ENCODINGS = [asr_pb2.FLAC, asr_pb2.WAV, asr_pb2.OGG_OPUS, asr_pb2.MP3]


def _int16(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}h", *values)


def _float32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


# --- LINEAR16 -------------------------------------------------------------------------------


def test_linear16_known_values() -> None:
    out = decode_chunk(_int16(0, 1, -1, 16384, -16384, 32767, -32768), asr_pb2.LINEAR16, 1)
    expected = np.array([0, 1, -1, 16384, -16384, 32767, -32768], dtype=np.float64) / 32768
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    assert out.min() == -1.0 and out.max() < 1.0


def test_linear16_is_little_endian() -> None:
    # 0x0100 little-endian is 1, big-endian it would be 256.
    assert decode_chunk(b"\x01\x00", asr_pb2.LINEAR16, 1)[0] == np.float32(1 / 32768)


def test_linear16_round_trip() -> None:
    rng = np.random.default_rng(0)
    pcm16 = rng.integers(-32768, 32767, size=1000, dtype=np.int16)
    out = decode_chunk(pcm16.astype("<i2").tobytes(), asr_pb2.LINEAR16, 1)
    np.testing.assert_array_equal(np.round(out * 32768).astype(np.int16), pcm16)


def test_linear16_stereo_downmix() -> None:
    # Frames (L, R): (16384, 0) -> 0.25, (-32768, -32768) -> -1, (1000, -1000) -> 0.
    data = _int16(16384, 0, -32768, -32768, 1000, -1000)
    out = decode_chunk(data, asr_pb2.LINEAR16, 2)
    np.testing.assert_allclose(out, [0.25, -1.0, 0.0], atol=0)
    assert out.dtype == np.float32


@pytest.mark.parametrize("n_bytes", [1, 3, 7])
def test_linear16_odd_byte_count_is_rejected(n_bytes: int) -> None:
    with pytest.raises(AudioFormatError, match=rf"{n_bytes} bytes \(an odd byte count\).*of 2"):
        decode_chunk(b"\x00" * n_bytes, asr_pb2.LINEAR16, 1)


def test_linear16_partial_stereo_frame_is_rejected() -> None:
    # 6 bytes is an even count but 1.5 stereo frames.
    with pytest.raises(AudioFormatError, match=r"6 bytes; it must be a multiple of 4") as err:
        decode_chunk(b"\x00" * 6, asr_pb2.LINEAR16, 2)
    assert "odd" not in str(err.value)


# --- FLOAT32 --------------------------------------------------------------------------------


def test_float32_round_trip() -> None:
    values = [0.0, 0.5, -0.5, 1.0, -1.0, 1e-6, -0.123456]
    out = decode_chunk(_float32(*values), asr_pb2.FLOAT32, 1)
    np.testing.assert_array_equal(out, np.array(values, dtype=np.float32))


def test_float32_over_range_is_clipped() -> None:
    out = decode_chunk(_float32(1.5, -32.0, 0.25), asr_pb2.FLOAT32, 1)
    np.testing.assert_array_equal(out, np.array([1.0, -1.0, 0.25], dtype=np.float32))


def test_float32_stereo_downmix() -> None:
    out = decode_chunk(_float32(0.5, 0.25, -1.0, 1.0, 2.0, 1.0), asr_pb2.FLOAT32, 2)
    # The third frame is clipped per channel before averaging: (1 + 1) / 2.
    np.testing.assert_array_equal(out, np.array([0.375, 0.0, 1.0], dtype=np.float32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_float32_non_finite_is_rejected(bad: float) -> None:
    with pytest.raises(AudioFormatError, match="non-finite FLOAT32 samples"):
        decode_chunk(_float32(0.0, bad), asr_pb2.FLOAT32, 1)


@pytest.mark.parametrize(("n_bytes", "channels", "multiple"), [(3, 1, 4), (6, 1, 4), (12, 2, 8)])
def test_float32_partial_frame_is_rejected(n_bytes: int, channels: int, multiple: int) -> None:
    with pytest.raises(AudioFormatError, match=rf"{n_bytes} bytes; it must be a multiple of "):
        decode_chunk(b"\x00" * n_bytes, asr_pb2.FLOAT32, channels)
    assert bytes_per_frame(asr_pb2.FLOAT32, channels) == multiple


# --- G.711 ----------------------------------------------------------------------------------


def test_mulaw_known_codes() -> None:
    out = decode_chunk(bytes([0xFF, 0x7F, 0x00, 0x80, 0xFE]), asr_pb2.MULAW, 1)
    # 0xFF / 0x7F are the two zero codes; 0x00 / 0x80 are full-scale -/+32124.
    np.testing.assert_array_equal(out[:4], np.float32([0.0, 0.0, -32124 / 32768, 32124 / 32768]))
    assert out[2] == pytest.approx(-0.98, abs=0.001)
    assert out[4] == np.float32(8 / 32768)  # smallest positive step


def test_alaw_known_codes() -> None:
    out = decode_chunk(bytes([0xD5, 0x55, 0xAA, 0x2A]), asr_pb2.ALAW, 1)
    # 0xD5 / 0x55 are +/-8 (A-law has no zero); 0xAA / 0x2A are full-scale +/-32256.
    np.testing.assert_array_equal(
        out, np.float32([8 / 32768, -8 / 32768, 32256 / 32768, -32256 / 32768])
    )
    assert 0 < out[0] < 0.001


@pytest.mark.parametrize(
    ("table", "name"), [(pcm.MULAW_TABLE, "ulaw2lin"), (pcm.ALAW_TABLE, "alaw2lin")]
)
def test_g711_tables_match_reference_decoder(table: np.ndarray, name: str) -> None:
    # audioop (CPython <= 3.12, deprecated since 3.11) implements the same G.711 expansion;
    # compare all 256 codes against it where it still exists.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    reference = np.frombuffer(getattr(audioop, name)(bytes(range(256)), 2), dtype="<i2")
    np.testing.assert_array_equal(table, (reference / 32768).astype(np.float32))


def test_g711_tables_are_odd_symmetric_and_monotone() -> None:
    # Flipping the sign bit negates the sample, for every code.
    codes = np.arange(128)
    np.testing.assert_array_equal(pcm.MULAW_TABLE[codes], -pcm.MULAW_TABLE[codes | 0x80])
    np.testing.assert_array_equal(pcm.ALAW_TABLE[codes], -pcm.ALAW_TABLE[codes | 0x80])
    assert np.unique(pcm.MULAW_TABLE).size == 255  # +0 and -0 collapse
    assert np.unique(pcm.ALAW_TABLE).size == 256


def test_mulaw_stereo_downmix() -> None:
    out = decode_chunk(bytes([0x00, 0x80, 0xFF, 0xFF]), asr_pb2.MULAW, 2)
    np.testing.assert_array_equal(out, np.float32([0.0, 0.0]))


@pytest.mark.parametrize("encoding", [asr_pb2.MULAW, asr_pb2.ALAW])
def test_g711_partial_frame_is_rejected(encoding: int) -> None:
    with pytest.raises(AudioFormatError, match=r"5 bytes; it must be a multiple of 2"):
        decode_chunk(b"\x00" * 5, encoding, 2)


# --- framing, encodings, channels -----------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "channels", "expected"),
    [
        (asr_pb2.LINEAR16, 1, 2),
        (asr_pb2.LINEAR16, 2, 4),
        (asr_pb2.FLOAT32, 1, 4),
        (asr_pb2.FLOAT32, 6, 24),
        (asr_pb2.MULAW, 1, 1),
        (asr_pb2.ALAW, 2, 2),
    ],
)
def test_bytes_per_frame(encoding: int, channels: int, expected: int) -> None:
    assert bytes_per_frame(encoding, channels) == expected


@pytest.mark.parametrize("encoding", STREAMING_ENCODINGS)
def test_empty_chunk_decodes_to_nothing(encoding: int) -> None:
    out = decode_chunk(b"", encoding, 2)
    assert out.shape == (0,) and out.dtype == np.float32


@pytest.mark.parametrize("encoding", CONTAINER_ENCODINGS)
def test_container_encodings_are_rejected_for_streaming(encoding: int) -> None:
    name = asr_pb2.AudioEncoding.Name(encoding)
    with pytest.raises(AudioFormatError, match=rf"{name} is a container .*unary Recognize"):
        decode_chunk(b"\x00" * 8, encoding, 1)
    with pytest.raises(AudioFormatError, match="unary Recognize"):
        bytes_per_frame(encoding, 1)


def test_unspecified_encoding_is_rejected() -> None:
    with pytest.raises(AudioFormatError, match="encoding is not set.*LINEAR16"):
        decode_chunk(b"\x00\x00", asr_pb2.ENCODING_UNSPECIFIED, 1)


def test_unknown_encoding_number_is_rejected() -> None:
    with pytest.raises(AudioFormatError, match="encoding 99 is not supported"):
        decode_chunk(b"\x00\x00", 99, 1)


@pytest.mark.parametrize("channels", [0, -1])
def test_bad_channel_count_is_rejected(channels: int) -> None:
    with pytest.raises(AudioFormatError, match=rf"audio_channel_count is {channels}"):
        decode_chunk(b"\x00\x00", asr_pb2.LINEAR16, channels)


def test_audio_format_error_is_a_value_error() -> None:
    assert issubclass(AudioFormatError, ValueError)


def test_result_is_writable_copy() -> None:
    data = bytearray(_int16(100, 200))
    out = decode_chunk(bytes(data), asr_pb2.LINEAR16, 1)
    out[0] = 0.5  # must not raise (np.frombuffer views are read-only)
    for encoding in (asr_pb2.MULAW, asr_pb2.ALAW):
        g711 = decode_chunk(b"\x00\x01", encoding, 1)
        g711[:] = 0  # must not write through to the shared lookup table
    assert pcm.MULAW_TABLE[0] != 0 and pcm.ALAW_TABLE[0] != 0


# --- property -------------------------------------------------------------------------------


@st.composite
def _valid_chunks(draw: st.DrawFn) -> tuple[bytes, int, int]:
    encoding = draw(st.sampled_from(STREAMING_ENCODINGS))
    channels = draw(st.integers(min_value=1, max_value=4))
    frames = draw(st.integers(min_value=0, max_value=64))
    frame = bytes_per_frame(encoding, channels)
    data = draw(st.binary(min_size=frames * frame, max_size=frames * frame))
    return data, encoding, channels


@given(_valid_chunks())
def test_any_valid_length_decodes_to_finite_unit_range(chunk: tuple[bytes, int, int]) -> None:
    data, encoding, channels = chunk
    try:
        out = decode_chunk(data, encoding, channels)
    except AudioFormatError as err:
        # Random FLOAT32 bytes may spell NaN / infinity; that is the only allowed rejection.
        assert encoding == asr_pb2.FLOAT32
        assert "non-finite" in str(err)
        return
    assert out.dtype == np.float32
    assert out.shape == (len(data) // bytes_per_frame(encoding, channels),)
    assert np.isfinite(out).all()
    assert (np.abs(out) <= 1.0).all()
