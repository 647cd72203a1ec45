"""The `streamstt` command line: subcommands, their flags and the help for each."""

from __future__ import annotations

import argparse
from dataclasses import fields

from . import commands

PRECISIONS = ["auto", "fp32", "fp16", "bf16", "int8"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamstt", description="Real-time speech recognition over gRPC."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_serve, _stream, _demo, _mic, _transcribe, _health, _bench):
        add(sub)
    return parser


def _serve(sub) -> None:
    from streamstt.server.settings import GROUPS, OPTIONS, ServerConfig

    serve = sub.add_parser("serve", help="run the gRPC server")
    flags = {}
    for group_name, options in OPTIONS.items():
        group = serve.add_argument_group(group_name, GROUPS[group_name])
        flags.update({name: (group, what) for name, what in options.items()})
    for option in fields(ServerConfig):
        group, what = flags[option.name]
        flag = "--" + option.name.replace("_", "-")
        text = f"{what} (env STREAMSTT_{option.name.upper()}, default {option.default!r})"
        if option.type in (bool, "bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        else:
            kind = {"int": int, "float": float}.get(str(option.type), str)
            group.add_argument(flag, type=kind, help=text)
        serve.set_defaults(**{option.name: None})
    serve.set_defaults(func=commands.cmd_serve)


def _client_flags(parser: argparse.ArgumentParser, server: str | None = "127.0.0.1:50051") -> None:
    group = parser.add_argument_group("connection")
    where = "host:port of the server" if server else "use this server (host:port) instead"
    group.add_argument("--server", default=server, help=f"{where} (default %(default)s)")
    group.add_argument("--tls", action="store_true", help="connect with TLS")
    group.add_argument("--ca", help="PEM root certificate file for TLS (implies --tls)")
    group.add_argument("--token", help="bearer token sent with every call")


def _stream(sub) -> None:
    stream = sub.add_parser("stream", help="stream an audio file to a server")
    stream.add_argument("file", help="any file libsndfile reads (WAV, FLAC, OGG, MP3)")
    stream.add_argument("--realtime", action="store_true", help="send at real time (1 s a second)")
    stream.add_argument("--chunk-ms", type=int, default=100, help="milliseconds of audio a request")
    stream.add_argument("--json", action="store_true", help="one response a line, as JSON")
    stream.add_argument("--no-interim", action="store_true", help="ask for finals only")
    stream.add_argument(
        "--latency-budget-ms", type=int, default=0,
        help="milliseconds from audio to its interim; 0 = the server's default",
    )  # fmt: skip
    stream.add_argument(
        "--channels", choices=("mix", "separate"), default="mix",
        help="multi-channel audio: averaged (mix), or each channel on its own with its channel "
        "tag (separate: call recordings)",
    )  # fmt: skip
    stream.add_argument(
        "--profanity-filter", action="store_true",
        help="mask profane words in results (\"f***\"), as Google does",
    )  # fmt: skip
    _client_flags(stream)
    stream.set_defaults(func=commands.cmd_stream)


def _demo(sub) -> None:
    demo = sub.add_parser("demo", help="start a server and stream a file into it (real time)")
    demo.add_argument("file", nargs="?", default="tests/data/sample.wav", help="audio file")
    demo.add_argument("--chunk-ms", type=int, default=100, help="milliseconds of audio a request")
    demo.set_defaults(func=commands.cmd_demo)


def _mic(sub) -> None:
    mic = sub.add_parser("mic", help="stream the microphone to a server")
    mic.add_argument(
        "--list-devices", action="store_true",
        help="list audio devices (inputs marked `in`, the default `*`) and exit",
    )  # fmt: skip
    mic.add_argument("--device", help="input device: index or name (default: the system's)")
    mic.add_argument(
        "--rate", type=int, default=None,
        help="capture rate in Hz (default: 16000, else the device's own; the server resamples)",
    )  # fmt: skip
    mic.add_argument(
        "--finish-timeout-s", type=float, default=5.0,
        help="seconds after Ctrl-C to wait for the final; past it, exit 1 (default %(default)s)",
    )  # fmt: skip
    mic.add_argument("--chunk-ms", type=int, default=100, help="milliseconds of audio a request")
    mic.add_argument("--json", action="store_true", help="one response a line, as JSON")
    mic.add_argument(
        "--profanity-filter", action="store_true",
        help="mask profane words in results (\"f***\"), as Google does",
    )  # fmt: skip
    _client_flags(mic)
    mic.set_defaults(func=commands.cmd_mic)


def _transcribe(sub) -> None:
    transcribe = sub.add_parser("transcribe", help="transcribe files (locally or --server)")
    transcribe.add_argument("files", nargs="+", help="audio files")
    transcribe.add_argument("--json", action="store_true", help="segments and words as JSON")
    model = transcribe.add_argument_group("local model (without --server)")
    model.add_argument("--model", default=None, help="tiny.en (bundled, default) or a path")
    model.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    model.add_argument("--precision", default="auto", choices=PRECISIONS, help="numeric precision")
    model.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    model.add_argument(
        "--truncated", action="store_true",
        help="encode only the audio's own length, not 30 s windows (faster, see docs)",
    )  # fmt: skip
    _client_flags(transcribe, server=None)
    transcribe.set_defaults(func=commands.cmd_transcribe)


def _health(sub) -> None:
    check = sub.add_parser("health", help="gRPC health check: exit 0 when SERVING")
    check.add_argument(
        "--service", default="",
        help="'' = ready for new streams (default), 'liveness' = process alive",
    )  # fmt: skip
    check.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    _client_flags(check)
    check.set_defaults(func=commands.cmd_health)


def _bench(sub) -> None:
    try:
        from ..bench.run import add_bench_flags
    except ImportError:  # the harness needs matplotlib (pip install streamstt[bench])
        return
    bench = sub.add_parser("bench", help="latency test harness")
    add_bench_flags(bench)
    bench.set_defaults(func=commands.cmd_bench)
