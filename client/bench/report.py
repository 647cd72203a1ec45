"""`streamstt bench` results: per-level summaries, the JSON report (schema in docs/latency.md)
and the terminal table."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from . import latency
from .stability import Correctness, Stability, correctness, stability

if TYPE_CHECKING:
    from .run import BenchConfig, BenchInput, LevelRun, StreamRun

SCHEMA = "streamstt-bench/1"
# What the "baseline" system is, wherever it is reported: not a peer server (issue 20).
BASELINE_LABEL = "our in-process re-creation of whisper_streaming, not a peer server"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def stream_report(run: StreamRun, offline: dict[Path, str]) -> dict:
    timeline = run.timeline
    emissions = latency.word_emissions(timeline)
    lags = latency.partial_lags(timeline)
    growth = latency.lag_growth(lags, timeline.audio_s)
    transcript = latency.final_transcript(timeline)
    # A failed stream is counted as an error, not as deletions; a cut stream cannot be scored
    # against the whole file's reference (its offline transcript is of the same cut audio).
    ok = timeline.error is None
    reference = run.input.reference if ok and not run.input.truncated else None
    offline_text = offline.get(run.input.path) if ok else None
    return {
        "index": run.index,
        "transport": run.transport,
        "file": str(run.input.path),
        "start_offset_s": round(run.start_offset_s, 3),
        "audio_s": round(timeline.audio_s, 3),
        "truncated": run.input.truncated,
        "error": timeline.error,
        "error_detail": timeline.error_detail or None,
        "responses": len(timeline.responses),
        "transcript": transcript,
        "wer_reference": _wer(reference, transcript),
        "wer_offline": _wer(offline_text, transcript),
        "first_result_ms": _ms(latency.time_to_first_result(timeline)),
        "emission_ms": latency.summary_ms([e.emission_s for e in emissions]),
        "correct_prefix_ms": latency.summary_ms(
            [e.emission_s for e in latency.correct_prefix_emissions(timeline)]
        ),
        **_stability_report(stability(timeline)),
        **_correctness_report(correctness(timeline, reference) if reference else None),
        "final_ms": latency.summary_ms(latency.final_latencies(timeline)),
        "partial_lag_ms": latency.summary_ms([p.lag_s for p in lags]),
        "lag_first_third_ms": _ms(growth.first_s),
        "lag_last_third_ms": _ms(growth.last_s),
        "lag_growth": growth.grew,
        "words": [
            {
                "word": e.text,
                "utterance": e.utterance,
                "end_s": round(e.end_s, 3),
                "emission_ms": _ms(e.emission_s),
                "final_ms": _ms(e.emission_s + e.final_t - e.first_seen_t),
            }
            for e in emissions
        ],
    }


def _stability_report(measured: Stability) -> dict:
    rate, flicker = measured.revision_rate, measured.flicker_rate
    return {
        "committed_words": measured.committed,
        "revised_words": measured.revised,
        "revision_rate": None if rate is None else round(rate, 4),
        "tentative_words": measured.tentative,
        "tentative_flicker": None if flicker is None else round(flicker, 4),
    }


def _correctness_report(measured: Correctness | None) -> dict:
    """Committed and final words that the reference does not have (None: no reference)."""
    if measured is None:
        return {"committed_wrong_rate": None, "final_wrong_rate": None}
    committed, final = measured.committed_wrong_rate, measured.final_wrong_rate
    return {
        "committed_wrong_rate": None if committed is None else round(committed, 4),
        "final_wrong_rate": None if final is None else round(final, 4),
    }


def _wer(reference: str | None, hypothesis: str) -> float | None:
    if reference is None:
        return None
    value = latency.word_error_rate([reference], [hypothesis])
    return None if value is None else round(value, 4)


def level_report(level: LevelRun, budget_ms: float, offline: dict[Path, str]) -> dict:
    timelines = [run.timeline for run in level.runs]
    emissions = [e.emission_s for t in timelines for e in latency.word_emissions(t)]
    prefixes = [e.emission_s for t in timelines for e in latency.correct_prefix_emissions(t)]
    finals = [v for t in timelines for v in latency.final_latencies(t)]
    lags = [p.lag_s for t in timelines for p in latency.partial_lags(t)]
    first = [v for t in timelines if (v := latency.time_to_first_result(t)) is not None]
    errors = Counter(t.error for t in timelines if t.error)
    streams = [stream_report(run, offline) for run in level.runs]
    done = [r for r in level.runs if r.timeline.error is None]
    whole = [r for r in done if not r.input.truncated]
    wer_ref = latency.word_error_rate(
        [r.input.reference or "" for r in whole],
        [latency.final_transcript(r.timeline) for r in whole],
    )
    wer_off = latency.word_error_rate(
        [offline.get(r.input.path, "") for r in done],
        [latency.final_transcript(r.timeline) for r in done],
    )
    audio_s = sum(t.audio_s for t in timelines)
    grew = any(s["lag_growth"] for s in streams)
    emission = latency.summary_ms(emissions)
    verdict = latency.level_verdict(emission["p95"], sum(errors.values()), grew, budget_ms)
    return {
        "system": level.system,
        "streams": level.streams,
        "ok": len(timelines) - sum(errors.values()),
        "errors": dict(sorted(errors.items())),
        "wall_s": round(level.wall_s, 3),
        "audio_s": round(audio_s, 3),
        "rtfx": round(audio_s / level.wall_s, 3) if level.wall_s > 0 else None,
        "emission_ms": emission,
        "correct_prefix_ms": latency.summary_ms(prefixes),
        **_stability_report(sum((stability(t) for t in timelines), Stability(0, 0, 0, 0))),
        **_correctness_report(_pooled_correctness(whole)),
        "final_ms": latency.summary_ms(finals),
        "partial_lag_ms": latency.summary_ms(lags),
        "first_result_ms": latency.summary_ms(first),
        "wer_reference": None if wer_ref is None else round(wer_ref, 4),
        "wer_offline": None if wer_off is None else round(wer_off, 4),
        "lag_growth": grew,
        "within_budget": verdict.within_budget,
        "verdict": verdict.reason or "within budget",
        "process": level.usage.as_dict() if level.usage else None,
        "by_transport": _by_transport(level.runs),
        "per_stream": streams,
    }


def _pooled_correctness(runs) -> Correctness | None:
    """Committed and final words of the streams whose whole file has a reference."""
    measured = [correctness(r.timeline, r.input.reference) for r in runs if r.input.reference]
    return sum(measured, Correctness(0, 0, 0, 0)) if measured else None


def _by_transport(runs) -> dict:
    """Latency per transport when a level mixes them (`bench --websocket N`), so what the
    bridge adds is read off one run: same server, same load, same moment."""
    transports = sorted({run.transport for run in runs})
    if len(transports) < 2:
        return {}
    split = {}
    for transport in transports:
        timelines = [run.timeline for run in runs if run.transport == transport]
        split[transport] = {
            "streams": len(timelines),
            "emission_ms": latency.summary_ms(
                [e.emission_s for t in timelines for e in latency.word_emissions(t)]
            ),
            "final_ms": latency.summary_ms(
                [v for t in timelines for v in latency.final_latencies(t)]
            ),
            "partial_lag_ms": latency.summary_ms(
                [p.lag_s for t in timelines for p in latency.partial_lags(t)]
            ),
        }
    return split


def build_report(
    config: BenchConfig,
    inputs: list[BenchInput],
    levels: list[LevelRun],
    offline: dict[Path, str],
    server: dict,
    baseline: dict | None = None,
    peer: dict | None = None,
) -> dict:
    systems: dict[str, dict] = {}
    for level in levels:
        entry = systems.setdefault(level.system, {"levels": []})
        entry["levels"].append(level_report(level, config.budget_ms, offline))
    for name, entry in systems.items():
        verdicts = {
            lv["streams"]: latency.Verdict(lv["within_budget"], lv["verdict"])
            for lv in entry["levels"]
        }
        entry["max_streams_within_budget"] = latency.max_streams_within_budget(verdicts)
        if name == "streamstt":
            entry["server"] = server
        elif name == "baseline":
            entry["label"] = BASELINE_LABEL
            entry["baseline"] = baseline or {}
        else:
            entry["peer"] = peer or {}
    report = {
        "schema": SCHEMA,
        "created_unix": round(time.time(), 3),
        "host": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "config": {**asdict(config), "model_threads": config.model_threads},
        "files": [
            {
                "path": str(item.path),
                "audio_s": round(item.audio_s, 3),
                "truncated": item.truncated,
                "reference": item.reference,
                "offline_transcript": offline.get(item.path),
            }
            for item in inputs
        ],
        "systems": systems,
    }
    report["paired_wer"] = paired_wer(report)
    return report


def paired_wer(report: dict) -> dict | None:
    """WER of each system over the same streams: those that every system completed, whole,
    at the same N and stream index (so the same file). Per-level WERs can cover different
    files when admission control refuses some of our streams; this one compares like with
    like. None when fewer than two systems ran or they share no scored stream."""
    if len(report["systems"]) < 2:
        return None
    references = {f["path"]: f["reference"] for f in report["files"]}
    served: dict[str, dict[tuple[int, int], dict]] = {}
    for name, entry in report["systems"].items():
        served[name] = {
            (level["streams"], stream["index"]): stream
            for level in entry["levels"]
            for stream in level["per_stream"]
            if stream["error"] is None
            and not stream["truncated"]
            and references.get(stream["file"])
        }
    keys = sorted(set.intersection(*(set(streams) for streams in served.values())))
    if not keys:
        return None
    refs = [references[served[next(iter(served))][k]["file"]] for k in keys]
    wer = {
        name: latency.word_error_rate(refs, [streams[k]["transcript"] for k in keys])
        for name, streams in served.items()
    }
    return {
        "streams": len(keys),
        "reference_words": sum(len(latency.normalise(r).split()) for r in refs),
        "wer": {name: None if v is None else round(v, 4) for name, v in wer.items()},
    }


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


# ---- terminal table -------------------------------------------------------------------------
_COLUMNS = (
    # header, width, getter
    ("system", 11, lambda lv: lv["system"] + ("*" if lv["system"] == "baseline" else "")),
    ("N", 3, lambda lv: lv["streams"]),
    ("ok", 3, lambda lv: lv["ok"]),
    ("err", 4, lambda lv: sum(lv["errors"].values())),
    ("emit p50", 8, lambda lv: lv["emission_ms"]["p50"]),
    ("p90", 6, lambda lv: lv["emission_ms"]["p90"]),
    ("p95", 6, lambda lv: lv["emission_ms"]["p95"]),
    ("p99", 6, lambda lv: lv["emission_ms"]["p99"]),
    ("cp p50", 6, lambda lv: lv["correct_prefix_ms"]["p50"]),
    ("p95", 6, lambda lv: lv["correct_prefix_ms"]["p95"]),
    ("rev%", 5, lambda lv: _percent(lv["revision_rate"])),
    ("cwrong%", 7, lambda lv: _percent(lv.get("committed_wrong_rate"))),
    ("final p50", 9, lambda lv: lv["final_ms"]["p50"]),
    ("p95", 6, lambda lv: lv["final_ms"]["p95"]),
    ("lag p50", 7, lambda lv: lv["partial_lag_ms"]["p50"]),
    ("p95", 6, lambda lv: lv["partial_lag_ms"]["p95"]),
    ("ttfr p50", 8, lambda lv: lv["first_result_ms"]["p50"]),
    ("WER", 6, lambda lv: lv["wer_reference"]),
    ("WERoff", 6, lambda lv: lv["wer_offline"]),
    ("RTFx", 5, lambda lv: lv["rtfx"]),
    ("CPU%", 5, lambda lv: (lv["process"] or {}).get("cpu_percent")),
    ("RSS MB", 6, lambda lv: (lv["process"] or {}).get("rss_mb_peak")),
    ("growth", 6, lambda lv: "yes" if lv["lag_growth"] else "no"),
    ("budget", 6, lambda lv: "ok" if lv["within_budget"] else "over"),
)


def _percent(share: float | None) -> float | None:
    return None if share is None else round(100 * share, 1)


def _cell(value: object, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.3f}" if abs(value) < 10 and width <= 6 else f"{value:.0f}"
    else:
        text = str(value)
    return text.rjust(width)


def format_table(report: dict) -> str:
    """One row per (N, system), the systems side by side for each N; latencies in ms."""
    rows = [lv for entry in report["systems"].values() for lv in entry["levels"]]
    rows.sort(key=lambda lv: (lv["streams"], lv["system"] != "streamstt"))
    lines = [" ".join(h.rjust(w) for h, w, _ in _COLUMNS)]
    for level in rows:
        lines.append(" ".join(_cell(get(level), w) for _, w, get in _COLUMNS))
    budget = report["config"]["budget_ms"]
    lines.append(
        "latencies in ms; emit: word emission, cp: correct-prefix emission; rev%: committed"
    )
    lines.append("words the finals revised; WER vs reference (WERoff vs offline); CPU% and RSS:")
    lines.append("server process when spawned (streamstt, peers), harness process for the baseline")
    if "baseline" in report["systems"]:
        lines.append(f"* baseline: {BASELINE_LABEL}")
    for name, entry in report["systems"].items():
        best = entry["max_streams_within_budget"]
        lines.append(
            f"{name}: max streams within budget (p95 emission < {budget:.0f} ms, no errors, "
            f"no lag growth): {best if best is not None else 'none'}"
        )
    paired = report.get("paired_wer")
    if paired:
        scores = ", ".join(f"{name} {value:.4f}" for name, value in paired["wer"].items())
        lines.append(
            f"WER on the {paired['streams']} streams every system completed "
            f"({paired['reference_words']} reference words): {scores}"
        )
    for level in rows:
        for transport, split in level.get("by_transport", {}).items():
            lines.append(
                f"  N={level['streams']} over {transport} ({split['streams']} streams): median "
                f"emission {split['emission_ms']['p50']} ms, final {split['final_ms']['p50']} ms, "
                f"partial lag {split['partial_lag_ms']['p50']} ms"
            )
        if not level["within_budget"]:
            lines.append(f"  {level['system']} N={level['streams']}: {level['verdict']}")
        for stream in level["per_stream"]:
            if stream["error"]:
                lines.append(
                    f"    stream {stream['index']}: {stream['error']}: {stream['error_detail']}"
                )
    return "\n".join(lines)
