"""Latency and accuracy metrics of `streamstt bench`, computed from a recorded timeline.

Pure functions over plain dataclasses (no gRPC, no clocks), so every number in a bench report
can be checked by hand in a unit test. docs/latency.md defines each metric, its unit and its
edge cases; keep the two in step.

All times are seconds: `send_t` / `recv_t` on one monotonic clock, `*_s` audio offsets from the
first sample of the stream (the server's stream time).
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)
# A result end or word end this close after a chunk boundary still belongs to that chunk: stream
# times are rounded to whole samples (and resampled rates do not divide chunk boundaries).
BOUNDARY_EPS_S = 1e-3
# An interim word only counts as an early sighting of a final word if their end times agree
# this well; otherwise a common word ("the") far away in a hypothesis would match.
WORD_MATCH_TOLERANCE_S = 1.0
# Lag growth: the last third's median partial lag may be at most this factor times the first
# third's plus this slack (a steady lag passes; a backlog that keeps growing fails).
LAG_GROWTH_FACTOR = 1.5
LAG_GROWTH_SLACK_S = 0.3


# ---- timeline -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChunkSend:
    send_t: float  # when the chunk was handed to the transport
    audio_end_s: float  # stream offset of the chunk's last sample (end of its audio)


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float = 0.0
    end_s: float = 0.0
    timed: bool = True  # False when the result carried no word times


@dataclass(frozen=True)
class Result:
    is_final: bool
    utterance: int
    end_s: float  # result_end_time
    words: tuple[Word, ...] = ()
    stability: float = 0.0


@dataclass(frozen=True)
class Response:
    recv_t: float
    results: tuple[Result, ...] = ()


@dataclass(frozen=True)
class StreamTimeline:
    chunks: tuple[ChunkSend, ...]
    responses: tuple[Response, ...]
    audio_s: float  # audio sent on this stream
    error: str | None = None  # status code name when the stream did not end OK
    error_detail: str = ""  # the status message


# ---- text -----------------------------------------------------------------------------------
def normalise(text: str) -> str:
    """Lower-case, punctuation removed, hyphens split: the WER convention of the tests."""
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split())


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Corpus WER over pairs (normalised); pairs with an empty reference are left out because
    WER is undefined for them. None when no pair is left."""
    import jiwer

    pairs = [(normalise(r), normalise(h)) for r, h in zip(references, hypotheses)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return None
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


def phrase_recall(text: str, phrases: Sequence[str]) -> int:
    """How many of the phrases `text` holds as whole words (any case): the recall of a
    phrase boost."""
    whole = (rf"(?<!\w){re.escape(p)}(?!\w)" for p in phrases)  # "C++" too, unlike \b
    return sum(bool(re.search(pattern, text, re.IGNORECASE)) for pattern in whole)


def final_transcript(timeline: StreamTimeline) -> str:
    """The finals of a stream joined in arrival order."""
    return " ".join(
        " ".join(w.text for w in result.words)
        for response in timeline.responses
        for result in response.results
        if result.is_final and result.words
    )


# ---- per-stream metrics ----------------------------------------------------------------------
def send_time_at(chunks: Sequence[ChunkSend], offset_s: float) -> float | None:
    """Send time of the chunk that contains `offset_s` (the first chunk whose end is at or after
    it); the last chunk for offsets past the end; None without chunks."""
    if not chunks:
        return None
    ends = [c.audio_end_s for c in chunks]
    index = bisect.bisect_left(ends, offset_s - BOUNDARY_EPS_S)
    return chunks[min(index, len(chunks) - 1)].send_t


@dataclass(frozen=True)
class WordEmission:
    utterance: int
    index: int  # position in the utterance's final word sequence
    text: str
    end_s: float  # end time from the final result
    first_seen_t: float  # receive time of the first result that showed the word
    final_t: float  # receive time of the final result
    emission_s: float  # first_seen_t - send time of the chunk holding end_s


def _hypotheses(response: Response) -> dict[int, list[Word]]:
    """Per utterance, the word sequence this response shows: a final's words, or the interim
    results' words concatenated in order (committed, then the tentative tail)."""
    shown: dict[int, list[Word]] = {}
    finals = {r.utterance for r in response.results if r.is_final}
    for result in response.results:
        if result.is_final:
            shown[result.utterance] = list(result.words)
        elif result.utterance not in finals:
            shown.setdefault(result.utterance, []).extend(result.words)
    return shown


def matched_indexes(hypothesis: Sequence[Word], final: Sequence[Word]) -> Iterable[int]:
    """Indexes of final words that the hypothesis shows: aligned in order by normalised text
    (difflib matching blocks), and within WORD_MATCH_TOLERANCE_S of the final end time."""
    a = [normalise(w.text) for w in hypothesis]
    b = [normalise(w.text) for w in final]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            seen, word = hypothesis[block.a + k], final[block.b + k]
            if not b[block.b + k]:
                continue
            if _near(seen, word):
                yield block.b + k


def word_emissions(timeline: StreamTimeline) -> list[WordEmission]:
    """Emission latency of every word of every final (words that normalise to nothing, such
    as a lone punctuation mark, are left out): a word counts as shown once a hypothesis shows
    it, wherever it stands."""
    return _emissions(timeline, matched_indexes)


def correct_prefix_emissions(timeline: StreamTimeline) -> list[WordEmission]:
    """Correct-prefix latency of every word of every final: word i counts as shown only once
    a hypothesis shows words 0..i of its utterance's final exactly (normalised), in a row."""
    return _emissions(timeline, _prefix)


def finals_by_utterance(timeline: StreamTimeline) -> dict[int, tuple[float, tuple[Word, ...]]]:
    """Per utterance, the receive time and words of its (first) final result."""
    finals: dict[int, tuple[float, tuple[Word, ...]]] = {}
    for response in timeline.responses:
        for result in response.results:
            if result.is_final and result.utterance not in finals:
                finals[result.utterance] = (response.recv_t, result.words)
    return finals


def _emissions(timeline: StreamTimeline, shows) -> list[WordEmission]:
    """For every final word, the first response whose hypothesis `shows` it (a function of
    the hypothesis and the final's words that yields the indexes of the words it shows)."""
    finals = finals_by_utterance(timeline)
    first_seen: dict[tuple[int, int], float] = {}
    closed: set[int] = set()  # utterances whose final arrived in an earlier response
    for response in timeline.responses:
        shown = _hypotheses(response)
        final_now = {r.utterance for r in response.results if r.is_final}
        still_open = sorted(shown.keys() - closed - final_now)  # shown as interims only
        for utterance in finals.keys() - closed:
            # The words this response shows for the utterance, and before them the interim
            # words it shows for earlier utterances still open: a cut in continuous speech
            # closes an utterance at a pause, and the words after the pause, shown in that
            # utterance's interims, are in the next one's final. The reader saw them.
            earlier = [word for u in still_open if u < utterance for word in shown[u]]
            hypothesis = earlier + shown.get(utterance, [])
            for index in shows(hypothesis, finals[utterance][1]):
                first_seen.setdefault((utterance, index), response.recv_t)
        closed |= final_now
    emissions = []
    for utterance, (final_t, words) in sorted(finals.items()):
        for index, word in enumerate(words):
            sent = send_time_at(timeline.chunks, word.end_s)
            if not normalise(word.text) or sent is None:
                continue
            seen = first_seen.get((utterance, index), final_t)
            emissions.append(
                WordEmission(utterance, index, word.text, word.end_s, seen, final_t, seen - sent)
            )
    return emissions


def _prefix(hypothesis: Sequence[Word], final: Sequence[Word]) -> list[int]:
    """Indexes of the final's words 0..i that the hypothesis shows in a row, for the
    longest such i (words that normalise to nothing are passed over on both sides); the run
    must start where the final's first word ends (within WORD_MATCH_TOLERANCE_S, if timed)."""
    hyp = [w for w in hypothesis if normalise(w.text)]
    wanted = [(i, w) for i, w in enumerate(final) if normalise(w.text)]
    if not wanted:
        return []
    best = 0
    for start, word in enumerate(hyp):
        first = wanted[0][1]
        if normalise(word.text) != normalise(first.text) or not _near(word, first):
            continue
        length = 0
        while (
            length < len(wanted)
            and start + length < len(hyp)
            and normalise(hyp[start + length].text) == normalise(wanted[length][1].text)
        ):
            length += 1
        best = max(best, length)
    return [i for i, _ in wanted[:best]]


def _near(seen: Word, word: Word) -> bool:
    return not (seen.timed and word.timed) or abs(seen.end_s - word.end_s) <= WORD_MATCH_TOLERANCE_S


@dataclass(frozen=True)
class PartialLag:
    audio_s: float  # the interim response's result_end_time
    lag_s: float  # receive time - send time of the chunk holding audio_s


def partial_lags(timeline: StreamTimeline) -> list[PartialLag]:
    """One value per response that carries interim results (both interim results of a response
    cover the same audio, so counting each would weigh that response twice)."""
    lags = []
    for response in timeline.responses:
        ends = [r.end_s for r in response.results if not r.is_final]
        if not ends or max(ends) <= 0:
            continue
        sent = send_time_at(timeline.chunks, max(ends))
        if sent is not None:
            lags.append(PartialLag(max(ends), response.recv_t - sent))
    return lags


def final_latencies(timeline: StreamTimeline) -> list[float]:
    """Per final: receive time - send time of the audio at its last word's end (the result end
    when the final has no timed words)."""
    latencies = []
    for response in timeline.responses:
        for result in response.results:
            if not result.is_final:
                continue
            timed = [w.end_s for w in result.words if w.timed]
            sent = send_time_at(timeline.chunks, max(timed) if timed else result.end_s)
            if sent is not None:
                latencies.append(response.recv_t - sent)
    return latencies


def time_to_first_result(timeline: StreamTimeline) -> float | None:
    """First response with any words (interim or final) - send time of the first chunk."""
    if not timeline.chunks:
        return None
    for response in timeline.responses:
        if any(r.words for r in response.results):
            return response.recv_t - timeline.chunks[0].send_t
    return None


@dataclass(frozen=True)
class LagGrowth:
    first_s: float | None  # median partial lag over the first third of the stream's audio
    last_s: float | None  # ... over the last third
    grew: bool | None  # None when either third has no interim response


def lag_growth(lags: Sequence[PartialLag], audio_s: float) -> LagGrowth:
    first = [p.lag_s for p in lags if p.audio_s <= audio_s / 3]
    last = [p.lag_s for p in lags if p.audio_s >= 2 * audio_s / 3]
    if not first or not last:
        return LagGrowth(
            float(np.median(first)) if first else None,
            float(np.median(last)) if last else None,
            None,
        )
    first_s, last_s = float(np.median(first)), float(np.median(last))
    return LagGrowth(first_s, last_s, last_s > LAG_GROWTH_FACTOR * first_s + LAG_GROWTH_SLACK_S)


# ---- summaries ----------------------------------------------------------------------------------
def summary_ms(values_s: Sequence[float]) -> dict[str, float | int | None]:
    """count, mean, p50/p90/p95/p99 (linear interpolation, numpy's default) and max, in ms."""
    if len(values_s) == 0:
        return {"count": 0, "mean": None, **{f"p{q}": None for q in PERCENTILES}, "max": None}
    values = np.asarray(values_s, dtype=float) * 1000.0
    stats: dict[str, float | int | None] = {"count": len(values)}
    stats["mean"] = round(float(values.mean()), 1)
    for q in PERCENTILES:
        stats[f"p{q}"] = round(float(np.percentile(values, q)), 1)
    stats["max"] = round(float(values.max()), 1)
    return stats


@dataclass(frozen=True)
class Verdict:
    within_budget: bool
    reason: str  # why not ("" when within)


def level_verdict(
    emission_p95_ms: float | None, errors: int, lag_grew: bool, budget_ms: float
) -> Verdict:
    """A level is within budget when its pooled p95 emission latency is below the budget, no
    stream failed and no stream's partial lag grew."""
    if errors:
        return Verdict(False, f"{errors} stream error(s)")
    if emission_p95_ms is None:
        return Verdict(False, "no words emitted")
    if emission_p95_ms >= budget_ms:
        return Verdict(False, f"p95 emission {emission_p95_ms:.0f} ms >= {budget_ms:.0f} ms")
    if lag_grew:
        return Verdict(False, "partial lag grew")
    return Verdict(True, "")


def max_streams_within_budget(verdicts: dict[int, Verdict]) -> int | None:
    """The largest stream count whose level is within budget (None when none is)."""
    passing = [n for n, verdict in verdicts.items() if verdict.within_budget]
    return max(passing) if passing else None
