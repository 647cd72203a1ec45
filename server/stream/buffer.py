"""The audio a stream still holds: 16 kHz samples with their place in stream time."""

from __future__ import annotations

import numpy as np


class AudioBuffer:
    """Samples [start, end) of stream time. Appends are amortised (capacity doubles), so a
    long utterance does not copy its whole audio for every 100 ms chunk."""

    def __init__(self) -> None:
        self._data = np.zeros(0, dtype=np.float32)
        self._size = 0  # samples held
        self.start = 0  # stream sample of the first one held

    @property
    def end(self) -> int:
        return self.start + self._size

    def append(self, samples: np.ndarray) -> None:
        needed = self._size + len(samples)
        if needed > len(self._data):
            grown = np.zeros(max(needed, 2 * len(self._data)), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : needed] = samples
        self._size = needed

    def trim(self, sample: int) -> None:
        """Drop the samples before `sample` (stream time)."""
        cut = min(max(0, sample - self.start), self._size)
        if cut:
            self._data = self._data[cut : self._size].copy()
            self._size -= cut
            self.start += cut

    def window(self, start: int, end: int) -> np.ndarray:
        """A copy of the samples [start, end) (clipped to what is held)."""
        lo, hi = max(0, start - self.start), max(0, min(end, self.end) - self.start)
        return self._data[lo:hi].copy()
