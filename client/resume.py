"""Resuming a stream on another replica from the end of its last final result.

A bidirectional stream lives on one server. When that server goes away (drain grace over, crash,
network cut) or refuses the stream at the start (draining, at capacity), the caller has two
choices: give up with the finals it has, or open a new stream and send again the audio that no
final covers yet. This module does the second without losing or repeating a word:

- every chunk sent is kept in an `AudioLog` until a final result covers its audio; the log
  holds at most one utterance (plus what is in flight), never the whole stream;
- on a resumable failure, a new stream starts with the same config and replays the log from
  the last final's `result_end_time`, cut at a sample boundary;
- the new stream's times start at zero again, so its results are shifted by that offset and
  its utterance indices continue the old numbering: the caller sees one logical stream.

Replay works on raw PCM encodings only (byte offsets map to times); compressed streams cannot
be cut in the middle and raise ValueError up front.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

import grpc

from streamstt.v1 import asr_pb2

# Bytes per sample per channel of the raw encodings a stream can be replayed from.
_SAMPLE_BYTES = {asr_pb2.LINEAR16: 2, asr_pb2.FLOAT32: 4, asr_pb2.MULAW: 1, asr_pb2.ALAW: 1}
RETRY_HEADER = "streamstt-retryable"  # set by the server on refusals before any audio


def frame_bytes(config: asr_pb2.StreamingRecognitionConfig) -> tuple[int, int]:
    """(bytes per frame, frames per second) of a raw-PCM stream config."""
    audio = config.config
    width = _SAMPLE_BYTES.get(audio.encoding)
    if width is None:
        name = asr_pb2.AudioEncoding.Name(audio.encoding)
        raise ValueError(f"a stream can be resumed only from raw PCM audio, not {name}")
    channels = max(1, audio.audio_channel_count)
    return width * channels, audio.sample_rate_hertz


def resumable(error: grpc.RpcError, got_results: bool) -> bool:
    """Whether the same audio may be sent again on a new stream.

    UNAVAILABLE means the replica is gone or going (its finals were delivered); a refusal with
    the retry trailer happened before any audio was processed. Anything else (bad input,
    deadline, auth, the caller's own cancel) would fail again or was asked for."""
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    trailers = dict(error.trailing_metadata() or ())
    return (
        code == grpc.StatusCode.RESOURCE_EXHAUSTED and not got_results and RETRY_HEADER in trailers
    )


class AudioLog:
    """The chunks of one logical stream, numbered from 0, kept until a final covers them.

    Pulls from the caller's iterator on demand; thread-safe because gRPC's sync client reads a
    request iterator on its own thread, and an abandoned stream's reader may still be in it."""

    def __init__(self, source, frame: int) -> None:
        self._source = source
        self._frame = frame
        self._lock = threading.Lock()
        self._chunks: deque[tuple[int, bytes]] = deque()  # (first byte, data)
        self._base = 0  # number of the first chunk kept
        self._bytes = 0  # bytes pulled so far
        self._done = False

    def get(self, index: int) -> tuple[int, int, bytes] | None:
        """Chunk `index` (or the first kept one after it) as (index, first byte, data); None
        once the source is exhausted."""
        with self._lock:
            index = max(index, self._base)
            while index >= self._base + len(self._chunks):
                if self._done:
                    return None
                try:
                    data = next(self._source)
                except StopIteration:
                    self._done = True
                    return None
                self._chunks.append((self._bytes, data))
                self._bytes += len(data)
            first, data = self._chunks[index - self._base]
            return index, first, data

    def append_async(self, data: bytes | None) -> None:
        """Add a chunk pulled by an asyncio caller (None = source exhausted)."""
        with self._lock:
            if data is None:
                self._done = True
            else:
                self._chunks.append((self._bytes, data))
                self._bytes += len(data)

    def peek(self, index: int) -> tuple[int, int, bytes] | None | bool:
        """Like get() without pulling: False when the chunk has not been pulled yet."""
        with self._lock:
            index = max(index, self._base)
            if index < self._base + len(self._chunks):
                first, data = self._chunks[index - self._base]
                return index, first, data
            return None if self._done else False

    def index_at(self, byte: int) -> int:
        """Number of the chunk holding `byte` (the next chunk to pull if it is not held yet)."""
        with self._lock:
            for offset, (first, data) in enumerate(self._chunks):
                if first + len(data) > byte:
                    return self._base + offset
            return self._base + len(self._chunks)

    def forget_before(self, byte: int) -> None:
        """A final covers the audio before `byte`: it will never be replayed."""
        with self._lock:
            while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= byte:
                self._chunks.popleft()
                self._base += 1

    def tail_from(self, first: int, data: bytes, byte: int) -> bytes:
        """The part of a chunk starting at `first` that lies at or after `byte`."""
        cut = max(0, byte - first)
        cut -= cut % self._frame
        return data[cut:]

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return sum(len(data) for _, data in self._chunks)


class Continuation:
    """Where a logical stream stands: results of later physical streams are shifted by it."""

    def __init__(self, config: asr_pb2.StreamingRecognitionConfig) -> None:
        self.frame, self.rate = frame_bytes(config)
        self.offset_ns = 0  # stream time of the current physical stream's first sample
        self.utterance_base = 0  # utterances finalised before the current physical stream
        self.final_end_ns = 0  # end of the last final, in logical stream time
        self.utterances = 0  # finals seen so far
        self.resumes = 0
        self.finals: list = []  # every final result, in logical stream time
        self.got_results = False  # the current physical stream has returned results

    def can_resume(self, error: grpc.RpcError, max_resumes: int) -> bool:
        return self.resumes < max_resumes and resumable(error, self.got_results)

    @property
    def offset_byte(self) -> int:
        return self.offset_ns * self.rate // 1_000_000_000 * self.frame

    @property
    def resume_offset_s(self) -> float:
        return self.final_end_ns / 1e9

    def resume(self) -> None:
        """The next physical stream starts where the last final ended."""
        self.offset_ns = self.final_end_ns
        self.utterance_base = self.utterances
        self.resumes += 1
        self.got_results = False

    def translate(self, response: asr_pb2.StreamingRecognizeResponse, log: AudioLog) -> None:
        """Shift a response of the current physical stream into logical stream time, record
        its finals, and let the log forget audio that they cover."""
        if self.offset_ns or self.utterance_base:
            for result in response.results:
                _shift(result.result_start_time, self.offset_ns)
                _shift(result.result_end_time, self.offset_ns)
                result.utterance_index += self.utterance_base
                for alternative in result.alternatives:
                    for word in alternative.words:
                        _shift(word.start_time, self.offset_ns)
                        _shift(word.end_time, self.offset_ns)
            if response.HasField("speech_event_time"):
                _shift(response.speech_event_time, self.offset_ns)
        self.got_results = self.got_results or bool(response.results)
        for result in response.results:
            if result.is_final:
                self.finals.append(result)
                self.final_end_ns = max(self.final_end_ns, result.result_end_time.ToNanoseconds())
                self.utterances = max(self.utterances, result.utterance_index + 1)
        log.forget_before(self.final_end_ns * self.rate // 1_000_000_000 * self.frame)


def _shift(duration, offset_ns: int) -> None:
    duration.FromNanoseconds(duration.ToNanoseconds() + offset_ns)


def replay_requests(
    config: asr_pb2.StreamingRecognitionConfig,
    log: AudioLog,
    start_byte: int,
    alive: threading.Event,
    pace,
) -> Iterator[asr_pb2.StreamingRecognizeRequest]:
    """Requests of one physical stream: the config, then the audio from `start_byte` on.
    `pace(index)` waits until chunk `index` is due (replayed chunks are already due). Stops
    when `alive` is cleared (the stream was abandoned) so two streams never share the source."""
    yield asr_pb2.StreamingRecognizeRequest(streaming_config=config)
    index = log.index_at(start_byte)
    while alive.is_set():
        item = log.get(index)
        if item is None:
            return
        index, first, data = item
        pace(index)
        if not alive.is_set():
            return
        data = log.tail_from(first, data, start_byte)
        if data:
            yield asr_pb2.StreamingRecognizeRequest(audio_content=data)
        index += 1
