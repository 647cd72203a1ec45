"""Offline speed, accuracy and memory: our Whisper vs faster-whisper on the same audio.

    python benchmarks/offline.py [--threads 2] [--repeats 3] [--json out.json]

Each configuration runs in its own subprocess (so load time and resident memory are its own),
transcribes every clean clip in tests/data once to warm up, then `--repeats` more times; the
median wall time over the audio duration is the real-time factor (RTF; lower is faster).
faster-whisper is a benchmark/test dependency only.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CLIPS = [
    "en_us_male",
    "en_us_female",
    "en_scottish_fast",
    "en_hts_female",
    "sample",
    "two_utterances",
    "long_read",
]


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split())


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_ours(precision: str, threads: int, repeats: int, context: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    from streamstt.models.audio import decode_audio
    from streamstt.models.transcriber import TranscribeOptions, Transcriber

    started = time.perf_counter()
    model = Transcriber.load(precision=precision, device="cpu")
    load_s = time.perf_counter() - started
    options = TranscribeOptions(full_window=context == "full")
    audios = {n: decode_audio(DATA / f"{n}.wav") for n in CLIPS}
    return _measure(
        lambda a: model.transcribe(audios[a], options).text,
        audios,
        repeats,
        load_s,
        {"plan": model.plan.describe(), "calibration_ms": dict(model.plan.calibration_ms)},
    )


def run_faster_whisper(compute_type: str, threads: int, repeats: int) -> dict:
    from faster_whisper import WhisperModel

    from streamstt.models.audio import decode_audio
    from streamstt.models.loading import bundled_model_dir

    started = time.perf_counter()
    model = WhisperModel(
        str(bundled_model_dir()), device="cpu", compute_type=compute_type, cpu_threads=threads
    )
    load_s = time.perf_counter() - started
    audios = {n: decode_audio(DATA / f"{n}.wav") for n in CLIPS}

    def transcribe(name: str) -> str:
        segments, _ = model.transcribe(
            audios[name].numpy(), beam_size=1, temperature=0.0, vad_filter=False
        )
        return " ".join(s.text.strip() for s in segments)

    return _measure(transcribe, audios, repeats, load_s, {})


def _measure(transcribe, audios: dict, repeats: int, load_s: float, extra: dict) -> dict:
    import jiwer

    texts = {name: transcribe(name) for name in audios}  # warm-up, and the transcripts
    seconds = sum(a.shape[-1] for a in audios.values()) / 16000
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        for name in audios:
            transcribe(name)
        walls.append(time.perf_counter() - started)
    references = [_normalise((DATA / f"{n}.txt").read_text()) for n in audios]
    wer = jiwer.wer(references, [_normalise(texts[n]) for n in audios])
    return {
        "load_s": round(load_s, 3),
        "audio_s": round(seconds, 2),
        "median_wall_s": round(statistics.median(walls), 3),
        "rtf": round(statistics.median(walls) / seconds, 4),
        "wer": round(wer, 4),
        "rss_mb": round(_rss_mb(), 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        **extra,
    }


CONFIGS = [
    ("ours auto", ["ours", "auto", "short"]),
    ("ours fp32", ["ours", "fp32", "short"]),
    ("ours int8", ["ours", "int8", "short"]),
    ("ours bf16", ["ours", "bf16", "short"]),
    ("ours fp32 30s window", ["ours", "fp32", "full"]),
    ("ours auto 30s window", ["ours", "auto", "full"]),
    ("faster-whisper int8", ["fw", "int8"]),
    ("faster-whisper fp32", ["fw", "float32"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--only", help="comma-separated config names to run")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "ours":
            result = run_ours(rest[0], args.threads, args.repeats, rest[1])
        else:
            result = run_faster_whisper(rest[0], args.threads, args.repeats)
        print(json.dumps(result))
        return 0
    results = {}
    wanted = set(args.only.split(",")) if args.only else None
    for name, worker in CONFIGS:
        if wanted and name not in wanted:
            continue
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
                "--worker",
                *worker,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[name]
        print(
            f"{name:24s} RTF {r['rtf']:.4f}  WER {r['wer']:.3f}  load {r['load_s']:.2f} s  "
            f"RSS {r['rss_mb']:.0f} MB (peak {r['peak_rss_mb']:.0f})  {r.get('plan', '')}",
            flush=True,
        )
    base = results.get("faster-whisper int8")
    if base:
        for name, r in results.items():
            print(f"time ratio {name} / faster-whisper int8: {r['rtf'] / base['rtf']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
