"""Events waiting for the client to read them.

Interims are superseded by newer ones, so a slow reader loses stale interims, never finals
or speech events; a reader that stays behind past `timeout_s` has its stream aborted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .events import End, Event


class Outbox:
    def __init__(self, size: int, timeout_s: float) -> None:
        self.size, self.timeout_s = size, timeout_s
        self._items: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._full_since: float | None = None

    def put(self, item: Event, droppable: bool = False) -> bool:
        """Queue an event (a droppable one is skipped while the outbox is full); False when
        the reader has been stuck for longer than `timeout_s`."""
        now = time.monotonic()
        if len(self._items) >= self.size:
            self._full_since = self._full_since or now
            if droppable:
                return now - self._full_since <= self.timeout_s
        else:
            self._full_since = None
        self._items.append(item)
        self._ready.set()
        return self._full_since is None or now - self._full_since <= self.timeout_s

    def end(self, item: End, discard: bool = False) -> None:
        """The last item; `discard`: drop what the reader has not taken yet."""
        if discard:
            self._items.clear()
        self._items.append(item)
        self._ready.set()

    async def get(self) -> Event:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if len(self._items) < self.size:
            self._full_since = None
        return item
