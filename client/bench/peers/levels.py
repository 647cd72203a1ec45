"""`streamstt bench --peer whisperlive`: the sweep's levels on WhisperLive's own server.

The same files, pace, chunking, stagger and settling as the streamstt levels (run.py); each
stream's exchange becomes the same StreamTimeline (whisperlive.timeline), so every figure of
the report comes from the same functions. The server is sampled like a spawned streamstt.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from .. import baseline
from ..run import BenchConfig, BenchInput, LevelRun, Progress, StreamRun, stream_inputs
from ..spawn import ProcessSampler
from . import whisperlive
from .spawn import PeerServer, PeerServerOptions, package_versions, peer_venv
from .whisperlive_stream import PeerStream, float_chunks, stream_to_whisperlive

SYSTEM = "whisperlive"
WARM_UP_S = 3.0  # audio of the first file streamed once before the levels (loads the model)


def run_peer_levels(
    config: BenchConfig, inputs: list[BenchInput], out: Path, info: dict
) -> list[LevelRun]:
    from streamstt.models.loading import bundled_model_dir

    venv = peer_venv(config.peer_venv)
    server = PeerServer(
        PeerServerOptions(
            venv=venv,
            model_dir=bundled_model_dir(),
            threads=config.model_threads,
            max_clients=max(config.streams),
            log_path=out / f"{SYSTEM}.log",
        )
    )
    info.update(describe(server))
    streams = {item.path: _peer_stream(config, item, server.url) for item in inputs}
    server.start()
    try:
        _warm_up(streams[inputs[0].path])
        levels = []
        for n in config.streams:
            time.sleep(config.settle_s)
            levels.append(_run_level(config, inputs, streams, n, server.pid))
        _write_first_exchange(levels[0], out / f"{SYSTEM}_exchange.json", info)
        return [level for level, _ in levels]
    finally:
        info["exit_code"] = server.stop()


def describe(server: PeerServer) -> dict:
    versions = package_versions(server.options.venv, ("whisper-live", "faster-whisper"))
    return {
        "engine": f"whisper-live {versions.get('whisper-live')} "
        f"(faster_whisper backend, faster-whisper {versions.get('faster-whisper')})",
        "model": str(server.options.model_dir),
        "venv": str(server.options.venv),
        "threads": server.options.threads,
        "max_clients": server.options.max_clients,
        "settings": "its defaults: VAD on, beam 5, 1 s minimum pass, last 10 segments resent",
    }


def _peer_stream(config: BenchConfig, item: BenchInput, url: str) -> PeerStream:
    samples = baseline.load_audio(item.path, item.audio_s)  # 16 kHz mono, as streamstt decodes
    return PeerStream(
        url=url,
        chunks=tuple(float_chunks(samples, item.chunk_ends_s)),
        chunk_ends_s=item.chunk_ends_s,
        interval_s=config.chunk_ms / 1000 / config.pace,
    )


def _warm_up(stream: PeerStream) -> None:
    """One short stream at full speed: the first client loads the shared model, and no
    measured stream should pay for that (streamstt turns SERVING only once warm, too)."""
    keep = next((k + 1 for k, end in enumerate(stream.chunk_ends_s) if end >= WARM_UP_S), None)
    short = PeerStream(
        stream.url, stream.chunks[:keep], stream.chunk_ends_s[:keep], 0.0, stream.options
    )
    asyncio.run(stream_to_whisperlive(short))


def _run_level(
    config: BenchConfig, inputs: list[BenchInput], streams: dict, n: int, pid: int
) -> tuple[LevelRun, list[whisperlive.Exchange]]:
    items = stream_inputs(inputs, n)
    progress = Progress(sum(i.audio_s for i in items), f"{SYSTEM} N={n}")
    try:
        with ProcessSampler(pid) as sampler:
            started = time.monotonic()
            exchanges = asyncio.run(_stream_all(config, [streams[i.path] for i in items], progress))
            wall = time.monotonic() - started
    finally:
        progress.close()
    runs = tuple(
        StreamRun(i, item, i * config.stagger_ms / 1000, whisperlive.timeline(x), "websocket")
        for i, (item, x) in enumerate(zip(items, exchanges))
    )
    return LevelRun(SYSTEM, n, runs, wall, sampler.usage), exchanges


async def _stream_all(
    config: BenchConfig, streams: list[PeerStream], progress: Progress
) -> list[whisperlive.Exchange]:
    async def one(index: int, stream: PeerStream) -> whisperlive.Exchange:
        await asyncio.sleep(index * config.stagger_ms / 1000)
        return await stream_to_whisperlive(stream, progress.update)

    return await asyncio.gather(*(one(i, s) for i, s in enumerate(streams)))


def _write_first_exchange(first: tuple[LevelRun, list], path: Path, info: dict) -> None:
    """Stream 0 of the smallest N as recorded: what tests/data/whisperlive_timeline.json is."""
    level, exchanges = first
    run = level.runs[0]
    about = {"file": str(run.input.path), "reference": run.input.reference, "peer": info}
    whisperlive.write_exchange(exchanges[0], path, **about)
