"""Streamed accuracy without the clock: each file is fed to a real `StreamSession` 100 ms at a
time, and every decode the session asks for runs at once on the model (virtual time: as if
the model were infinitely fast; `streamstt.server.stream.replay`). Deterministic, and a 44 s
fixture takes ~30 s on 2 cores, so an engine rule (endpointing, agreement, left context,
final options) can be judged on many files before a real-time run (`benchmarks/accuracy.py
--streamed`, `streamstt bench`).

    python benchmarks/replay.py [--fixtures read_clean,read_white10] [FILE ...] [--json out]
        [--schedule 5:0] (decode after every 5th 100 ms chunk: a model busy for 0.5 s)

Per file: the finals' WER, the committed words and the share of them that the reference does
not have (`client.bench.stability.correctness`), the commit delay: how much audio came after
a word's end before it was committed (p50 / p95, seconds of stream time), and the final
delay: how much came after a final's last word before the final (p50). A file needs
its reference text beside it (FILE.txt). The server's own defaults and `auto` precision.

    [--noise-seeds K] adds read_white10 and read_white5 over K more draws of white noise
        (benchmarks/accuracy.py's draws); [--offline] also transcribes each file offline
        (as `streamstt transcribe`) and, per fixture and its draws, gives the streamed minus
        offline WER (mean and standard error) and how many files meet the streaming bar
        (offline + 1 point): over many draws, not one, the streaming engine's own share.
        [--passages] adds 24 files of texts the fixtures do not read (flite voices; white
        noise at 10 and 5 dB, babble at 10 dB, telephony: benchmarks/accuracy.py's
        `make_passages`), so a rule is not judged on one passage only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import Tensor

from streamstt.client.bench import latency
from streamstt.client.bench.stability import correctness
from streamstt.models.audio import decode_audio
from streamstt.models.options import OFFLINE_OPTIONS
from streamstt.models.transcriber import Transcriber
from streamstt.server.stream.events import Final, Interim
from streamstt.server.stream.replay import replay as replay_events
from streamstt.server.stream.vad import SileroVad

HARD = Path(__file__).resolve().parents[1] / "tests" / "data" / "hard"


def _response(event: Final | Interim) -> latency.Response:
    """An event as the bench's timeline records it, received at its stream time."""

    def words(ws) -> tuple[latency.Word, ...]:
        return tuple(latency.Word(w.word, w.start, w.end) for w in ws)

    if isinstance(event, Final):
        final = event.result
        result = latency.Result(True, final.utterance_index, final.end, words(final.words))
        return latency.Response(event.progress.received_s, (result,))
    u, end = event.utterance_index, event.end_s
    committed = latency.Result(False, u, end, words(event.committed), 0.9)
    tentative = latency.Result(False, u, end, words(event.tentative), 0.1)
    return latency.Response(event.progress.received_s, (committed, tentative))


async def replay(
    model: Transcriber,
    vad: SileroVad,
    audio: np.ndarray,
    phrases: str = "",
    hotwords: tuple[tuple[str, float], ...] = (),
    schedule: tuple[int, int] = (1, 0),
) -> latency.StreamTimeline:
    """One stream of `audio` (16 kHz float) in virtual time (server.stream.replay) as the
    bench's timeline. `phrases`: the stream's phrase hints (prompt), `hotwords`: boosted
    phrases, `schedule`: when decodes run (every, phase)."""
    events = await replay_events(model, vad, audio, phrases, hotwords, schedule)
    responses = tuple(_response(event) for event in events)
    return latency.StreamTimeline((), responses, len(audio) / 16000)


def commit_delays(timeline: latency.StreamTimeline) -> list[float]:
    """Per committed word (utterance, position): stream time at its first commit minus its
    end."""
    first: dict[tuple[int, int], float] = {}
    for response in timeline.responses:
        for result in response.results:
            if result.is_final or result.stability < 0.5:
                continue
            for index, word in enumerate(result.words):
                first.setdefault((result.utterance, index), response.recv_t - word.end_s)
    return list(first.values())


def final_delays(timeline: latency.StreamTimeline) -> list[float]:
    """Per final with words: stream time when it came minus its last word's end (the wait
    the engine's rules make, decodes taking no time)."""
    return [
        response.recv_t - result.words[-1].end_s
        for response in timeline.responses
        for result in response.results
        if result.is_final and result.words
    ]


def _percentile(values: list[float], q: int) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def score(reference: str, timeline: latency.StreamTimeline) -> dict:
    measured = correctness(timeline, reference)
    delays, finals = commit_delays(timeline), final_delays(timeline)
    return {
        "wer": round(latency.word_error_rate([reference], [latency.final_transcript(timeline)]), 4),
        "committed": measured.committed,
        "committed_wrong_rate": measured.committed_wrong_rate,
        "commit_delay_p50_s": _percentile(delays, 50),
        "commit_delay_p95_s": _percentile(delays, 95),
        "final_delay_p50_s": _percentile(finals, 50),
        "transcript": latency.final_transcript(timeline),
    }


def offline_wer(model: Transcriber, audio: Tensor, reference: str) -> float:
    """The recording's WER offline, as `streamstt transcribe` prints its text."""
    options = replace(OFFLINE_OPTIONS, word_timestamps=False)
    text = model.transcribe(audio, options).text
    return round(latency.word_error_rate([reference], [text]), 4)


def paired(results: dict) -> list[str]:
    """Per fixture and its noise draws (the file name without `_sN`), and per kind of held-out
    passage (`passages_white10`: `pK_VOICE_white10` of every reading): streamed minus
    offline WER in points, its mean and standard error, and the files within the streaming
    bar (offline + 1 point)."""
    from statistics import mean, stdev

    groups: dict[str, list[float]] = {}
    for name, item in results.items():
        if "offline_wer" in item:
            group = re.sub(r"_s\d+$", "", Path(name).stem)
            group = re.sub(r"^p\d+_[a-z]+_", "passages_", group)
            # both WERs carry four decimals: the difference in points, two
            diff = round(100 * (item["wer"] - item["offline_wer"]), 2)
            groups.setdefault(group, []).append(diff)
    lines = []
    for group, diffs in groups.items():
        error = f" ± {stdev(diffs) / len(diffs) ** 0.5:.2f}" if len(diffs) > 1 else ""
        within = sum(d <= 1.0 for d in diffs)
        lines.append(
            f"{group}: {len(diffs)} files, streamed - offline {mean(diffs):+.2f}{error} points,"
            f" within offline + 1: {within}"
        )
    return lines


def _paths(args: argparse.Namespace) -> list[Path]:
    paths = list(args.files)
    for name in filter(None, args.fixtures.split(",")):
        paths.append(next(p for p in sorted(HARD.glob(f"{name}.*")) if p.suffix != ".txt"))
    if args.noise_seeds:
        from accuracy import SEEDS, make_noise_seeds  # this folder's sibling

        paths += [SEEDS / f"{name}.flac" for name in make_noise_seeds(args.noise_seeds)]
    if args.passages:
        from accuracy import make_passages

        paths += make_passages()
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="audio files with FILE.txt beside")
    parser.add_argument("--fixtures", default="", help="names in tests/data/hard")
    parser.add_argument("--noise-seeds", type=int, default=0, metavar="K")
    parser.add_argument("--passages", action="store_true", help="24 files of other texts")
    parser.add_argument("--offline", action="store_true", help="pair each file with offline")
    parser.add_argument("--schedule", default="1:0", help="every:phase (decode after chunks)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    model, vad = Transcriber.load(device="cpu"), SileroVad()
    schedule = tuple(map(int, args.schedule.split(":")))
    results = {}
    for path in _paths(args):
        audio, reference = decode_audio(path), path.with_suffix(".txt").read_text()
        timeline = asyncio.run(replay(model, vad, audio.numpy(), schedule=schedule))
        results[str(path)] = score(reference, timeline)
        if args.offline:
            results[str(path)]["offline_wer"] = offline_wer(model, audio, reference)
        shown = {k: v for k, v in results[str(path)].items() if k != "transcript"}
        print(path.stem, json.dumps(shown), flush=True)
    if args.offline:
        print("\n".join(paired(results)))
    if args.json:
        args.json.write_text(
            json.dumps({"plan": model.plan.describe(), "files": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
