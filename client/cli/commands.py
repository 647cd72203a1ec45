"""What each `streamstt` subcommand does (the parser is in parser.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from .display import Display


def cmd_serve(args: argparse.Namespace) -> int:
    from streamstt.server.app import serve
    from streamstt.server.security import check_settings
    from streamstt.server.settings import ServerConfig, config_from_env

    overrides = {f.name: getattr(args, f.name) for f in fields(ServerConfig)}
    try:
        config = config_from_env(**overrides)
        check_settings(config)
    except ValueError as exc:
        print(f"streamstt serve: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(config))


def _client(args: argparse.Namespace):
    from ..client import ClientOptions, StreamingClient

    token = args.token
    root = Path(args.ca).read_bytes() if args.ca else None
    options = ClientOptions(tls=args.tls or bool(root), root_certificates=root, token=token)
    return StreamingClient(args.server, options)


def cmd_stream(args: argparse.Namespace) -> int:
    from ..client import StreamInterrupted, file_chunks, streaming_config

    try:
        rate, channels, chunks = file_chunks(args.file, args.chunk_ms)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"streamstt stream: {exc}", file=sys.stderr)
        return 2
    config = streaming_config(
        rate,
        channels=channels,
        interim_results=not args.no_interim,
        latency_budget_ms=args.latency_budget_ms,
        profanity_filter=args.profanity_filter,
    )
    config.config.enable_separate_recognition_per_channel = args.channels == "separate"
    display = Display(args.json)
    with _client(args) as client:
        try:
            for response in client.stream(
                config, chunks, pace_s=args.chunk_ms / 1000 if args.realtime else 0
            ):
                display.show(response)
        except StreamInterrupted as exc:
            display.clear()
            print(f"streamstt stream: {exc}", file=sys.stderr)
            return 1
    display.clear()
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    if args.server:
        return _transcribe_remote(args)
    import torch

    from streamstt.models.audio import AudioDecodeError, decode_audio
    from streamstt.models.checkpoints import ModelLoadError
    from streamstt.models.options import OFFLINE_OPTIONS
    from streamstt.models.transcriber import Transcriber

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        transcriber = Transcriber.load(args.model, args.device, args.precision)
    except (ModelLoadError, ValueError) as exc:
        print(f"streamstt transcribe: {exc}", file=sys.stderr)
        return 2
    # word times only where they are printed (--json): their alignment pass is ~5 % of the time
    options = replace(OFFLINE_OPTIONS, full_window=not args.truncated, word_timestamps=args.json)
    status = 0
    for path in args.files:
        try:
            transcript = transcriber.transcribe(decode_audio(path), options)
        except AudioDecodeError as exc:
            print(f"streamstt transcribe: {exc}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps(_transcript_json(path, transcript)))
        else:
            print(transcript.text)
    return status


def _transcript_json(path: str, transcript) -> dict:
    return {
        "file": str(path),
        "text": transcript.text,
        "confidence": round(transcript.confidence, 4),
        "no_speech_prob": round(transcript.no_speech_prob, 4),
        "segments": [
            {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text}
            for s in transcript.segments
        ],
        "words": [
            {
                "word": w.word.strip(),
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "confidence": round(w.probability, 4),
            }
            for w in transcript.words
        ],
    }


# A file bigger than this goes over StreamingRecognize: every server takes messages of gRPC's
# default 4 MiB (less framing), and a streamed file is read at the server's pace.
ONE_MESSAGE_BYTES = 4 * 1024 * 1024 - 64 * 1024


def _transcribe_remote(args: argparse.Namespace) -> int:
    import grpc

    from ..client import StreamInterrupted

    status = 0
    with _client(args) as client:
        for path in args.files:
            try:
                results = _remote_results(client, Path(path))
            except (OSError, ValueError, grpc.RpcError, StreamInterrupted) as exc:
                detail = exc.details() if isinstance(exc, grpc.RpcError) else exc
                print(f"streamstt transcribe: {path}: {detail}", file=sys.stderr)
                status = 1
                continue
            if args.json:
                print(json.dumps({"results": [MessageToDict(r) for r in results]}))
            else:
                print(" ".join(r.alternatives[0].transcript for r in results))
    return status


def _remote_results(client, path: Path) -> list:
    """A file's final results: one Recognize call, or streamed when it is too big for one
    message or too long for Recognize (OUT_OF_RANGE)."""
    import grpc

    from ..client import file_chunks, streaming_config

    if path.stat().st_size <= ONE_MESSAGE_BYTES:
        try:
            return list(client.recognize(path.read_bytes()).results)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.OUT_OF_RANGE:
                raise
    rate, channels, chunks = file_chunks(path)
    config = streaming_config(rate, channels=channels, interim_results=False)
    responses = client.stream(config, chunks)  # full speed: the server's flow control paces it
    return [r for response in responses for r in response.results if r.is_final]


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job end to end: start a server on a free port with the bundled model, stream
    a file into it at real time over gRPC, print partials and finals, shut down."""
    from streamstt.server.app import setup_logging, start_server
    from streamstt.server.settings import config_from_env

    from ..client import AsyncStreamingClient, file_chunks, streaming_config

    setup_logging(json_logs=False, level=30)
    rate, channels, chunks = file_chunks(args.file, args.chunk_ms)
    display = Display(json_lines=False)

    async def run() -> None:
        running = await start_server(config_from_env(port=0, log_json=False))
        print(
            f"server up on 127.0.0.1:{running.port} ({running.servicer.transcriber.name}, "
            f"{running.servicer.transcriber.plan.describe()}); streaming {args.file}",
            flush=True,
        )
        try:
            async with AsyncStreamingClient(f"127.0.0.1:{running.port}") as client:
                async for response in client.stream(
                    streaming_config(rate, channels=channels), chunks, pace_s=args.chunk_ms / 1000
                ):
                    display.show(response)
        finally:
            display.clear()
            await running.drain_and_stop()

    asyncio.run(run())
    return 0


def cmd_mic(args: argparse.Namespace) -> int:
    from .mic import run_mic

    return run_mic(args, _client, Display(args.json))


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.run import run_bench

    return run_bench(args)


def cmd_health(args: argparse.Namespace) -> int:
    """gRPC health check for container HEALTHCHECKs and scripts: exit 0 only when SERVING.

    Imports grpc alone (not torch), so it is cheap enough to run every few seconds."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if args.tls or args.ca:
        root = Path(args.ca).read_bytes() if args.ca else None
        channel = grpc.secure_channel(args.server, grpc.ssl_channel_credentials(root))
    else:
        channel = grpc.insecure_channel(args.server)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as error:
            print(f"{args.server}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.server} service={args.service!r}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
