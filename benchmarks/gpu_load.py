"""In-process GPU load generator: how many real-time streams one device sustains.

    python benchmarks/gpu_load.py --streams 64,256,512,1024 [--step-ms 500] [--out DIR]

No gRPC and no client: for each N, N windows of real speech (cut from the test clips at
staggered lengths, as N streams mid-utterance would be) are decoded in batches of
`--max-batch` through the prefetch (pinned memory, side-stream copy) and model stages, for
`--seconds` of simulated time. A stream re-decodes every `--step-ms`, so N streams are
sustainable while one round of N decodes takes less than a step; the emission-latency
estimate is step/2 + round time. Copy/compute overlap is profiled with CUDA events.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import soundfile
import torch

from streamstt.models.transcriber import Request, TranscribeOptions, Transcriber

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CLIPS = ["long_read", "en_us_male", "en_us_female", "two_utterances", "sample"]


def windows(count: int) -> list[torch.Tensor]:
    audio = [torch.from_numpy(soundfile.read(DATA / f"{n}.wav", dtype="float32")[0]) for n in CLIPS]
    out = []
    for i in range(count):
        clip = audio[i % len(audio)]
        seconds = 2.0 + (i * 0.37) % 8.0  # 2-10 s of an open utterance
        out.append(clip[: int(seconds * 16000)])
    return out


def run_level(model: Transcriber, count: int, max_batch: int, rounds: int) -> dict:
    options = TranscribeOptions(word_timestamps=True)
    audios = windows(count)
    round_times = []
    for _ in range(rounds):
        started = time.perf_counter()
        prepared = model.prepare([Request(a) for a in audios[:max_batch]], options)
        for start in range(0, count, max_batch):
            nxt = start + max_batch
            # issue the next batch's copy before this batch's compute, so they overlap
            upcoming = (
                model.prepare([Request(a) for a in audios[nxt : nxt + max_batch]], options)
                if nxt < count
                else None
            )
            model.run(prepared, options)
            prepared = upcoming
        torch.cuda.synchronize()
        round_times.append(time.perf_counter() - started)
    return {
        "streams": count,
        "round_s_median": statistics.median(round_times),
        "round_s_max": max(round_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", default="64,256,512,1024")
    parser.add_argument("--max-batch", type=int, default=128)
    parser.add_argument("--step-ms", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--out", default=os.environ.get("OUT", ""))
    args = parser.parse_args()
    model = Transcriber.load(device="cuda", precision=args.precision)
    run_level(model, 8, 8, 1)  # warm-up
    results = []
    for count in (int(n) for n in args.streams.split(",")):
        level = run_level(model, count, args.max_batch, args.rounds)
        step = args.step_ms / 1000
        level["sustainable"] = level["round_s_max"] < step
        level["emission_estimate_s"] = step / 2 + level["round_s_median"]
        results.append(level)
        print(json.dumps(level), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_load.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
