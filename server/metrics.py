"""Prometheus metrics over HTTP on a side port (`--metrics-port`).

A private registry per server, so several servers in one process (tests) do not collide.
"""

from __future__ import annotations

import functools
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .stream.events import Event, Final, Interim

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # streams in one model call
ARRIVALS_KEPT = 4096  # chunk arrival times remembered per stream (~7 min of 100 ms chunks)


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
        seconds = functools.partial(Histogram, buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram(
            "streamstt_batch_size",
            "Streams per model call",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue = seconds("streamstt_queue_seconds", "Wait before a batch reached the model")
        self.compute = seconds("streamstt_compute_seconds", "Model time per batch")
        self.lag = seconds(
            "streamstt_result_lag_seconds",
            "Receive-to-result delay of the newest audio in a result",
        )
        self.emission = seconds(
            "streamstt_emission_latency_seconds",
            "From the arrival of a word's end audio to the first result showing the word",
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

    def on_batch(self, timing) -> None:
        """One model batch (scheduler.BatchTiming)."""
        self.batch_size.observe(timing.size)
        self.queue.observe(timing.queue_s)
        self.compute.observe(timing.compute_s)

    def stream_meter(self, budget_s: float) -> StreamMeter:
        return StreamMeter(self, budget_s)

    def serve(self, host: str, port: int, running=None) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        if running is not None:
            running.scheduler.on_batch = self.on_batch
        return server.server_port


class StreamMeter:
    """One stream's latency as the server sees it: from the arrival of the audio holding a
    word's end to the first event that shows the word."""

    def __init__(self, metrics: Metrics, budget_s: float) -> None:
        self.metrics, self.budget_s = metrics, budget_s
        # (stream seconds at the end of a chunk, arrival time)
        self.arrivals: deque[tuple[float, float]] = deque(maxlen=ARRIVALS_KEPT)
        self.shown_until = 0.0  # stream seconds: end of the newest word already shown

    def arrived(self, received_s: float, at: float) -> None:
        """Audio up to `received_s` of stream time arrived at `at` (time.monotonic)."""
        if not self.arrivals or received_s > self.arrivals[-1][0]:
            self.arrivals.append((received_s, at))

    def observe(self, event: Event) -> None:
        if isinstance(event, Final):
            self.metrics.finals.inc()
            words = event.result.words
        elif isinstance(event, Interim):
            words = event.committed + event.tentative
            if self.arrivals and event.end_s >= self.arrivals[-1][0]:
                self.metrics.lag.observe(time.monotonic() - self.arrivals[-1][1])
        else:
            return
        now = time.monotonic()
        for word in words:
            if word.end <= self.shown_until:
                continue
            arrived = next((t for end, t in self.arrivals if end >= word.end), None)
            if arrived is not None:
                self.metrics.emission.observe(now - arrived)
                if now - arrived > self.budget_s:
                    self.metrics.budget_misses.inc()
            self.shown_until = word.end
