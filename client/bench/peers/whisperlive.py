"""WhisperLive's wire messages as a bench timeline: the protocol adapter of `--peer whisperlive`.

Pure functions over a recorded exchange (no sockets, no clocks), so the mapping is unit-tested
on a recorded real run (tests/data/whisperlive_timeline.json). docs/latency.md describes it:

* a WhisperLive message carries `segments` (start, end, text, completed), the last ten
  completed ones again every time, then the incomplete one being decoded;
* a completed segment is a final, the first time it is seen; it gets the next utterance index
  and is dropped when it starts before the previous final ends (WhisperLive's own client
  keeps its transcript the same way);
* the incomplete last segment is an interim of the utterance after the finals so far, unless
  it repeats the previous interim exactly (WhisperLive resends an unchanged hypothesis on every
  pass until it completes it: the reader sees nothing new, and as a response it would count a
  growing partial lag for audio that was already shown);
* what is still incomplete when the stream ends is a final at the moment END_OF_AUDIO was
  sent, as WhisperLive's client keeps its last segment in its transcript;
* word times: each segment's span is spread over its words in proportion to their length;
  a segment completed because its text stopped changing (same_output_threshold) keeps the
  times of the interim it completes: WhisperLive restarts its span at the undecoded audio's
  start, silence included, which would move every word of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import latency

SERVER_READY = "SERVER_READY"
END_OF_AUDIO = b"END_OF_AUDIO"  # sent as a binary message, as WhisperLive's client does
REFUSALS = ("WAIT", "ERROR")  # `status` values that end a stream (WARNING does not)


@dataclass(frozen=True)
class PeerMessage:
    recv_t: float  # when the message was read, on the timeline's clock
    body: dict  # the JSON message as sent


@dataclass(frozen=True)
class Exchange:
    """One stream's traffic with the peer, as recorded; `timeline` turns it into metrics."""

    chunks: tuple[latency.ChunkSend, ...]
    messages: tuple[PeerMessage, ...]
    audio_s: float
    end_t: float | None  # when END_OF_AUDIO was sent (None when the stream broke first)
    error: str | None = None
    error_detail: str = ""


def spread_words(text: str, start_s: float, end_s: float) -> tuple[latency.Word, ...]:
    """The words of a segment with times spread over its span in proportion to their
    characters (a segment has no word times without word_timestamps, off by default)."""
    words = text.split()
    total = sum(len(w) for w in words)
    span = max(0.0, end_s - start_s)
    spread, done = [], 0
    for word in words:
        begin = start_s + span * done / total
        done += len(word)
        spread.append(latency.Word(word, begin, start_s + span * done / total))
    return tuple(spread)


def _words(segment: dict) -> tuple[latency.Word, ...]:
    return spread_words(segment["text"], float(segment["start"]), float(segment["end"]))


class _Segments:
    """Which completed segments were already shown, and the next utterance index."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, str]] = set()
        self.next_utterance = 0
        self.last_end = float("-inf")
        self.pending: latency.Result | None = None  # the incomplete segment last shown
        self.pending_segment: dict = {}  # ... as WhisperLive sent it

    def _completed_words(self, segment: dict) -> tuple[latency.Word, ...]:
        shown = self.pending_segment
        if self.pending and (shown["text"], shown["end"]) == (segment["text"], segment["end"]):
            return self.pending.words  # the pending segment, completed as it stood
        return _words(segment)

    def results(self, segments: Sequence[dict]) -> list[latency.Result]:
        results = []
        for segment in segments:
            key = (segment["start"], segment["end"], segment["text"])
            if not segment.get("completed") or key in self.seen:
                continue
            self.seen.add(key)
            if float(segment["start"]) < self.last_end:
                continue  # overlaps the transcript so far: WhisperLive's client drops it
            self.last_end = float(segment["end"])
            words = self._completed_words(segment)
            results.append(latency.Result(True, self.next_utterance, self.last_end, words))
            self.next_utterance += 1
        last = segments[-1] if segments else None
        if last is None or last.get("completed") or not last["text"].strip():
            self.pending = None
            return results
        interim = latency.Result(False, self.next_utterance, float(last["end"]), _words(last))
        self.pending_segment = last
        if interim != self.pending:
            results.append(interim)
        self.pending = interim
        return results


def timeline(exchange: Exchange) -> latency.StreamTimeline:
    """The exchange as the harness's timeline: one response per message with segments."""
    tracker = _Segments()
    responses: list[latency.Response] = []
    error, detail = exchange.error, exchange.error_detail
    for message in exchange.messages:
        body = message.body
        if body.get("status") in REFUSALS:
            error, detail = error or str(body["status"]), detail or str(body.get("message", ""))
        if "segments" not in body:
            continue
        results = tracker.results(body["segments"])
        if results:
            responses.append(latency.Response(message.recv_t, tuple(results)))
    pending = tracker.pending
    if pending is not None and exchange.end_t is not None and error is None:
        last = latency.Result(True, pending.utterance, pending.end_s, pending.words)
        responses.append(latency.Response(exchange.end_t, (last,)))
    chunks = exchange.chunks
    return latency.StreamTimeline(chunks, tuple(responses), exchange.audio_s, error, detail)


# ---- recorded exchanges (the test fixture and OUT/whisperlive_exchange.json) --------------------
def exchange_to_json(exchange: Exchange) -> dict:
    return {
        "chunks": [[c.send_t, c.audio_end_s] for c in exchange.chunks],
        "messages": [[m.recv_t, m.body] for m in exchange.messages],
        "audio_s": exchange.audio_s,
        "end_t": exchange.end_t,
        "error": exchange.error,
        "error_detail": exchange.error_detail,
    }


def exchange_from_json(data: dict) -> Exchange:
    return Exchange(
        chunks=tuple(latency.ChunkSend(t, end) for t, end in data["chunks"]),
        messages=tuple(PeerMessage(t, body) for t, body in data["messages"]),
        audio_s=data["audio_s"],
        end_t=data["end_t"],
        error=data.get("error"),
        error_detail=data.get("error_detail", ""),
    )


def write_exchange(exchange: Exchange, path: Path, **about: object) -> None:
    """The exchange as JSON, with `about` (file, reference, versions) beside it."""
    path.write_text(json.dumps({**about, **exchange_to_json(exchange)}, indent=1) + "\n")
