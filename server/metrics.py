"""Prometheus metrics over HTTP on a side port (`--metrics-port`).

A private registry per server, so several servers in one process (tests) do not collide.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # streams in one model call


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.active = Gauge("streamstt_active_streams", "Streams being served", registry=registry)
        self.rejected_total = Counter(
            "streamstt_rejected_streams_total",
            "Streams refused, by reason",
            ["reason"],
            registry=registry,
        )
        self.ended = Counter(
            "streamstt_streams_total", "Streams ended, by gRPC status", ["code"], registry=registry
        )
        self.audio = Counter(
            "streamstt_audio_seconds_total", "Audio seconds received", registry=registry
        )
        self.batch_size = Histogram(
            "streamstt_batch_size",
            "Streams per model call",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue = Histogram(
            "streamstt_queue_seconds",
            "Wait before a batch reached the model",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute = Histogram(
            "streamstt_compute_seconds",
            "Model time per batch",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.lag = Histogram(
            "streamstt_result_lag_seconds",
            "Receive-to-result delay of the newest audio in a result",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.emission = Histogram(
            "streamstt_emission_latency_seconds",
            "From the arrival of a word's end audio to the first result showing the word",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.budget_misses = Counter(
            "streamstt_budget_misses_total",
            "Words first shown later than the stream's latency budget",
            registry=registry,
        )
        self.finals = Counter(
            "streamstt_final_results_total", "Final results sent", registry=registry
        )

    def stream_started(self) -> None:
        self.active.inc()

    def stream_ended(self, code: str, audio_seconds: float) -> None:
        self.active.dec()
        self.ended.labels(code).inc()
        self.audio.inc(audio_seconds)

    def rejected(self, reason: str) -> None:
        self.rejected_total.labels(reason).inc()

    def on_step(self, session, job, words, info: dict[str, float]) -> None:
        self.queue.observe(info["queue_ms"] / 1000)
        self.compute.observe(info["compute_ms"] / 1000)
        if job.final and not job.ahead:  # a final decoded ahead is counted when it is sent
            self.finals.inc()
        budget_s = session.settings.latency_budget_ms / 1000
        for delay in session.new_word_emissions(words):
            self.emission.observe(delay)
            if delay > budget_s:
                self.budget_misses.inc()
        if session.pending_since is None and not job.final:
            self.lag.observe(time.monotonic() - session.last_arrival)

    def on_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def serve(self, host: str, port: int, running=None) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        if running is not None:
            running.scheduler.on_batch = self.on_batch
        return server.server_port
