"""`streamstt bench`: measure streaming latency and accuracy against a live server.

For each stream count N of the sweep, N clients stream audio files at a fixed pace (1.0 = real
time) over their own connections, staggered by `--stagger-ms`; every chunk's send time and
every response's receive time are recorded, and latency/accuracy metrics (docs/latency.md) are
computed from that timeline afterwards. `--peer whisperlive` repeats the sweep on a real
peer server, WhisperLive, spawned from its own venv (bench/peers/). `--baseline` repeats it on
an in-process faster-whisper LocalAgreement-2 loop: our re-creation of whisper_streaming
(bench/baseline.py), not a peer server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import latency
from .spawn import ProcessSampler, ProcessUsage, SpawnedServer, wait_serving

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
DEFAULT_TARGET = "127.0.0.1:50051"
PEERS = ("whisperlive",)  # whisperlivekit: see docs/latency.md, "Peers"
STREAM_TIMEOUT_SLACK_S = 120.0  # beyond the audio's own wall time, before a stream is abandoned


@dataclass(frozen=True)
class BenchConfig:
    server: str | None  # host:port of a running server; None with spawn
    spawn: bool
    serve_args: tuple[str, ...]
    audio: tuple[str, ...]
    streams: tuple[int, ...]
    chunk_ms: int
    pace: float  # audio seconds sent per wall second on each stream
    stagger_ms: float  # stream i starts i * stagger_ms after stream 0
    duration_s: float  # max wall seconds of audio per stream (0 = whole files)
    budget_ms: float  # p95 emission latency bar for "within budget"
    latency_budget_ms: int  # sent in each stream's config (0 = server default)
    out: str
    baseline: bool
    baseline_min_chunk_s: float
    threads: int  # model threads for the spawned server and the baseline (0 = all cores)
    offline_wer: bool
    plots: bool
    settle_s: float  # pause between levels so one level's tail does not load the next
    websocket: int = 0  # streams of each level that go over the WebSocket bridge
    web_server: str | None = None  # host:port of the bridge; None with spawn
    peer: str | None = None  # a peer server to run the same sweep on ("whisperlive")
    peer_venv: str | None = None  # its venv (None: $STREAMSTT_PEER_VENV or setup.sh's)

    def transport(self, index: int, streams: int) -> str:
        """How stream `index` of a level of `streams` reaches the server: the bridge's
        streams are spread evenly (grpc, websocket, grpc, websocket for 2 of 4), so neither
        transport always starts first or ends first when the streams are staggered."""
        share = min(self.websocket, streams)
        spread = (index + 1) * share // streams > index * share // streams
        return "websocket" if spread else "grpc"

    @property
    def model_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True)
class BenchInput:
    path: Path
    reference: str | None  # sidecar .txt, None when there is none
    rate: int
    channels: int
    chunks: tuple[bytes, ...]  # LINEAR16 at the file's own rate, truncated to the duration cap
    chunk_ends_s: tuple[float, ...]  # audio offset at the end of each chunk
    truncated: bool

    @property
    def audio_s(self) -> float:
        return self.chunk_ends_s[-1] if self.chunk_ends_s else 0.0


@dataclass(frozen=True)
class StreamRun:
    index: int
    input: BenchInput
    start_offset_s: float
    timeline: latency.StreamTimeline
    transport: str = "grpc"  # "grpc" | "websocket" (the bridge) | "in-process" (baseline)


@dataclass(frozen=True)
class LevelRun:
    system: str  # "streamstt" | "whisperlive" (a peer) | "baseline" (our re-creation)
    streams: int
    runs: tuple[StreamRun, ...]
    wall_s: float
    usage: ProcessUsage | None


# ---- command line -------------------------------------------------------------------------
def add_bench_flags(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--server", help=f"host:port of a running server (default {DEFAULT_TARGET})")
    where.add_argument(
        "--spawn",
        action="store_true",
        help="start `streamstt serve --port 0` for the run, measure its CPU and RSS, stop it",
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra flag(s) for the spawned server, e.g. --serve-arg=--max-streams=32 (repeatable)",
    )
    parser.add_argument(
        "--audio",
        nargs="+",
        default=["tests/data/sample.wav"],
        help="audio files or folders; a sidecar .txt is the reference transcript",
    )
    parser.add_argument("--streams", default="1,2,4", help="stream counts to sweep, e.g. 1,2,4,8")
    parser.add_argument("--chunk-ms", type=int, default=100, help="milliseconds of audio a request")
    parser.add_argument("--pace", type=float, default=1.0, help="1.0 = real time, 2.0 = twice")
    parser.add_argument(
        "--stagger-ms", type=float, default=0.0, help="milliseconds between stream starts"
    )
    parser.add_argument(
        "--duration-s", type=float, default=0.0, help="cap on each stream's sending time (0 = none)"
    )
    parser.add_argument(
        "--budget-ms", type=float, default=2000.0, help="milliseconds: the p95 emission bar"
    )
    parser.add_argument(
        "--latency-budget-ms", type=int, default=0, help="sent in each stream config (0 = default)"
    )
    parser.add_argument("--out", default="bench-out", help="folder for report.json and PNGs")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run our in-process re-creation of whisper_streaming (not a peer server)",
    )
    parser.add_argument(
        "--baseline-min-chunk-s",
        type=float,
        default=1.0,
        help="seconds of new audio between the baseline's passes",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="model threads, server and baseline (0 = all cores)"
    )
    parser.add_argument(
        "--offline-wer", action="store_true", help="also score finals against offline transcripts"
    )
    parser.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    parser.add_argument("--settle-s", type=float, default=1.0, help="pause between levels")
    _websocket_flags(parser)
    _peer_flags(parser)


def _peer_flags(parser: argparse.ArgumentParser) -> None:
    peer = "also run the sweep on this peer's own server (its venv: benchmarks/peers/setup.sh)"
    parser.add_argument("--peer", choices=PEERS, help=peer)
    venv = "the peer's venv (default: $STREAMSTT_PEER_VENV, else setup.sh's default)"
    parser.add_argument("--peer-venv", metavar="DIR", help=venv)


def _websocket_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--websocket", type=int, default=0, metavar="N",
        help="N streams of each level (spread evenly) go over the WebSocket bridge (docs/web.md)",
    )  # fmt: skip
    parser.add_argument(
        "--web-server", metavar="HOST:PORT",
        help="the bridge of --server for --websocket (with --spawn: the spawned server's)",
    )  # fmt: skip


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    try:
        streams = tuple(int(s) for s in str(args.streams).split(",") if s.strip())
    except ValueError as exc:
        raise ValueError(f"--streams {args.streams!r}: expected numbers like 1,2,4") from exc
    if not streams or min(streams) < 1:
        raise ValueError("--streams needs positive stream counts")
    if args.pace <= 0 or args.chunk_ms <= 0:
        raise ValueError("--pace and --chunk-ms must be positive")
    serve_args = list(args.serve_arg)
    if args.spawn and args.threads and not any("--threads" in a for a in serve_args):
        serve_args.append(f"--threads={args.threads}")
    if args.websocket < 0 or (args.websocket and not args.spawn and not args.web_server):
        raise ValueError("--websocket N needs N >= 0, and --web-server HOST:PORT with --server")
    if args.spawn and args.websocket and not any("--web-port" in a for a in serve_args):
        serve_args.append("--web-port=0")
    return BenchConfig(
        server=None if args.spawn else (args.server or DEFAULT_TARGET),
        spawn=args.spawn,
        serve_args=tuple(serve_args),
        audio=tuple(args.audio),
        streams=tuple(sorted(set(streams))),
        chunk_ms=args.chunk_ms,
        pace=args.pace,
        stagger_ms=args.stagger_ms,
        duration_s=args.duration_s,
        budget_ms=args.budget_ms,
        latency_budget_ms=args.latency_budget_ms,
        out=args.out,
        baseline=args.baseline,
        baseline_min_chunk_s=args.baseline_min_chunk_s,
        threads=args.threads,
        offline_wer=args.offline_wer,
        plots=not args.no_plots,
        settle_s=args.settle_s,
        websocket=args.websocket,
        web_server=None if args.spawn else args.web_server,
        peer=args.peer,
        peer_venv=args.peer_venv,
    )


def run_bench(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        inputs = load_inputs(config)
        if config.peer:
            from .peers.spawn import peer_python, peer_venv

            peer_python(peer_venv(config.peer_venv))  # no venv: say so before a long run
        if config.plots:
            import matplotlib  # noqa: F401 - fail before a long run, not after it
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        print(f"streamstt bench: {exc}", file=sys.stderr)
        return 2
    from . import report as bench_report

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    offline = offline_transcripts(inputs) if config.offline_wer else {}
    levels: list[LevelRun] = []
    server_info: dict = {"target": config.server, "spawned": config.spawn, "args": []}
    baseline_info: dict = {}
    peer_info: dict = {}
    try:
        levels += run_streamstt_levels(config, inputs, out, server_info)
        if config.peer:
            from .peers.levels import run_peer_levels

            levels += run_peer_levels(config, inputs, out, peer_info)
        if config.baseline:
            levels += run_baseline_levels(config, inputs, baseline_info)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"streamstt bench: {exc}", file=sys.stderr)
        return 2
    report = bench_report.build_report(
        config, inputs, levels, offline, server_info, baseline_info, peer_info
    )
    bench_report.write_json(report, out / "report.json")
    print(bench_report.format_table(report))
    if config.plots:
        from . import plots as bench_plots

        for path in bench_plots.write_plots(report, levels, out, config.budget_ms):
            print(f"wrote {path}", file=sys.stderr)
    print(f"wrote {out / 'report.json'}", file=sys.stderr)
    return 0


# ---- inputs -------------------------------------------------------------------------------
def audio_paths(specs: tuple[str, ...]) -> list[Path]:
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.is_file():
            paths.append(path)
        else:
            raise ValueError(f"--audio {spec}: no such file or folder")
    if not paths:
        raise ValueError("--audio: no audio files found")
    return paths


def load_inputs(config: BenchConfig) -> list[BenchInput]:
    from ..client import file_chunks

    inputs = []
    # A stream sends for at most duration_s wall seconds, i.e. duration_s * pace audio seconds.
    cap_s = config.duration_s * config.pace if config.duration_s > 0 else float("inf")
    for path in audio_paths(config.audio):
        rate, channels, chunks = file_chunks(path, config.chunk_ms)
        frame_bytes = 2 * channels
        ends, total = [], 0
        for chunk in chunks:
            total += len(chunk) // frame_bytes
            ends.append(total / rate)
        keep = next((i + 1 for i, end in enumerate(ends) if end >= cap_s - 1e-9), len(chunks))
        sidecar = path.with_suffix(".txt")
        inputs.append(
            BenchInput(
                path=path,
                reference=sidecar.read_text().strip() if sidecar.is_file() else None,
                rate=rate,
                channels=channels,
                chunks=tuple(chunks[:keep]),
                chunk_ends_s=tuple(ends[:keep]),
                truncated=keep < len(chunks),
            )
        )
    return inputs


def stream_inputs(inputs: list[BenchInput], n: int) -> list[BenchInput]:
    """Stream i plays file i mod len(files)."""
    return [inputs[i % len(inputs)] for i in range(n)]


def offline_transcripts(inputs: list[BenchInput]) -> dict[Path, str]:
    """The offline transcript of exactly the audio each file's streams get (once per file)."""
    from streamstt.models.audio import decode_audio
    from streamstt.models.transcriber import Transcriber

    transcriber = Transcriber.load()
    texts = {}
    for item in inputs:
        audio = decode_audio(item.path)[: int(round(item.audio_s * 16000))]
        texts[item.path] = transcriber.transcribe(audio).text
    return texts


# ---- progress -----------------------------------------------------------------------------
class Progress:
    """Audio seconds sent in a level, on stderr: tqdm when installed, else one redrawn line."""

    def __init__(self, total_s: float, label: str) -> None:
        self.total, self.label, self.done, self._drawn = total_s, label, 0.0, 0.0
        try:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_s,
                desc=label,
                file=sys.stderr,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio sent "
                "[{elapsed}<{remaining}]",
            )
        except ImportError:
            self.bar = None

    def update(self, seconds: float) -> None:
        # A sum of chunk lengths overshoots the total by a rounding error (tqdm warns then).
        seconds = max(0.0, min(seconds, self.total - self.done))
        self.done += seconds
        if self.bar is not None:
            self.bar.update(seconds)
        elif time.monotonic() - self._drawn > 0.5:
            self._drawn = time.monotonic()
            share = 100 * self.done / self.total if self.total else 100
            print(f"\r{self.label}: {share:5.1f}% of audio sent", end="", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print(f"\r{self.label}: done{' ' * 24}", file=sys.stderr)


# ---- streamstt levels ---------------------------------------------------------------------
def run_streamstt_levels(
    config: BenchConfig, inputs: list[BenchInput], out: Path, server_info: dict
) -> list[LevelRun]:
    spawned = None
    if config.spawn:
        spawned = SpawnedServer(list(config.serve_args), out / "server.log").start()
        server_info.update(target=spawned.target, args=spawned.args[1:])
        config = replace(config, web_server=spawned.web_target or None)
    server_info["web_target"] = config.web_server
    target = spawned.target if spawned else config.server
    assert target is not None
    try:
        if spawned is None:
            wait_serving(target, timeout_s=30.0)
        levels = []
        for n in config.streams:
            if levels:
                time.sleep(config.settle_s)
            levels.append(run_streamstt_level(config, inputs, target, n, spawned))
        return levels
    finally:
        if spawned is not None:
            server_info["exit_code"] = spawned.stop()


def run_streamstt_level(
    config: BenchConfig,
    inputs: list[BenchInput],
    target: str,
    n: int,
    spawned: SpawnedServer | None,
) -> LevelRun:
    items = stream_inputs(inputs, n)
    progress = Progress(sum(i.audio_s for i in items), f"streamstt N={n}")
    sampler = ProcessSampler(spawned.pid) if spawned else None
    try:
        with sampler or contextlib.nullcontext():
            started = time.monotonic()
            timelines = asyncio.run(_stream_all(config, target, items, progress))
            wall = time.monotonic() - started
    finally:
        progress.close()
    transports = [config.transport(i, n) for i in range(n)]
    runs = _stream_runs(items, timelines, config.stagger_ms, transports)
    return LevelRun("streamstt", n, runs, wall, sampler.usage if sampler else None)


async def _stream_all(
    config: BenchConfig, target: str, items: list[BenchInput], progress: Progress
) -> list[latency.StreamTimeline]:
    origin = time.monotonic()
    return await asyncio.gather(
        *(
            _stream_one(
                config,
                target,
                item,
                origin + i * config.stagger_ms / 1000,
                progress,
                config.transport(i, len(items)),
            )
            for i, item in enumerate(items)
        )
    )


async def _stream_one(
    config: BenchConfig,
    target: str,
    item: BenchInput,
    start_at: float,
    progress: Progress,
    transport: str,
) -> latency.StreamTimeline:
    from ..client import AsyncStreamingClient, StreamInterrupted, streaming_config

    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    sent: list[latency.ChunkSend] = []
    received: list[latency.Response] = []
    interval = config.chunk_ms / 1000 / config.pace

    async def audio():
        # Pace here (not with the client's pace_s) so the recorded time is the moment the
        # chunk is handed to gRPC, not the moment the client's loop fetched it.
        first = time.monotonic()
        previous = 0.0
        for k, chunk in enumerate(item.chunks):
            delay = first + k * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append(latency.ChunkSend(time.monotonic(), item.chunk_ends_s[k]))
            progress.update(item.chunk_ends_s[k] - previous)
            previous = item.chunk_ends_s[k]
            yield chunk

    stream_config = streaming_config(
        item.rate, channels=item.channels, latency_budget_ms=config.latency_budget_ms
    )
    timeout = item.audio_s / config.pace + STREAM_TIMEOUT_SLACK_S
    error, detail = None, ""
    if transport == "websocket":
        from .websocket import stream_over_websocket

        url = f"ws://{config.web_server}/v1/stream"
        error, detail = await stream_over_websocket(
            url,
            stream_config,
            audio(),
            timeout,
            lambda t, r: received.append(response_record(t, r)),
        )
        return latency.StreamTimeline(tuple(sent), tuple(received), item.audio_s, error, detail)
    # One connection per stream, as independent callers would have.
    async with AsyncStreamingClient(target) as client:
        try:
            async for response in client.stream(stream_config, audio(), timeout=timeout):
                received.append(response_record(time.monotonic(), response))
        except StreamInterrupted as exc:
            error, detail = exc.code.name, exc.error.details() or ""
    return latency.StreamTimeline(tuple(sent), tuple(received), item.audio_s, error, detail)


def _seconds(duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def response_record(recv_t: float, response) -> latency.Response:
    """A StreamingRecognizeResponse as a timeline entry (words with their stream times)."""
    results = []
    for result in response.results:
        words: tuple[latency.Word, ...] = ()
        if result.alternatives:
            alternative = result.alternatives[0]
            if alternative.words:
                words = tuple(
                    latency.Word(w.word, _seconds(w.start_time), _seconds(w.end_time))
                    for w in alternative.words
                )
            elif alternative.transcript:
                words = tuple(latency.Word(t, timed=False) for t in alternative.transcript.split())
        results.append(
            latency.Result(
                result.is_final,
                result.utterance_index,
                _seconds(result.result_end_time),
                words,
                result.stability,
            )
        )
    return latency.Response(recv_t, tuple(results))


# ---- baseline -----------------------------------------------------------------------------
def run_baseline_levels(
    config: BenchConfig, inputs: list[BenchInput], info: dict
) -> list[LevelRun]:
    from . import baseline

    settings = baseline.BaselineConfig(
        min_chunk_s=config.baseline_min_chunk_s, threads=config.model_threads
    )
    info.update(baseline.describe(settings))
    try:
        model = baseline.load_model(settings)
    except ImportError as exc:
        raise RuntimeError(f"--baseline needs faster-whisper ({exc})") from exc
    audio = {item.path: baseline.load_audio(item.path, item.audio_s) for item in inputs}
    levels = []
    for n in config.streams:
        time.sleep(config.settle_s)
        items = stream_inputs(inputs, n)
        progress = Progress(sum(i.audio_s for i in items), f"baseline N={n}")
        try:
            with ProcessSampler(os.getpid()) as sampler:
                started = time.monotonic()
                timelines = baseline.run_level(
                    model,
                    [audio[item.path] for item in items],
                    settings,
                    chunk_s=config.chunk_ms / 1000,
                    pace=config.pace,
                    stagger_s=config.stagger_ms / 1000,
                    on_audio=progress.update,
                )
                wall = time.monotonic() - started
        finally:
            progress.close()
        runs = _stream_runs(items, timelines, config.stagger_ms)
        levels.append(LevelRun("baseline", n, runs, wall, sampler.usage))
    return levels


def _stream_runs(items, timelines, stagger_ms: float, transports=None) -> tuple[StreamRun, ...]:
    """Pair each stream's input with its recorded timeline, start offset and transport."""
    transports = transports or ["in-process"] * len(items)
    return tuple(
        StreamRun(i, item, i * stagger_ms / 1000, timeline, transport)
        for i, (item, timeline, transport) in enumerate(zip(items, timelines, transports))
    )
