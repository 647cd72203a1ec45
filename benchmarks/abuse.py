"""Isolation under abuse: 3 real-time live streams beside each hostile client in turn.

    python benchmarks/abuse.py --threads 2 --out /tmp/abuse

One spawned server (`streamstt serve`, defaults but `--threads`). Each scenario streams the
live set (three clips of tests/data, one a stream, staggered 0.5 s, `latency_budget_ms`
5000 so that admission takes all three on a slow 2-core machine) at real time, ROUNDS times in a
row, with the same harness as `streamstt bench`, while one hostile client runs beside it;
the clean scenario runs first and last. Per scenario: the live streams' emission and
correct-prefix p95 (median of the rounds), their statuses and WER, the server's peak RSS,
and what the hostile client was told. The issue's bar: p95 within +0.3 s of the clean runs
(their mean), every live stream OK with unchanged WER, peak RSS within +300 MB of the first
clean run's.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import soundfile

from streamstt.client.bench import report
from streamstt.client.bench.run import BenchConfig, load_inputs, run_streamstt_level
from streamstt.client.bench.spawn import SpawnedServer
from streamstt.client.client import recognize_request, streaming_config
from streamstt.v1 import asr_pb2, asr_pb2_grpc

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
LIVE = tuple(str(DATA / f"{name}.wav") for name in ("two_utterances", "en_us_female", "en_us_male"))
SPEECH = DATA / "long_read.wav"  # what the hostile clients send
LIVE_BUDGET_MS = 5000
ROUNDS = 3
HOSTILE_SECONDS = 600  # "10 minutes of audio" for the Recognize calls and the fast sender
RECOGNIZE_CALLS = 8
PHRASE_BYTES = 1_000_000


def _speech(seconds: float) -> np.ndarray:
    audio, _ = soundfile.read(SPEECH, dtype="int16")
    return np.resize(audio, int(seconds * 16000))


def _wav(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


def _requests(config, chunks, pace_s: float, stop: threading.Event):
    yield asr_pb2.StreamingRecognizeRequest(streaming_config=config)
    for chunk in chunks:
        if stop.is_set():
            return
        if pace_s:
            time.sleep(pace_s)
        yield asr_pb2.StreamingRecognizeRequest(audio_content=chunk)


def _stream(stub, config, chunks, pace_s: float, stop: threading.Event) -> str:
    """Run one stream to its end (or until `stop`); returns its status code's name."""
    call = stub.StreamingRecognize(_requests(config, chunks, pace_s, stop), timeout=900)
    try:
        for _ in call:
            if stop.is_set():
                call.cancel()
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


def tiny_budget(stub, stop: threading.Event) -> list[str]:
    pcm = _speech(30).tobytes()
    chunks = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
    config = streaming_config(16000, latency_budget_ms=100)
    return [_stream(stub, config, chunks, 0.1, stop)]


def recognize_8x10min(stub, stop: threading.Event) -> list[str]:
    request = recognize_request(_wav(_speech(HOSTILE_SECONDS)))
    calls = [stub.Recognize.future(request, timeout=900) for _ in range(RECOGNIZE_CALLS)]
    stop.wait()
    codes = []
    for call in calls:
        call.cancel()  # the scenario is over: calls still decoding are cancelled
        try:
            call.result()
            codes.append("OK")
        except grpc.FutureCancelledError:
            codes.append("(cancelled by us: still decoding at the end)")
        except grpc.RpcError as error:
            codes.append(error.code().name)
    return codes


def full_speed_10min(stub, stop: threading.Event) -> list[str]:
    pcm = _speech(HOSTILE_SECONDS).tobytes()
    chunks = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
    return [_stream(stub, streaming_config(16000), chunks, 0.0, stop)]


def idle_holder(stub, stop: threading.Event) -> list[str]:
    return [_stream(stub, streaming_config(16000), iter(lambda: b"", None), 0.2, stop)]


def phrases_1mb(stub, stop: threading.Event) -> list[str]:
    phrase = "x" * 99
    config = streaming_config(16000)
    context = config.config.speech_contexts.add()
    context.phrases.extend([phrase] * (PHRASE_BYTES // len(phrase)))
    codes = []
    while not stop.is_set():  # again and again: validation must stay cheap
        codes.append(_stream(stub, config, [b"\0\0" * 1600], 0.0, stop))
        stop.wait(0.5)
    return codes


SCENARIOS: dict[str, Callable | None] = {
    "clean": None,
    "tiny budget (100 ms)": tiny_budget,
    f"{RECOGNIZE_CALLS} x 10-minute Recognize": recognize_8x10min,
    "full-speed sender, 10 min": full_speed_10min,
    "idle holder (empty messages)": idle_holder,
    "1 MB phrase list": phrases_1mb,
    "clean again": None,
}


def run_scenario(config: BenchConfig, spawned: SpawnedServer, hostile: Callable | None) -> dict:
    inputs = load_inputs(config)
    stop, told = threading.Event(), []
    worker = None
    if hostile is not None:
        stub = asr_pb2_grpc.RecognizerStub(
            grpc.insecure_channel(spawned.target, [("grpc.max_send_message_length", -1)])
        )
        worker = threading.Thread(target=lambda: told.extend(hostile(stub, stop)), daemon=True)
        worker.start()
        time.sleep(1.0)  # the hostile client is in place before the live streams start
    rounds = []
    try:
        for _ in range(ROUNDS):
            level = run_streamstt_level(config, inputs, spawned.target, 3, spawned)
            rounds.append(report.level_report(level, config.budget_ms, {}))
    finally:
        stop.set()
        if worker is not None:
            worker.join(120)
    return _summary(rounds, told)


def _summary(rounds: list[dict], told: list[str]) -> dict:
    def median(values):
        values = sorted(v for v in values if v is not None)
        return values[len(values) // 2] if values else None

    errors = Counter()
    for r in rounds:
        errors.update(r["errors"])
    return {
        "emission_p95_ms": median(r["emission_ms"]["p95"] for r in rounds),
        "correct_prefix_p95_ms": median(r["correct_prefix_ms"]["p95"] for r in rounds),
        "final_p50_ms": median(r["final_ms"]["p50"] for r in rounds),
        "live_ok": sum(r["ok"] for r in rounds),
        "live_streams": 3 * len(rounds),
        "live_errors": dict(errors),
        "wer": median(r["wer_reference"] for r in rounds),
        "rss_mb_peak": max((r["process"] or {}).get("rss_mb_peak") or 0 for r in rounds),
        "hostile_told": dict(Counter(told)),
    }


def verdicts(results: dict[str, dict]) -> dict[str, dict]:
    clean = [results[k] for k in ("clean", "clean again")]
    p95 = sum(r["emission_p95_ms"] or 0 for r in clean) / len(clean)
    # RSS against the first clean run: the server before any hostile client came (the last
    # clean run would count whatever the hostile clients left behind as the baseline).
    rss = results["clean"]["rss_mb_peak"]
    wer = max(r["wer"] or 0 for r in clean)
    out = {}
    for name, r in results.items():
        delta = (r["emission_p95_ms"] or float("inf")) - p95
        out[name] = {
            "p95_delta_ms": None if delta == float("inf") else round(delta),
            "rss_delta_mb": round(r["rss_mb_peak"] - rss),
            "meets": delta <= 300
            and r["live_ok"] == r["live_streams"]
            and (r["wer"] if r["wer"] is not None else 1) <= wer + 0.005
            and r["rss_mb_peak"] - rss <= 300,
        }
    return out


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(results: dict[str, dict], judged: dict[str, dict]) -> str:
    lines = [
        "| scenario | emission p95 ms (Δ) | correct-prefix p95 ms | final p50 ms | live OK | "
        "WER | peak RSS MB (Δ) | the hostile client was told | meets |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        j = judged[name]
        told = ", ".join(f"{k} x{v}" for k, v in r["hostile_told"].items()) or "-"
        wer = "-" if r["wer"] is None else f"{r['wer'] * 100:.1f} %"
        lines.append(
            f"| {name} | {_ms(r['emission_p95_ms'])} ({_ms(j['p95_delta_ms'])}) | "
            f"{_ms(r['correct_prefix_p95_ms'])} | {_ms(r['final_p50_ms'])} | "
            f"{r['live_ok']}/{r['live_streams']} | {wer} | {r['rss_mb_peak']:.0f} "
            f"({j['rss_delta_mb']:+d}) | {told} | {'yes' if j['meets'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="model threads of the server")
    parser.add_argument("--out", default="abuse-out", help="folder for the report and log")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra serve flag")
    parser.add_argument(
        "--only", help="run the hostile scenarios whose name holds this text (and both clean runs)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    serve_args = ["--threads", str(args.threads), *args.serve_arg]
    config = BenchConfig(
        server=None, spawn=True, serve_args=tuple(serve_args), audio=LIVE, streams=(3,),
        chunk_ms=100, pace=1.0, stagger_ms=500, duration_s=0, budget_ms=2000,
        latency_budget_ms=LIVE_BUDGET_MS, out=str(out), baseline=False, baseline_min_chunk_s=0.0,
        threads=args.threads, offline_wer=False, plots=False, settle_s=3.0,
    )  # fmt: skip
    spawned = SpawnedServer(serve_args, out / "server.log").start()
    results = {}
    try:
        for name, hostile in SCENARIOS.items():
            if hostile is not None and args.only and args.only not in name:
                continue
            print(f"scenario: {name}", file=sys.stderr, flush=True)
            results[name] = run_scenario(config, spawned, hostile)
            time.sleep(config.settle_s)
    finally:
        spawned.stop()
    (out / "abuse.json").write_text(json.dumps({"results": results}, indent=1))
    judged = verdicts(results)
    (out / "abuse.json").write_text(json.dumps({"results": results, "verdicts": judged}, indent=1))
    print(table(results, judged))
    return 0 if all(j["meets"] for j in judged.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
