"""Whether live text kept its promises: committed words that the finals revised, tentative
words that no final kept, and committed words that were wrong all along (against the
reference). Pure functions of a recorded timeline (latency.py has the timeline types);
docs/latency.md defines each.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import TypeVar

from .latency import StreamTimeline, Word, finals_by_utterance, matched_indexes, normalise

COMMITTED_STABILITY = 0.5  # interim results at or above this stability are committed words


_C = TypeVar("_C", bound="_Counts")


class _Counts:
    """Word counts that add up field by field (streams pooled into a level)."""

    def __add__(self: _C, other: _C) -> _C:
        return type(self)(*(a + b for a, b in zip(astuple(self), astuple(other))))


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class Stability(_Counts):
    committed: int  # distinct committed words shown
    revised: int  # of those, words the finals do not keep
    tentative: int  # distinct tentative words shown
    flicker: int  # of those, words the finals do not keep

    @property
    def revision_rate(self) -> float | None:
        return _share(self.revised, self.committed)

    @property
    def flicker_rate(self) -> float | None:
        return _share(self.flicker, self.tentative)


def stability(timeline: StreamTimeline) -> Stability:
    """A word shown as committed (or tentative) is one (utterance, position, text) in an
    interim hypothesis; it is kept when it aligns with the final of its utterance or, after a
    cut, of the next one (latency.matched_indexes: in order, end times within 1 s)."""
    finals = finals_by_utterance(timeline)
    shown: dict[tuple[int, int, str, bool], tuple[Word, ...]] = {}  # word -> latest hypothesis
    for response in timeline.responses:
        for utterance, (committed, tentative) in _interims(response.results).items():
            hypothesis = committed + tentative
            for index, word in enumerate(hypothesis):
                text = normalise(word.text)
                if text:
                    shown[(utterance, index, text, index < len(committed))] = hypothesis
    counts = {True: [0, 0], False: [0, 0]}  # committed?: [shown, not kept]
    for (utterance, index, _, committed), hypothesis in shown.items():
        if utterance not in finals:
            continue  # the stream ended without this utterance's final: nothing to compare
        final = finals[utterance][1] + finals.get(utterance + 1, (0.0, ()))[1]
        counts[committed][0] += 1
        counts[committed][1] += index not in _kept(hypothesis, final)
    return Stability(counts[True][0], counts[True][1], counts[False][0], counts[False][1])


def _interims(results) -> dict[int, tuple[tuple[Word, ...], tuple[Word, ...]]]:
    """Per utterance, the committed and tentative words of a response's interim results."""
    out: dict[int, tuple[tuple[Word, ...], tuple[Word, ...]]] = {}
    for result in results:
        if result.is_final:
            continue
        committed, tentative = out.get(result.utterance, ((), ()))
        if result.stability >= COMMITTED_STABILITY:
            committed += result.words
        else:
            tentative += result.words
        out[result.utterance] = (committed, tentative)
    return out


def _kept(hypothesis: Sequence[Word], final: Sequence[Word]) -> set[int]:
    """Indexes of the hypothesis's words that align with a word of the final."""
    return set(matched_indexes(final, hypothesis))


@dataclass(frozen=True)
class Correctness(_Counts):
    """Committed and final words held against the reference transcript. A committed word is
    never revised, so one that is wrong stays wrong: the revision rate cannot see it (the
    final keeps it), this can. Committed words should be no likelier wrong than final ones."""

    committed: int  # committed words of the stream (each utterance's last committed words)
    committed_wrong: int  # of those, words the reference does not have there
    final: int  # words of the finals
    final_wrong: int

    @property
    def committed_wrong_rate(self) -> float | None:
        return _share(self.committed_wrong, self.committed)

    @property
    def final_wrong_rate(self) -> float | None:
        return _share(self.final_wrong, self.final)


def correctness(timeline: StreamTimeline, reference: str) -> Correctness:
    """Each utterance's committed words (the last interim's; words past its final's end
    went on into the next utterance after a cut and are counted there) and the finals' words,
    aligned in order with the reference (difflib, normalised words): a word is wrong where it
    does not align with the same reference word."""
    finals = finals_by_utterance(timeline)
    last: dict[int, tuple[Word, ...]] = {}
    for response in timeline.responses:
        for utterance, (committed, _) in _interims(response.results).items():
            if committed:
                last[utterance] = committed
    committed = []
    for utterance in sorted(last):
        end = max((w.end_s for w in finals.get(utterance, (0.0, ()))[1]), default=None)
        own = last[utterance] if end is None else [w for w in last[utterance] if w.end_s <= end]
        committed.extend(own)
    final = [w for u in sorted(finals) for w in finals[u][1]]
    words = normalise(reference).split()
    shown, wrong = _wrong(committed, words)
    said, missed = _wrong(final, words)
    return Correctness(shown, wrong, said, missed)


def _wrong(shown: Sequence[Word], reference: list[str]) -> tuple[int, int]:
    """How many words `shown` holds (normalised), and how many align with no reference word."""
    words = normalise(" ".join(w.text for w in shown)).split()
    matcher = difflib.SequenceMatcher(None, words, reference, autojunk=False)
    right = sum(block.size for block in matcher.get_matching_blocks())
    return len(words), len(words) - right
