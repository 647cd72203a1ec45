"""Every server limit and default, named once, with its unit and why it has its value.

`ServerConfig` is built from command-line flags and `STREAMSTT_*` environment variables (flag
wins); docs/operations.md lists each limit and what a caller sees when it is hit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

GROUPS = {
    "network": "where and how the server listens",
    "model": "the acoustic model and where it runs",
    "limits": "what one caller may use; past a limit the caller gets the status named",
    "scheduling": "how streams share the model",
    "stream defaults": "per-stream defaults; a request's own value wins",
    "security": "TLS, client certificates, bearer tokens",
    "observability": "metrics, logs, names",
}


@dataclass(frozen=True)
class ServerConfig:
    """Every server setting; OPTIONS says what each one is (its `--help` line)."""

    host: str = "127.0.0.1"
    port: int = 50051
    keepalive_min_ping_s: float = 10.0
    max_connection_age_s: float = 0.0
    max_connection_age_grace_s: float = 30.0
    web_port: int = -1
    model: str = "tiny.en"
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0
    max_streams: int = 16
    max_message_bytes: int = 0
    max_stream_seconds: float = 3600.0
    idle_timeout_s: float = 30.0
    outbox_size: int = 64
    outbox_timeout_s: float = 10.0
    max_channels: int = 8
    max_recognize_seconds: float = 600.0
    max_recognize_calls: int = 2
    max_backlog_s: float = 6.0
    grace_s: float = 10.0
    drain_finals_s: float = 5.0
    model_timeout_s: float = 60.0
    max_batch_size: int = 8
    max_wait_ms: float = 5.0
    admission_utilization: float = 0.9
    latency_budget_ms: int = 1000
    silence_ms: int = 500
    max_utterance_ms: int = 20000
    final_beam_size: int = 5
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    auth_tokens_file: str = ""
    metrics_port: int = -1
    log_json: bool = True
    replica_name: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.final_beam_size <= MAX_FINAL_BEAM_SIZE:
            raise ValueError(
                f"final_beam_size {self.final_beam_size} is outside 1-{MAX_FINAL_BEAM_SIZE}"
            )


# Beams of a final decode: more beams, a longer final (5 beams on 2 cores: ~140 ms more for
# a final of 8 s, ~600 ms for one of 18 s: docs/accuracy.md)
MAX_FINAL_BEAM_SIZE = 16


# group -> option name -> what it is: its unit, and what a caller sees past it
OPTIONS: dict[str, dict[str, str]] = {
    "network": {
        "host": "address to bind (0.0.0.0: every interface)",
        "port": "TCP port; 0 picks a free one and prints it",
        "keepalive_min_ping_s": "seconds; a client pinging more often gets GOAWAY (2 strikes)",
        "max_connection_age_s": "seconds until a connection gets GOAWAY (rebalancing); 0 = never",
        "max_connection_age_grace_s": "seconds a recycled connection's calls get to finish",
        "web_port": (
            "HTTP port of the WebSocket bridge and the live-captions page (docs/web.md); "
            "-1 = off, 0 = a free port"
        ),
    },
    "model": {
        "model": "bundled model name, or a path to weights",
        "device": "auto | cpu | cuda[:N]",
        "precision": "auto | fp32 | fp16 | bf16 | int8 (auto measures on CPU at start-up)",
        "threads": "torch intra-op threads for the model; 0 = all cores",
    },
    "limits": {
        "max_streams": "concurrent streams; one more gets RESOURCE_EXHAUSTED at once",
        "max_message_bytes": (
            "bytes in one request message; more: RESOURCE_EXHAUSTED; 0 = what "
            "max_recognize_seconds of 16 kHz 16-bit audio needs (at least 4 MiB)"
        ),
        "max_stream_seconds": "audio seconds per stream; past it the finals, then OUT_OF_RANGE",
        "idle_timeout_s": "seconds without a request; then DEADLINE_EXCEEDED",
        "outbox_size": "responses queued for a slow reader; past it stale interims are skipped",
        "outbox_timeout_s": "seconds a reader may lag; then RESOURCE_EXHAUSTED, stream aborted",
        "max_channels": "interleaved channels; more: INVALID_ARGUMENT",
        "max_recognize_seconds": "audio seconds in one Recognize call; more: OUT_OF_RANGE",
        "max_recognize_calls": "Recognize calls decoding at once; one more: RESOURCE_EXHAUSTED",
        "max_backlog_s": (
            "audio seconds a stream may have waiting for decoding; past it the server stops "
            "reading that stream (flow control holds the sender; nothing is dropped)"
        ),
        "grace_s": "seconds running streams get to finish after SIGTERM; new calls UNAVAILABLE",
        "drain_finals_s": (
            "after grace_s: seconds to decode open utterances and send their finals, then "
            "UNAVAILABLE"
        ),
        "model_timeout_s": (
            "seconds one model call may take; past it the batch's streams get UNAVAILABLE and "
            "health (liveness too) turns NOT_SERVING so the replica is restarted"
        ),
    },
    "scheduling": {
        "max_batch_size": "streams in one model call",
        "max_wait_ms": "milliseconds a batch waits for more streams",
        "admission_utilization": "max decode-cycle share of budget/2; past: RESOURCE_EXHAUSTED",
    },
    "stream defaults": {
        "latency_budget_ms": "milliseconds from audio to the interim that shows it (100-60000)",
        "silence_ms": "milliseconds of trailing silence that end an utterance",
        "max_utterance_ms": "milliseconds of speech before a final is forced (<= 30000)",
        "final_beam_size": (
            "beams searched for the final of an utterance whose interims were unsure (noise); "
            "1 = greedy: quicker finals, less accurate on noisy audio (1-16)"
        ),
    },
    "security": {
        "tls_cert": "PEM server certificate file; empty = plaintext",
        "tls_key": "PEM private key file of --tls-cert",
        "tls_client_ca": "PEM CA file; set = clients must present a certificate (mTLS)",
        "auth_tokens_file": "bearer tokens, one a line; set = a call without one: UNAUTHENTICATED",
    },
    "observability": {
        "metrics_port": "Prometheus /metrics port; -1 = off, 0 = a free port",
        "log_json": "structured JSON logs on stderr",
        "replica_name": "name in the streamstt-replica header and logs; empty = host:port",
    },
}


ENV_PREFIX = "STREAMSTT_"


def config_from_env(env: dict[str, str] | None = None, **overrides: object) -> ServerConfig:
    """Defaults, then STREAMSTT_<FIELD> environment variables, then explicit overrides."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for option in fields(ServerConfig):
        raw = env.get(ENV_PREFIX + option.name.upper())
        if raw is not None:
            values[option.name] = _parse(option.type, raw, option.name)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServerConfig(**values)


def _parse(kind: object, raw: str, name: str) -> object:
    try:
        if kind in (bool, "bool"):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw


def message_limit(config: ServerConfig) -> int:
    """Bytes in one request message: as set, or enough for a Recognize call of
    max_recognize_seconds of 16 kHz 16-bit audio (plus framing), and never under 4 MiB."""
    if config.max_message_bytes > 0:
        return config.max_message_bytes
    needed = int(config.max_recognize_seconds * 16000 * 2) + 64 * 1024
    return max(4 * 1024 * 1024, needed)


@dataclass(frozen=True)
class StreamSettings:
    """One stream's options after defaults were applied and values validated."""

    encoding: int
    sample_rate: int
    channels: int
    interim_results: bool
    single_utterance: bool
    latency_budget_ms: int
    silence_ms: int
    max_utterance_ms: int
    vad_events: bool
    word_times: bool
    word_confidence: bool
    profanity_filter: bool = False  # mask listed words (server/profanity.py)
    final_beam_size: int = 5  # ServerConfig.final_beam_size

    @property
    def step_ms(self) -> int:
        """Audio between interim decodes: a third of the budget leaves room for queueing and
        compute within it; bounded so small budgets do not flood the model."""
        return max(200, min(1000, self.latency_budget_ms // 3))
