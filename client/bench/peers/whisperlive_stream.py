"""One bench stream over WhisperLive's own WebSocket protocol, recorded as an `Exchange`.

The protocol, as whisper_live/client.py speaks it: a JSON options message, then SERVER_READY
from the server, then 16 kHz mono float32 frames as binary messages, then the binary
END_OF_AUDIO marker. A chunk's time is when it is handed to the socket, a message's when it is
read: the same clock and meaning as the streamstt path (run.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import latency
from .whisperlive import END_OF_AUDIO, REFUSALS, SERVER_READY, Exchange, PeerMessage

SAMPLE_RATE = 16000  # WhisperLive's RATE: the only rate its server reads


@dataclass(frozen=True)
class StreamOptions:
    language: str = "en"  # our weights are tiny.en; unset, WhisperLive detects it per pass
    ready_timeout_s: float = 120.0  # the first client waits for the model to load
    drain_idle_s: float = 15.0  # the client's disconnect_if_no_response_for, after the audio
    close_timeout_s: float = 10.0  # for the server's close after END_OF_AUDIO


def options_message(options: StreamOptions) -> str:
    """The first message, with WhisperLive client's defaults (VAD on, last 10 segments)."""
    return json.dumps(
        {
            "uid": str(uuid.uuid4()),
            "language": options.language,
            "task": "transcribe",
            "model": "tiny.en",  # replaced by the server's custom model path
            "use_vad": True,
            "send_last_n_segments": 10,
            "no_speech_thresh": 0.45,
            "clip_audio": False,
            "same_output_threshold": 10,
            "enable_translation": False,
            "word_timestamps": False,
        }
    )


def float_chunks(samples: np.ndarray, chunk_ends_s: Sequence[float]) -> list[bytes]:
    """16 kHz float32 audio cut at the same offsets as the streamstt path's chunks."""
    bounds = [0] + [min(len(samples), int(round(end * SAMPLE_RATE))) for end in chunk_ends_s]
    return [samples[a:b].astype(np.float32).tobytes() for a, b in zip(bounds, bounds[1:])]


class _Receiver:
    """Reads every message with its receive time; knows when the peer has said it all."""

    def __init__(self) -> None:
        self.messages: list[PeerMessage] = []
        self.arrived = asyncio.Event()
        self.ready = asyncio.Event()
        self.refusal: str | None = None
        self.last_change_t = 0.0  # when the text of the latest segment last changed
        self._last_text: str | None = None
        self.settled_to = -1.0  # end of the last segment when every shown one is completed

    async def run(self, ws) -> None:
        async for message in ws:
            if not isinstance(message.data, str):
                continue
            self._record(time.monotonic(), json.loads(message.data))
        self.arrived.set()

    def _record(self, recv_t: float, body: dict) -> None:
        self.messages.append(PeerMessage(recv_t, body))
        if body.get("message") == SERVER_READY:
            self.ready.set()
        if body.get("status") in REFUSALS:
            self.refusal = f"{body['status']}: {body.get('message', '')}"
            self.ready.set()
        if segments := body.get("segments"):
            last = segments[-1]
            if last["text"] != self._last_text:
                self._last_text, self.last_change_t = last["text"], recv_t
            self.settled_to = float(last["end"]) if last.get("completed") else -1.0
        self.arrived.set()


async def _drain(receiver: _Receiver, audio_s: float, options: StreamOptions) -> None:
    """Wait, after the last chunk, until the peer completed its last segment up to the end of
    the audio (less than a second is never decoded: its minimum pass), or until its text has
    not changed for drain_idle_s, the rule WhisperLive's own client disconnects by."""
    receiver.last_change_t = max(receiver.last_change_t, time.monotonic())
    while receiver.settled_to <= audio_s - 1.0 and receiver.refusal is None:
        left = receiver.last_change_t + options.drain_idle_s - time.monotonic()
        if left <= 0:
            return
        receiver.arrived.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(receiver.arrived.wait(), left)


async def _send_audio(ws, chunks, chunk_ends_s, interval_s, on_audio) -> list[latency.ChunkSend]:
    sent: list[latency.ChunkSend] = []
    first, previous = time.monotonic(), 0.0
    for k, chunk in enumerate(chunks):
        delay = first + k * interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(latency.ChunkSend(time.monotonic(), chunk_ends_s[k]))
        await ws.send_bytes(chunk)
        on_audio(chunk_ends_s[k] - previous)
        previous = chunk_ends_s[k]
    return sent


@dataclass(frozen=True)
class PeerStream:
    url: str  # ws://host:port of the WhisperLive server
    chunks: tuple[bytes, ...]  # float32 16 kHz
    chunk_ends_s: tuple[float, ...]
    interval_s: float  # wall seconds between chunks (chunk length / pace)
    options: StreamOptions = StreamOptions()


async def stream_to_whisperlive(
    stream: PeerStream, on_audio: Callable[[float], None] = lambda seconds: None
) -> Exchange:
    """Stream the chunks at their pace and record the whole exchange."""
    import aiohttp

    audio_s = stream.chunk_ends_s[-1] if stream.chunk_ends_s else 0.0
    receiver = _Receiver()
    sent: list[latency.ChunkSend] = []
    end_t, error, detail = None, None, ""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(stream.url, max_msg_size=0) as ws,
    ):
        reading = asyncio.create_task(receiver.run(ws))
        try:
            await ws.send_str(options_message(stream.options))
            await asyncio.wait_for(receiver.ready.wait(), stream.options.ready_timeout_s)
            if receiver.refusal is None:
                sent = await _send_audio(
                    ws, stream.chunks, stream.chunk_ends_s, stream.interval_s, on_audio
                )
                await _drain(receiver, audio_s, stream.options)
                end_t = time.monotonic()
                await ws.send_bytes(END_OF_AUDIO)
                # The server closes once it has cleaned up; a slow close loses no result.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reading), stream.options.close_timeout_s)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            error, detail = "DEADLINE_EXCEEDED", "no SERVER_READY"
        except (aiohttp.ClientError, ConnectionError) as exc:
            error, detail = type(exc).__name__, str(exc)
        finally:
            reading.cancel()
    if receiver.refusal and error is None:
        error, detail = receiver.refusal.split(":")[0], receiver.refusal
    return Exchange(tuple(sent), tuple(receiver.messages), audio_s, end_t, error, detail)
