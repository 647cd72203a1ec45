"""PNG plots of a `streamstt bench` run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import latency

if TYPE_CHECKING:
    from .run import LevelRun

STYLE = {"streamstt": "-", "whisperlive": "-.", "baseline": "--"}
# Legend names: the baseline is labelled as what it is wherever it is drawn.
NAMES = {"baseline": "baseline (our whisper_streaming re-creation)"}


def _name(system: str) -> str:
    return NAMES.get(system, system)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window (or need a display)
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: dict, levels: list[LevelRun], out: Path, budget_ms: float) -> list[Path]:
    plt = _pyplot()
    paths = [
        latency_cdfs(plt, levels, out / "latency_cdf.png", budget_ms),
        p95_vs_streams(plt, report, out / "p95_emission_vs_streams.png", budget_ms),
    ]
    for system in dict.fromkeys(level.system for level in levels):
        chosen = [lv for lv in levels if lv.system == system and lv.runs]
        if chosen:
            level = min(chosen, key=lambda lv: lv.streams)
            paths.append(stream_timeline(plt, level, out / f"timeline_{system}.png"))
    return paths


def _cdf(ax, values_s: list[float], label: str, style: str) -> None:
    if not values_s:
        return
    values = np.sort(np.asarray(values_s) * 1000.0)
    # Start at (first value, 0) so that a single value still draws a visible step.
    xs = np.concatenate([values[:1], values])
    ys = np.concatenate([[0.0], np.arange(1, len(values) + 1) / len(values)])
    ax.step(xs, ys, style, where="post", label=label)


def latency_cdfs(plt, levels: list[LevelRun], path: Path, budget_ms: float) -> Path:
    figure, (emit_ax, final_ax) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for level in levels:
        label = f"{_name(level.system)} N={level.streams}"
        style = STYLE.get(level.system, ":")
        timelines = [run.timeline for run in level.runs]
        emissions = [e.emission_s for t in timelines for e in latency.word_emissions(t)]
        finals = [v for t in timelines for v in latency.final_latencies(t)]
        _cdf(emit_ax, emissions, label, style)
        _cdf(final_ax, finals, label, style)
    for ax, title in ((emit_ax, "word emission latency"), (final_ax, "final latency")):
        ax.axvline(budget_ms, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.grid(alpha=0.3)
    emit_ax.set_ylabel("fraction of words / finals")
    emit_ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def p95_vs_streams(plt, report: dict, path: Path, budget_ms: float) -> Path:
    figure, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, entry in report["systems"].items():
        points = [
            (lv["streams"], lv["emission_ms"]["p95"])
            for lv in entry["levels"]
            if lv["emission_ms"]["p95"] is not None
        ]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, STYLE.get(name, ":") + "o", label=_name(name))
    ax.axhline(budget_ms, color="red", linewidth=0.8, linestyle=":", label="budget")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("p95 word emission latency (ms)")
    ax.set_title("p95 emission latency vs streams")
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def stream_timeline(plt, level: LevelRun, path: Path) -> Path:
    """One stream: the audio sent (staircase), the audio each interim response covered (dots),
    and every final word from the moment it first appeared (open circle, labelled) to the
    moment its final arrived (filled). The horizontal gap between the staircase and a word's
    open circle is that word's emission latency."""
    run = level.runs[0]
    timeline = run.timeline
    origin = timeline.chunks[0].send_t if timeline.chunks else 0.0
    figure, ax = plt.subplots(figsize=(12, 6))
    if timeline.chunks:
        ax.step(
            [c.send_t - origin for c in timeline.chunks],
            [c.audio_end_s for c in timeline.chunks],
            where="post",
            color="grey",
            label="audio sent",
        )
    lags = latency.partial_lags(timeline)
    covered = [
        (r.recv_t - origin, max(x.end_s for x in r.results if not x.is_final))
        for r in timeline.responses
        if any(not x.is_final for x in r.results)
    ]
    if covered:
        xs, ys = zip(*covered)
        ax.plot(xs, ys, ".", color="tab:blue", markersize=4, label=f"interim ({len(lags)})")
    for emission in latency.word_emissions(timeline):
        seen, final = emission.first_seen_t - origin, emission.final_t - origin
        ax.plot([seen, final], [emission.end_s] * 2, color="tab:orange", linewidth=1)
        ax.plot(seen, emission.end_s, "o", mfc="none", color="tab:orange", markersize=5)
        ax.plot(final, emission.end_s, "o", color="tab:green", markersize=4)
        ax.annotate(
            emission.text,
            (seen, emission.end_s),
            textcoords="offset points",
            xytext=(-4, 3),
            ha="right",
            fontsize=7,
        )
    ax.plot([], [], "o", mfc="none", color="tab:orange", label="word first shown")
    ax.plot([], [], "o", color="tab:green", label="word final")
    ax.set_xlabel("wall time since the first chunk was sent (s)")
    ax.set_ylabel("audio time: word end / audio covered (s)")
    ax.set_title(f"{_name(level.system)}, stream 0 of {level.streams}: {run.input.path.name}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
