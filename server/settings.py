"""Every server limit and default, named once, with its unit and why it has its value.

`ServerConfig` is built from command-line flags and `STREAMSTT_*` environment variables (flag
wins); docs/operations.md lists each limit and what a caller sees when it is hit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051  # 0 = pick a free port and print it
    model: str = "tiny.en"  # bundled name, or a path to weights
    device: str = "auto"  # auto | cpu | cuda[:N]
    precision: str = "auto"  # auto | fp32 | fp16 | bf16 | int8
    threads: int = 0  # torch intra-op threads for the model; 0 = all cores
    # --- limits -------------------------------------------------------------------------
    max_streams: int = 16  # concurrent streaming calls; more -> RESOURCE_EXHAUSTED at once
    max_message_bytes: int = 4 * 1024 * 1024  # one request message; more -> RESOURCE_EXHAUSTED
    max_stream_seconds: float = 3600.0  # audio per streaming call; more -> OUT_OF_RANGE
    idle_timeout_s: float = 30.0  # no message for this long -> DEADLINE_EXCEEDED, stream closed
    outbox_size: int = 64  # responses queued for a slow reader before its stream is aborted
    outbox_timeout_s: float = 10.0  # how long a full outbox may stay full before aborting
    max_channels: int = 8  # interleaved channels accepted in raw audio
    max_recognize_seconds: float = 600.0  # audio in one unary Recognize call
    grace_s: float = 10.0  # on SIGTERM: time running streams get to finish
    keepalive_min_ping_s: float = 10.0  # pings closer than this from a client -> GOAWAY
    max_connection_age_s: float = 0.0  # 0 = unlimited; else connections are recycled
    max_connection_age_grace_s: float = 30.0
    # --- scheduling ---------------------------------------------------------------------
    max_batch_size: int = 8  # streams in one model call
    max_wait_ms: float = 5.0  # how long a batch waits for more streams to join
    # Refuse a new stream when the projected decode cycle (measured cost per stream-step x
    # streams) exceeds this fraction of half the tightest latency budget.
    admission_utilization: float = 0.9
    # --- per-stream defaults (a request's own values win) ------------------------------
    latency_budget_ms: int = 1000  # target audio-to-interim delay
    silence_ms: int = 500  # trailing silence that ends an utterance
    max_utterance_ms: int = 20000  # force a final after this much speech without a pause
    # --- security and observability -----------------------------------------------------
    metrics_port: int = -1  # Prometheus /metrics on this port; -1 = off, 0 = any free port
    tls_cert: str = ""  # PEM server certificate; empty = plaintext
    tls_key: str = ""
    tls_client_ca: str = ""  # PEM CA; set = clients must present a certificate (mTLS)
    auth_tokens_file: str = ""  # one bearer token per line; set = calls need a token
    log_json: bool = True  # structured (JSON) logs
    # Sent to streaming callers in the `streamstt-replica` header and logged; empty = host:port
    # (in Kubernetes, set it to the pod name).
    replica_name: str = ""


ENV_PREFIX = "STREAMSTT_"


def config_from_env(env: dict[str, str] | None = None, **overrides: object) -> ServerConfig:
    """Defaults, then STREAMSTT_<FIELD> environment variables, then explicit overrides."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for field in fields(ServerConfig):
        raw = env.get(ENV_PREFIX + field.name.upper())
        if raw is not None:
            values[field.name] = _parse(field.type, raw, field.name)
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

    @property
    def step_ms(self) -> int:
        """Audio between interim decodes: a third of the budget leaves room for queueing and
        compute within it; bounded so small budgets do not flood the model."""
        return max(200, min(1000, self.latency_budget_ms // 3))
