"""Separate recognition per channel: one call's interleaved audio split into a StreamSession
per channel (each with its own endpointing, agreement and utterance numbering, all sharing
the scheduler's batches), and their events merged back into one response stream, each
tagged with its channel (1-based, as Google's channel_tag)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from .events import End, Event
from .pcm import AudioFormatError, bytes_per_frame
from .session import StreamSession


@dataclass(frozen=True)
class OnChannel:
    """An event of one channel's session."""

    event: Event
    channel_tag: int


def split(data: bytes, channels: int, frame: int) -> list[bytes]:
    """Interleaved frames (`frame` bytes each, all channels) as one byte string a channel."""
    if len(data) % frame:
        raise AudioFormatError(
            f"audio_content has {len(data)} bytes, not a whole number of {frame}-byte frames "
            f"({channels} channels)"
        )
    samples = np.frombuffer(data, dtype=np.uint8).reshape(-1, channels, frame // channels)
    return [samples[:, c, :].tobytes() for c in range(channels)]


class ChannelGroup:
    """What the servicer drives for a call with separate recognition per channel: the
    calls it makes on a StreamSession, fanned out to one session a channel."""

    def __init__(self, sessions: list[StreamSession], encoding: int) -> None:
        self.sessions = sessions
        self.stream_id = sessions[0].stream_id
        self.settings = sessions[0].settings
        self._frame = bytes_per_frame(encoding, len(sessions))
        self.outbox = _Merged(sessions)

    @property
    def state(self):
        return self.sessions[0].state  # every channel has received the same audio

    @property
    def ended(self) -> bool:
        return all(s.ended for s in self.sessions)

    async def feed(self, data: bytes) -> bool:
        parts = split(data, len(self.sessions), self._frame)
        more = [await session.feed(part) for session, part in zip(self.sessions, parts)]
        return all(more)

    async def finish(self, status: End | None = None, more_audio: bool = False) -> None:
        for session in self.sessions:
            await session.finish(status, more_audio)

    def end(self, code: str, message: str = "", discard: bool = False) -> None:
        for session in self.sessions:
            session.end(code, message, discard)


class _Merged:
    """The channels' outboxes read as one: events in arrival order, tagged; one End, after
    every channel ended OK, or the first channel's failure (which ends the others)."""

    def __init__(self, sessions: list[StreamSession]) -> None:
        self._sessions = sessions
        self._reads: dict[asyncio.Task, int] = {}
        self._open = set(range(len(sessions)))
        self._ready: list[OnChannel] = []

    async def get(self) -> OnChannel | End:
        while not self._ready:
            if not self._open:
                return End("OK")
            for channel in self._open - set(self._reads.values()):
                read = asyncio.ensure_future(self._sessions[channel].outbox.get())
                self._reads[read] = channel
            done, _ = await asyncio.wait(self._reads, return_when=asyncio.FIRST_COMPLETED)
            for read in done:
                channel = self._reads.pop(read)
                event = read.result()
                if not isinstance(event, End):
                    self._ready.append(OnChannel(event, channel + 1))
                elif event.code == "OK":
                    self._open.discard(channel)
                else:
                    self._fail(event)
                    return event
        return self._ready.pop(0)

    def _fail(self, end: End) -> None:
        for read in self._reads:
            read.cancel()
        self._reads.clear()
        for session in self._sessions:
            session.end(end.code, end.message)
