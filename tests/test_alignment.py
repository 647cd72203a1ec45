"""Word-time helpers against their textbook forms: dynamic time warping (the row-wise
vectorised fill) and the median filter (a sorting network)."""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from streamstt.models.alignment import SORT7, dtw, median_filter


def reference_dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell by cell, with Whisper's tie rule (diagonal, then up, then left)."""
    rows, cols = cost.shape
    total = np.full((rows + 1, cols + 1), np.inf)
    trace = np.full((rows + 1, cols + 1), -1)
    total[0, 0] = 0.0
    for j in range(1, cols + 1):
        for i in range(1, rows + 1):
            c0, c1, c2 = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
            if c0 < c1 and c0 < c2:
                best, step = c0, 0
            elif c1 < c0 and c1 < c2:
                best, step = c1, 1
            else:
                best, step = c2, 2
            total[i, j], trace[i, j] = cost[i - 1, j - 1] + best, step
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = rows, cols, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    array = np.array(path[::-1])
    return array[:, 0], array[:, 1]


def test_dtw_equals_the_cell_by_cell_recurrence():
    rng = np.random.default_rng(0)
    for _ in range(150):
        rows, cols = int(rng.integers(1, 25)), int(rng.integers(1, 90))
        cost = -rng.standard_normal((rows, cols)).astype(np.float32)
        ours, theirs = dtw(cost), reference_dtw(cost)
        assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])


def test_dtw_follows_a_clear_diagonal():
    cost = np.ones((4, 12))
    for row, cols in enumerate([(0, 3), (3, 6), (6, 9), (9, 12)]):
        cost[row, slice(*cols)] = -1.0
    rows, times = dtw(cost)
    first = {int(r): int(t) for r, t in zip(rows[::-1], times[::-1])}  # first time per row
    assert [first[r] for r in range(4)] == [0, 3, 6, 9]


def test_the_median_network_sorts_any_seven_values():
    """0-1 principle: a comparator network that sorts every 0/1 input sorts every input."""
    for bits in itertools.product((0, 1), repeat=7):
        values = list(bits)
        for a, b in SORT7:
            values[a], values[b] = min(values[a], values[b]), max(values[a], values[b])
        assert values == sorted(bits)


def test_median_filter_equals_the_windowed_median():
    weights = torch.randn(8, 23, 301)
    padded = F.pad(weights.reshape(-1, 1, 301), (3, 3), mode="reflect")
    expected = padded.unfold(-1, 7, 1).median(dim=-1).values.reshape(weights.shape)
    assert torch.equal(median_filter(weights, 7), expected)
