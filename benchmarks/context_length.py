"""Encoder context length: WER and time on the clean clips (recorded in docs/benchmarks.md).

    python benchmarks/context_length.py [--precision auto] [--threads 2]

The references of the two 12 s / 20 s excerpts of long_read are the 30 s-window transcripts.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import jiwer
import soundfile
import torch

from streamstt.models.transcriber import Request, TranscribeOptions, Transcriber

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CLIPS = ["en_us_male", "en_us_female", "en_scottish_fast", "en_hts_female", "sample"]
SETTINGS = [
    ("30 s window", TranscribeOptions(full_window=True)),
    ("audio only (truncated)", TranscribeOptions(min_encoder_s=0, encoder_margin_s=0)),
    (">=10 s, +5 s", TranscribeOptions(min_encoder_s=10)),
    (">=15 s, +5 s (default)", TranscribeOptions()),
    (">=20 s, +5 s", TranscribeOptions(min_encoder_s=20)),
]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split())


def load(name: str) -> torch.Tensor:
    samples, _ = soundfile.read(DATA / f"{name}.wav", dtype="float32")
    return torch.from_numpy(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = Transcriber.load(precision=args.precision, device="cpu")
    pair = load("two_utterances")
    clips = [
        (pair[:54912], "Good morning, how are you feeling on this lovely day?"),
        (pair[54912:], "I think we should take a walk in the park after lunch."),
    ]
    clips += [(load(n), (DATA / f"{n}.txt").read_text()) for n in CLIPS]
    long_read = load("long_read")
    for seconds in (12, 20):
        excerpt = long_read[: seconds * 16000]
        clips.append((excerpt, model.transcribe(excerpt, SETTINGS[0][1]).text))
    print(
        f"precision: {model.plan.describe()}\n| encoder span | WER | median time of all clips (s) |"
    )
    print("| --- | --- | --- |")
    for label, options in SETTINGS:
        texts = [model.transcribe_batch([Request(c)], options)[0].text for c, _ in clips]
        walls = []
        for _ in range(3):
            started = time.perf_counter()
            for clip, _ in clips:
                model.transcribe_batch([Request(clip)], options)
            walls.append(time.perf_counter() - started)
        error = jiwer.wer([normalise(r) for _, r in clips], [normalise(t) for t in texts])
        print(f"| {label} | {error:.3f} | {sorted(walls)[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
