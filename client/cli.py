"""`streamstt` command line: serve, stream, mic, transcribe, health, bench."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import fields
from pathlib import Path

from google.protobuf.json_format import MessageToDict


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    from streamstt.server.settings import ServerConfig

    for field in fields(ServerConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = {"int": int, "float": float, "bool": None}.get(str(field.type), str)
        if field.type in (bool, "bool"):
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"(env STREAMSTT_{field.name.upper()}, default {field.default})",
            )
        else:
            parser.add_argument(
                flag,
                type=kind,
                default=None,
                help=f"(env STREAMSTT_{field.name.upper()}, default {field.default!r})",
            )


def cmd_serve(args: argparse.Namespace) -> int:
    from streamstt.server.app import serve
    from streamstt.server.settings import ServerConfig, config_from_env

    overrides = {f.name: getattr(args, f.name) for f in fields(ServerConfig)}
    try:
        config = config_from_env(**overrides)
    except ValueError as exc:
        print(f"streamstt serve: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(config))


def _client(args: argparse.Namespace):
    from .client import ClientOptions, StreamingClient

    token = args.token
    root = Path(args.ca).read_bytes() if args.ca else None
    options = ClientOptions(tls=args.tls or bool(root), root_certificates=root, token=token)
    return StreamingClient(args.server, options)


class _Display:
    """Partial transcript redrawn in place on a terminal; finals on their own lines."""

    def __init__(self, json_lines: bool) -> None:
        self.json_lines = json_lines
        self.tty = sys.stdout.isatty()
        self.partial = ""

    def show(self, response) -> None:
        if self.json_lines:
            print(json.dumps(MessageToDict(response)), flush=True)
            return
        for result in response.results:
            if result.is_final:
                self._clear()
                print(result.alternatives[0].transcript, flush=True)
        interim = " ".join(
            r.alternatives[0].transcript
            for r in response.results
            if not r.is_final and r.alternatives
        )
        if interim and self.tty:
            self._clear()
            self.partial = interim
            sys.stdout.write("\x1b[2m" + interim[-200:] + "\x1b[0m")
            sys.stdout.flush()
        elif interim:
            print(f"... {interim}", flush=True)

    def _clear(self) -> None:
        if self.tty and self.partial:
            sys.stdout.write("\r\x1b[2K")
            self.partial = ""


def cmd_stream(args: argparse.Namespace) -> int:
    from .client import StreamInterrupted, file_chunks, streaming_config

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
    )
    display = _Display(args.json)
    with _client(args) as client:
        try:
            for response in client.stream(
                config, chunks, pace_s=args.chunk_ms / 1000 if args.realtime else 0
            ):
                display.show(response)
        except StreamInterrupted as exc:
            display._clear()
            print(f"streamstt stream: {exc}", file=sys.stderr)
            return 1
    display._clear()
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    if args.server:
        return _transcribe_remote(args)
    import torch

    from streamstt.models.audio import AudioDecodeError, decode_audio
    from streamstt.models.checkpoints import ModelLoadError
    from streamstt.models.transcriber import TranscribeOptions, Transcriber

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        transcriber = Transcriber.load(args.model, args.device, args.precision)
    except (ModelLoadError, ValueError) as exc:
        print(f"streamstt transcribe: {exc}", file=sys.stderr)
        return 2
    options = TranscribeOptions(full_window=not args.truncated)
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


def _transcribe_remote(args: argparse.Namespace) -> int:
    import grpc

    status = 0
    with _client(args) as client:
        for path in args.files:
            try:
                response = client.recognize(Path(path).read_bytes())
            except (OSError, grpc.RpcError) as exc:
                detail = exc.details() if isinstance(exc, grpc.RpcError) else exc
                print(f"streamstt transcribe: {path}: {detail}", file=sys.stderr)
                status = 1
                continue
            if args.json:
                print(json.dumps(MessageToDict(response)))
            else:
                print(" ".join(r.alternatives[0].transcript for r in response.results))
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job end to end: start a server on a free port with the bundled model, stream
    a file into it at real time over gRPC, print partials and finals, shut down."""
    from streamstt.server.app import setup_logging, start_server
    from streamstt.server.settings import config_from_env

    from .client import AsyncStreamingClient, file_chunks, streaming_config

    setup_logging(json_logs=False, level=30)
    rate, channels, chunks = file_chunks(args.file, args.chunk_ms)
    display = _Display(json_lines=False)

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
            display._clear()
            await running.drain_and_stop()

    asyncio.run(run())
    return 0


def cmd_mic(args: argparse.Namespace) -> int:
    from .mic import run_mic

    return run_mic(args, _client, _Display(args.json))


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

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


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port of the server")
    parser.add_argument("--tls", action="store_true", help="use TLS")
    parser.add_argument("--ca", help="PEM root certificate for TLS")
    parser.add_argument("--token", help="bearer token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamstt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    _add_server_flags(serve)
    serve.set_defaults(func=cmd_serve)

    stream = sub.add_parser("stream", help="stream an audio file to a server")
    stream.add_argument("file")
    stream.add_argument("--realtime", action="store_true", help="pace chunks at real time")
    stream.add_argument("--chunk-ms", type=int, default=100)
    stream.add_argument("--json", action="store_true", help="one response per line as JSON")
    stream.add_argument("--no-interim", action="store_true", help="finals only")
    stream.add_argument("--latency-budget-ms", type=int, default=0)
    _add_client_flags(stream)
    stream.set_defaults(func=cmd_stream)

    demo = sub.add_parser("demo", help="start a server and stream a file into it (real time)")
    demo.add_argument("file", nargs="?", default="tests/data/sample.wav")
    demo.add_argument("--chunk-ms", type=int, default=100)
    demo.set_defaults(func=cmd_demo)

    mic = sub.add_parser("mic", help="stream the microphone to a server")
    mic.add_argument("--list-devices", action="store_true")
    mic.add_argument("--device", help="input device index or name")
    mic.add_argument("--rate", type=int, default=16000)
    mic.add_argument("--chunk-ms", type=int, default=100)
    mic.add_argument("--json", action="store_true")
    _add_client_flags(mic)
    mic.set_defaults(func=cmd_mic)

    transcribe = sub.add_parser("transcribe", help="transcribe files (locally or --server)")
    transcribe.add_argument("files", nargs="+")
    transcribe.add_argument("--json", action="store_true", help="segments and words as JSON")
    transcribe.add_argument("--model", default=None, help="tiny.en (bundled) or a path")
    transcribe.add_argument("--device", default="auto")
    transcribe.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "int8"]
    )
    transcribe.add_argument("--threads", type=int, default=0)
    transcribe.add_argument(
        "--truncated",
        action="store_true",
        help="encode only the real audio length (faster, see docs)",
    )
    transcribe.add_argument("--server", default=None, help="use a server (host:port) instead")
    transcribe.add_argument("--tls", action="store_true")
    transcribe.add_argument("--ca")
    transcribe.add_argument("--token")
    transcribe.set_defaults(func=cmd_transcribe)

    check = sub.add_parser("health", help="gRPC health check: exit 0 when SERVING")
    check.add_argument(
        "--service",
        default="",
        help="'' = ready for new streams (default), 'liveness' = process alive",
    )
    check.add_argument("--timeout", type=float, default=3.0, help="seconds")
    _add_client_flags(check)
    check.set_defaults(func=cmd_health)

    _add_bench(sub)
    return parser


def _add_bench(sub) -> None:
    try:
        from .bench import add_bench_flags
    except ImportError:  # the harness needs matplotlib (pip install streamstt[bench])
        return
    bench = sub.add_parser("bench", help="latency test harness")
    add_bench_flags(bench)
    bench.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
