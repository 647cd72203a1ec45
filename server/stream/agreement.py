"""LocalAgreement-2: which interim words are committed (shown as stable) and which are not.

A pure step over a frozen `Agreement` state: a word is committed once two consecutive
hypotheses agree on it (compared as normalised words); the rest of the newest hypothesis is
the tentative tail. Committed words of a long utterance settle: later interim windows leave
their audio out, so a long utterance costs no more per step than a short one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from streamstt.models.audio import SAMPLE_RATE
from streamstt.models.transcriber import Word

# seconds: hypothesis words ending before the last committed word's end (minus this jitter)
# were committed already; repeats that survive are removed as n-grams
COMMIT_TOLERANCE = 0.02
REPEAT_CHECK_WORDS = 5  # longest repeat of the committed tail that a hypothesis may open with
SETTLE_AFTER = int(12.0 * SAMPLE_RATE)  # interim window length past which committed words settle


@dataclass(frozen=True)
class Agreement:
    settled: tuple[Word, ...] = ()  # committed; their audio is left out of interim windows
    committed: tuple[Word, ...] = ()  # committed; their audio is still in the window
    tentative: tuple[Word, ...] = ()  # the newest hypothesis after the committed words
    window_start: int = 0  # first sample interim windows see (settled audio lies before it)

    @property
    def stable(self) -> tuple[Word, ...]:
        """Every committed word of the open utterance."""
        return self.settled + self.committed


def normal(word: str) -> str:
    """A word as agreement compares it: lower case, no punctuation."""
    return re.sub(r"[^\w']", "", word.lower())


def agreed_prefix(new: Sequence[Word], previous: Sequence[Word]) -> int:
    """Length of the longest common prefix of two hypotheses, compared as normalised words."""
    count = 0
    for a, b in zip(new, previous):
        if normal(a.word) != normal(b.word):
            break
        count += 1
    return count


def commit(
    state: Agreement, hypothesis: Sequence[Word], window_first_s: float
) -> tuple[Agreement, tuple[Word, ...]]:
    """Fold a new hypothesis of the window starting at `window_first_s` in; returns the new
    state and the words it newly commits."""
    done = state.committed or state.settled
    last_end = done[-1].end if done else window_first_s
    # Alignment stretches words, so judge "already committed" by where a word ends.
    new = [w for w in hypothesis if w.end > last_end - COMMIT_TOLERANCE]
    if done and new:  # the model often repeats the last committed words: drop the overlap
        for n in range(min(REPEAT_CHECK_WORDS, len(done), len(new)), 0, -1):
            if [normal(w.word) for w in done[-n:]] == [normal(w.word) for w in new[:n]]:
                new = new[n:]
                break
    agreed = agreed_prefix(new, state.tentative)
    newly = tuple(new[:agreed])
    return replace(state, committed=state.committed + newly, tentative=tuple(new[agreed:])), newly


def settle(state: Agreement, window_end: int) -> Agreement:
    """Past SETTLE_AFTER of interim window, the committed words settle and the window moves
    on to after them (their audio stays held for the final)."""
    if window_end - state.window_start <= SETTLE_AFTER or not state.committed:
        return state
    settled = state.settled + state.committed
    start = max(state.window_start, int(settled[-1].end * SAMPLE_RATE))
    return Agreement(settled, (), state.tentative, start)
