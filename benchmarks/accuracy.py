"""Accuracy on hard audio: a per-fixture WER table of streamstt against faster-whisper on the
same tiny.en weights (tests/data/hard/: noise, babble, telephony, reverberation, long form).

    python benchmarks/accuracy.py [--threads 2] [--json out.json] [--markdown out.md]
        [--only 'ours auto,faster-whisper int8'] [--fixtures read_white10,read_clean]
        [--runs 5] [--streamed [--streamed-runs 3]] [--noise-seeds K]

Each configuration runs in its own subprocess (its own load and precision calibration) and
transcribes every fixture once after a short warm-up; the wall time is that one pass.
`--runs N` runs the offline configurations N times in turns (each in a fresh process, so
a slow minute of this shared machine falls on both sides of a ratio) and reports per
fixture the median WER and wall time, the time ratio of each run, and any fixture whose
text changed between runs (`auto` times its precision candidates at load, and under load
may pick another plan).
streamstt offline is `streamstt transcribe` (30 s windows, beam 5 where greedy is unsure;
text, as it prints, or with word times as `--json` gives them: `ours auto words`;
`--variant auto:greedy` without the beams); faster-whisper runs its own defaults
(temperature fallback, previous-text conditioning) with beam 1 or 5 and no VAD, and
`faster-whisper int8 words` with its word times (`word_timestamps=True`).
`--streamed` also streams each fixture alone at real time through a spawned server
(`streamstt bench --spawn` machinery) and scores the finals: slow, about 8 minutes a run.
Where the decodes land in real time changes a word or two between runs (several points on
the noisy fixtures): `--streamed-runs N` streams N times and adds a column of their median.
`--noise-seeds K` adds read_white10 and read_white5 over K more draws of white noise
(`read_white10_s1` ...; numpy seeds 1..K, each draw added to read_clean at both SNRs by
tests/data/make_hard_fixtures.py's `mix`) and a row of their mean per SNR: one draw
decides a few words of a noisy fixture's WER, so a difference between two pipelines on one
fixture may be the draw's. A second table gives, per SNR, the paired differences over the
draws that the issue's bars are about (streamed - ours offline, ours offline - faster-whisper
int8): their mean and its standard error.
faster-whisper is a benchmark/test dependency only: it is imported where it is used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HARD = Path(__file__).resolve().parents[1] / "tests" / "data" / "hard"
SEEDS = Path("bench-out/accuracy/noise-seeds")  # the --noise-seeds files
PASSAGES_DIR = Path("bench-out/accuracy/passages")  # benchmarks/replay.py --passages
NOISY_PASSAGES = ("white10.flac", "white5.flac", "babble10.flac", "phone.wav")  # per reading
WHITE_SNRS_DB = (10, 5)
FIXTURES = [
    "read_clean",
    "read_white10",
    "read_white5",
    "read_babble10",
    "read_babble5",
    "read_phone",
    "read_reverb",
    "longform",
]
WARM_UP_S = 5.0  # seconds of read_clean decoded before timing (first-call kernel set-up)
BASELINE = "faster-whisper int8"
# name -> worker arguments: ours PRECISION VARIANT | fw COMPUTE_TYPE BEAM
CONFIGS = {
    "ours auto": ["ours", "auto", "default"],
    "ours auto words": ["ours", "auto", "words"],
    "ours fp32": ["ours", "fp32", "default"],
    "ours auto beam5": ["ours", "auto", "beam5"],
    "ours fp32 beam5": ["ours", "fp32", "beam5"],
    BASELINE: ["fw", "int8", "1"],
    "faster-whisper int8 words": ["fw", "int8", "1", "words"],
    "faster-whisper fp32": ["fw", "float32", "1"],
    "faster-whisper fp32 beam5": ["fw", "float32", "5"],
}


def fixture_path(name: str) -> Path:
    """A fixture's audio: tests/data/hard, else a --noise-seeds file."""
    found = [p for d in (HARD, SEEDS) for p in sorted(d.glob(f"{name}.*")) if p.suffix != ".txt"]
    if not found:
        raise SystemExit(f"error: no fixture {name!r} in {HARD} or {SEEDS}")
    return found[0]


def _fixture_maker():
    """tests/data/make_hard_fixtures.py as a module (its speech, noise and mixing)."""
    import importlib.util

    maker = HARD.parent / "make_hard_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_hard_fixtures", maker)
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    return fixtures


def make_noise_seeds(count: int) -> list[str]:
    """Write read_white10/5 over white-noise draws 1..count into SEEDS; their names. One draw
    per seed serves both SNRs, as in the fixtures."""
    import numpy as np
    import soundfile as sf

    fixtures = _fixture_maker()
    clean, rate = sf.read(HARD / "read_clean.flac", dtype="float64")
    text = (HARD / "read_clean.txt").read_text()
    SEEDS.mkdir(parents=True, exist_ok=True)
    names = []
    for seed in range(1, count + 1):
        white = np.random.default_rng(seed).standard_normal(len(clean))
        for snr in WHITE_SNRS_DB:
            name = f"read_white{snr}_s{seed}"
            sf.write(SEEDS / f"{name}.flac", fixtures.mix(clean, white, snr), rate, "PCM_16")
            (SEEDS / f"{name}.txt").write_text(text)
            names.append(name)
    return names


def make_passages() -> list[Path]:
    """Write PASSAGES_DIR's files (once) and return them: texts the fixtures do not read
    (passages B, C and D of make_hard_fixtures.py) by six flite readings, each in white noise
    at 10 and 5 dB SNR (numpy seed 300 + k), in babble at 10 dB (the fixtures' babble, rolled
    7919 * k samples) and through the telephone (8 kHz mu-law): 24 files on which a change
    tuned on the fixtures' one passage is checked. Needs flite, espeak-ng and sox."""
    import tempfile

    import numpy as np
    import soundfile as sf

    m = _fixture_maker()
    passages = (m.PASSAGE_B, m.PASSAGE_C, m.PASSAGE_D) * 2
    readings = list(zip(("rms", "slt", "awb", "kal", "rms", "slt"), passages))
    PASSAGES_DIR.mkdir(parents=True, exist_ok=True)
    files = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for k, (voice, sentences) in enumerate(readings):
            stem = PASSAGES_DIR / f"p{k}_{voice}"
            *noisy, phone = [Path(f"{stem}_{tag}") for tag in NOISY_PASSAGES]
            files += [*noisy, phone]
            if all(f.exists() for f in (*noisy, phone)):
                continue
            clean = m.passage(voice, sentences, m.SENTENCE_PAUSE_S, tmp)
            white = np.random.default_rng(300 + k).standard_normal(len(clean))
            crowd = np.roll(m.babble(len(clean), tmp), 7919 * k)
            mixes = [m.mix(clean, white, 10), m.mix(clean, white, 5), m.mix(clean, crowd, 10)]
            for path, audio in zip(noisy, mixes):
                sf.write(path, audio, m.RATE, subtype="PCM_16")
            m.telephone(clean, tmp, phone)
            for path in (*noisy, phone):
                path.with_suffix(".txt").write_text(" ".join(sentences) + "\n")
    return files


def ours_options(variant: str):
    """The offline options of a named variant: `default` is `streamstt transcribe`'s (text),
    `words` its `--json`'s (word times too); the others switch one pipeline difference off,
    to measure what it is worth."""
    from dataclasses import replace

    from streamstt.models.options import OFFLINE_OPTIONS

    options = replace(OFFLINE_OPTIONS, word_timestamps=False)
    beam5 = replace(options.decoding, beam_size=5)
    variants = {
        "default": {},
        "words": {"word_timestamps": True},
        "short": {"full_window": False},  # a shorter encoder span (15 s minimum)
        "no-fallback": {"temperatures": (0.0,)},
        "no-prompt": {"condition_on_previous_text": False},
        "window-features": {"recording_features": False},
        "beam5": {"decoding": beam5},  # beam search of 5 at temperature 0, every window
        "greedy": {"unsure_beam_size": 1},  # no beam search where greedy is unsure
    }
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r} (one of {', '.join(variants)})")
    return replace(options, **variants[variant])


def run_ours(precision: str, variant: str, threads: int, names: list[str]) -> dict:
    import torch

    torch.set_num_threads(threads)
    from streamstt.models.audio import decode_audio

    model = _load_ours(precision)
    options = ours_options(variant)
    audios = {n: decode_audio(fixture_path(n)) for n in names}
    model.transcribe(decode_audio(fixture_path("read_clean"))[: int(WARM_UP_S * 16000)], options)
    return {
        "plan": model.plan.describe(),
        "calibration_ms": dict(model.plan.calibration_ms),
        "fixtures": _timed(lambda n: model.transcribe(audios[n], options).text, names),
    }


def _load_ours(precision: str):
    """A precision mode (auto, fp32, int8, bf16), or ENCODER/DECODER (e.g. bf16/int8) to
    measure one combination that `auto` may pick."""
    from streamstt.models import loading
    from streamstt.models.precision import PrecisionPlan, apply_precision
    from streamstt.models.transcriber import Transcriber

    if "/" not in precision:
        return Transcriber.load(precision=precision, device="cpu")
    encoder, decoder = precision.split("/")
    loaded = loading.load(None)
    plan = PrecisionPlan("cpu", "mixed", encoder, decoder)
    apply_precision(loaded.model, plan)
    return Transcriber(loaded, plan)


def run_faster_whisper(
    compute_type: str, beam: int, threads: int, names: list[str], words: bool = False
) -> dict:
    import ctranslate2
    from faster_whisper import WhisperModel

    from streamstt.models.audio import decode_audio
    from streamstt.models.loading import bundled_model_dir

    ctranslate2.set_random_seed(0)  # its temperature fallback samples
    model = WhisperModel(
        str(bundled_model_dir()), device="cpu", compute_type=compute_type, cpu_threads=threads
    )
    audios = {n: decode_audio(fixture_path(n)).numpy() for n in names}

    def transcribe(name: str) -> str:
        segments, _ = model.transcribe(
            audios[name], beam_size=beam, vad_filter=False, word_timestamps=words
        )
        return " ".join(s.text.strip() for s in segments)

    model.transcribe(audios[names[0]][: int(WARM_UP_S * 16000)], beam_size=beam)
    return {"plan": compute_type, "fixtures": _timed(transcribe, names)}


def _timed(transcribe, names: list[str]) -> dict:
    """Each fixture's transcript and wall seconds."""
    out = {}
    for name in names:
        started = time.perf_counter()
        text = transcribe(name)
        out[name] = {"text": text, "wall_s": round(time.perf_counter() - started, 3)}
    return out


def score(results: dict) -> None:
    """Add each fixture's WER (the tests' normalisation) to `results` in place."""
    from streamstt.client.bench.latency import word_error_rate

    for result in results.values():
        for name, item in result["fixtures"].items():
            reference = fixture_path(name).with_suffix(".txt").read_text()
            item["wer"] = round(word_error_rate([reference], [item["text"]]) or 0.0, 4)


def median_run(runs: list[dict]) -> dict:
    """Per fixture, the median WER and wall time of several scored runs."""
    from statistics import median

    fixtures = runs[0]["fixtures"]
    return {
        "plan": runs[0]["plan"],
        "fixtures": {
            name: {key: median(r["fixtures"][name][key] for r in runs) for key in ("wer", "wall_s")}
            for name in fixtures
        },
    }


def markdown(results: dict) -> str:
    """Rows: fixtures; columns: configurations; WER in %, then wall time and its ratio."""
    names = list(results)
    present = {f for r in results.values() for f in r["fixtures"]}
    fixtures = [f for f in FIXTURES if f in present] + sorted(present - set(FIXTURES))
    lines = ["| fixture | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for fixture in fixtures:
        cells = [results[n]["fixtures"].get(fixture, {}).get("wer") for n in names]
        lines.append(f"| {fixture} | " + " | ".join(_percent(c) for c in cells) + " |")
    for snr in WHITE_SNRS_DB:
        seeds = _draws(fixtures, snr)
        if seeds:
            cells = [_mean(results[n]["fixtures"], seeds) for n in names]
            label = f"read_white{snr}, mean of {len(seeds)} seeds"
            lines.append(f"| {label} | " + " | ".join(_percent(c) for c in cells) + " |")
    walls = {n: sum(i["wall_s"] for i in results[n]["fixtures"].values()) for n in names}
    lines.append("| wall s | " + " | ".join(f"{walls[n]:.1f}" for n in names) + " |")
    base = walls.get(BASELINE)
    if base:
        ratios = [f"{walls[n] / base:.2f}" for n in names]
        lines.append(f"| time / {BASELINE} | " + " | ".join(ratios) + " |")
    return "\n".join(lines + _run_notes(results))


def _run_notes(results: dict) -> list[str]:
    """With --runs: the time ratio of each run (against the baseline's run of the same
    turn), and the fixtures whose text changed between runs."""
    base = results.get(BASELINE, {}).get("run_walls")
    notes = []
    for name, result in results.items():
        walls = result.get("run_walls")
        if base and walls and name != BASELINE:
            each = ", ".join(f"{w / b:.2f}" if w and b else "-" for w, b in zip(walls, base))
            notes.append(f"{name}: time / {BASELINE} in each run: {each}")
        if result.get("unsteady"):
            plans = ", ".join(result["plans"])
            notes.append(
                f"{name}: text changed between runs on {', '.join(result['unsteady'])} "
                f"(plans: {plans})"
            )
    return ["", *notes] if notes else []


def differences(results: dict) -> str:
    """Over the noise draws of each SNR, the paired WER differences that the issue's bars
    are about: streamed finals against ours offline, ours offline against the baseline.
    Their mean and its standard error (one draw's difference is mostly the draw's luck)."""
    from statistics import mean, stdev

    streamed = next((n for n in ("ours streamed median", "ours streamed") if n in results), None)
    pairs = [(streamed, "ours auto"), ("ours auto", BASELINE)]
    lines = ["| draws | difference (WER points) | mean | standard error | draws |"]
    lines.append("| --- | --- | ---: | ---: | ---: |")
    for snr in WHITE_SNRS_DB:
        for a, b in pairs:
            if a not in results or b not in results:
                continue
            first, second = results[a]["fixtures"], results[b]["fixtures"]
            names = [n for n in _draws(first, snr) if n in second]
            diffs = [100 * (first[n]["wer"] - second[n]["wer"]) for n in names]
            if len(diffs) < 2:
                continue
            error = stdev(diffs) / len(diffs) ** 0.5
            lines.append(
                f"| read_white{snr} | {a} - {b} | {mean(diffs):+.2f} | {error:.2f} | {len(diffs)} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def _draws(names, snr: int) -> list[str]:
    """The --noise-seeds files among `names` at `snr` (not the fixture: a draw of its own)."""
    return [n for n in names if n.startswith(f"read_white{snr}_s")]


def _mean(fixtures: dict, names: list[str]) -> float | None:
    values = [fixtures[n]["wer"] for n in names if n in fixtures]
    return sum(values) / len(values) if len(values) == len(names) else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def run_config(name: str, worker: list[str], threads: int, fixtures: list[str]) -> dict | None:
    command = [sys.executable, __file__, "--threads", str(threads)]
    command += ["--fixtures", ",".join(fixtures), "--worker", *worker]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_offline(configs: dict, threads: int, fixtures: list[str], runs: int) -> dict:
    """Each offline configuration `runs` times, in turns, scored. One run as it came; several
    as their median (`median_run`) with each run's total wall time (`run_walls`, paired with
    the baseline's run of the same turn) and the fixtures whose text changed between runs
    (`unsteady`)."""
    done: dict[str, list[dict | None]] = {name: [] for name in configs}
    for _ in range(runs):
        for name, worker in configs.items():
            done[name].append(result := run_config(name, worker, threads, fixtures))
            if result:
                print(f"{name}: done ({result['plan']})", file=sys.stderr, flush=True)
    results = {}
    for name, turns in done.items():
        taken = [t for t in turns if t]
        score(dict(enumerate(taken)))
        if runs == 1 and taken:
            results[name] = taken[0]
        elif taken:
            texts = [{f: item["text"] for f, item in t["fixtures"].items()} for t in taken]
            results[name] = median_run(taken) | {
                "run_walls": [  # None: that turn's run failed
                    t and round(sum(i["wall_s"] for i in t["fixtures"].values()), 3) for t in turns
                ],
                "unsteady": [f for f in texts[0] if len({t[f] for t in texts}) > 1],
                "plans": [t["plan"] for t in taken],
            }
    return results


def run_streamed(threads: int, fixtures: list[str], out: Path) -> dict:
    """Each fixture streamed alone at real time through one spawned server: its finals."""
    from streamstt.client.bench import run as bench

    parser = argparse.ArgumentParser()
    bench.add_bench_flags(parser)
    args = parser.parse_args(["--spawn", "--streams", "1", "--threads", str(threads)])
    server = bench.SpawnedServer(list(bench.config_from_args(args).serve_args), out / "server.log")
    server.start()
    results = {}
    try:
        for name in fixtures:
            args.audio = [str(fixture_path(name))]
            config = bench.config_from_args(args)
            started = time.perf_counter()
            level = bench.run_streamstt_level(
                config, bench.load_inputs(config), server.target, 1, None
            )
            text = bench.latency.final_transcript(level.runs[0].timeline)
            results[name] = {"text": text, "wall_s": round(time.perf_counter() - started, 3)}
            print(f"streamed {name}: done", file=sys.stderr, flush=True)
    finally:
        server.stop()
    return {"plan": "server default", "fixtures": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="write the table here")
    parser.add_argument("--only", help="comma-separated configuration names to run")
    parser.add_argument("--fixtures", default=",".join(FIXTURES), help="comma-separated names")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="PRECISION:VARIANT",
        help="also run streamstt offline with one difference off (ours_options)",
    )
    parser.add_argument(
        "--noise-seeds", type=int, default=0, metavar="K", help="white noise over K more draws"
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="offline runs, in turns (median, ratio per run)"
    )
    parser.add_argument("--streamed", action="store_true", help="also stream at real time")
    parser.add_argument("--streamed-runs", type=int, default=1, help="real-time runs (median)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    fixtures = [f for f in args.fixtures.split(",") if f]
    if args.worker:
        return _worker(args.worker, args.threads, fixtures)
    if args.noise_seeds:
        fixtures += make_noise_seeds(args.noise_seeds)
    configs = dict(CONFIGS)
    for spec in args.variant:
        precision, _, variant = spec.partition(":")
        configs[f"ours {precision} {variant}"] = ["ours", precision, variant]
    wanted = set(args.only.split(",")) if args.only else set(configs)
    chosen = {name: worker for name, worker in configs.items() if name in wanted}
    results = run_offline(chosen, args.threads, fixtures, args.runs)
    count = args.streamed_runs if args.streamed else 0
    runs = [f"ours streamed {k + 1}" if k else "ours streamed" for k in range(count)]
    for name in runs:
        results[name] = run_streamed(args.threads, fixtures, Path("bench-out/accuracy"))
    score({name: results[name] for name in runs})
    if len(runs) > 1:
        results["ours streamed median"] = median_run([results[n] for n in runs])
    table = "\n\n".join(filter(None, (markdown(results), differences(results))))
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _worker(worker: list[str], threads: int, fixtures: list[str]) -> int:
    kind, setting, extra, *flags = worker
    if kind == "ours":
        result = run_ours(setting, extra, threads, fixtures)
    else:
        result = run_faster_whisper(setting, int(extra), threads, fixtures, "words" in flags)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
