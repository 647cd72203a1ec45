"""Server lifecycle: load and warm the model, serve gRPC with health and reflection, drain on
SIGTERM/SIGINT.

Health is NOT_SERVING until the model has been loaded and has decoded real audio once; on a
signal it turns NOT_SERVING at once, new calls get UNAVAILABLE, running streams get
`grace_s` to finish and receive their finals, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import socket
import sys
import time
from dataclasses import dataclass

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from streamstt.models.memory import map_large_buffers
from streamstt.models.transcriber import Request, Transcriber
from streamstt.v1 import asr_pb2, asr_pb2_grpc

from .admission import Admission
from .readiness import Readiness
from .recognize_rpc import RecognizeIntake
from .scheduler import Scheduler
from .servicer import RecognizerServicer
from .settings import ServerConfig, message_limit
from .stream.vad import SileroVad
from .workers import Workers

SERVICE_NAME = asr_pb2.DESCRIPTOR.services_by_name["Recognizer"].full_name
_LOGGER = logging.getLogger("streamstt.server")
DRAIN_POLL_S = 0.05  # how often the drain checks for running streams
STOP_GRACE_S = 1.0  # after the drain: time grpc gives in-flight calls to complete
DRAIN_MESSAGE = (
    "server shutting down (grace_s over): finals of the audio received were sent; "
    "resume on another replica"
)
WARMUP_SECONDS = 2.0  # audio decoded once at start-up so the first caller pays no warm-up


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the structured `extra` fields (stream id, ...)."""

    _STANDARD = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            {
                k: v
                for k, v in vars(record).items()
                if k not in self._STANDARD and not k.startswith("_")
            }
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(json_logs: bool, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_logs
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    """Channel arguments; each is a named limit in ServerConfig."""
    options = [
        ("grpc.max_receive_message_length", message_limit(config)),
        ("grpc.max_send_message_length", message_limit(config)),
        # Pings closer together than this are "bad"; after a few the client gets GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", int(config.keepalive_min_ping_s * 1000)),
        (
            "grpc.http2.min_recv_ping_interval_without_data_ms",
            int(config.keepalive_min_ping_s * 1000),
        ),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 0),
    ]
    if config.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(config.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.max_connection_age_grace_s * 1000)),
        ]
    return options


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    servicer: RecognizerServicer
    scheduler: Scheduler
    workers: Workers
    health: health.aio.HealthServicer
    readiness: Readiness
    config: ServerConfig
    metrics: object | None = None
    metrics_port: int = 0  # where /metrics is served (0 = not served)
    web: object | None = None  # the WebSocket bridge and page (server/web), when web_port >= 0
    web_port: int = 0

    async def drain_and_stop(self) -> None:
        """NOT_SERVING now, refuse new calls, let running streams finish within the grace.

        The server keeps answering during the drain (health says NOT_SERVING, new streams get
        UNAVAILABLE from the servicer) so balancers see the state instead of a dead port."""
        self.servicer.draining = True
        await self.readiness.drain()
        deadline = time.monotonic() + self.config.grace_s
        await self._wait_for_streams(deadline)
        if self.servicer.active:  # past the grace: what was heard still gets its final
            await self.servicer.finalise_all(DRAIN_MESSAGE)
            deadline = time.monotonic() + self.config.drain_finals_s
            await self._wait_for_streams(deadline)
        await self.readiness.stop()
        if self.web is not None:  # its streams ended with the drain; it passes their ends on
            await self.web.stop()
        await self.server.stop(max(0.0, min(STOP_GRACE_S, deadline - time.monotonic())))
        await self.scheduler.stop()
        self.workers.shutdown()

    async def _wait_for_streams(self, deadline: float) -> None:
        while self.servicer.active and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)


def load_transcriber(config: ServerConfig) -> Transcriber:
    map_large_buffers(True)  # loading's big temporaries come and go as mappings
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    transcriber = Transcriber.load(config.model, config.device, config.precision)
    map_large_buffers(False)  # until a Recognize call comes (servicer.recognize_slots)
    return transcriber


def warm_up(transcriber: Transcriber) -> float:
    """Decode a short tone-free noise burst once; returns the seconds it took."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    audio = 0.01 * torch.randn(int(WARMUP_SECONDS * 16000), generator=generator)
    transcriber.transcribe_batch([Request(audio), Request(audio[: len(audio) // 2])])
    return time.perf_counter() - started


def _freeze_startup_heap() -> None:
    """What start-up made (the model, the modules of torch and grpc) lives as long as the
    process. Frozen, the cycle collector skips it, so its full collections stay cheap and
    run often enough to free request cycles: an aborted call's frames cycle with its
    exception (grpc keeps it on the call's state) and hold its request message."""
    gc.collect()
    gc.freeze()


def build_service(
    config: ServerConfig, transcriber: Transcriber, metrics=None
) -> tuple[RecognizerServicer, Scheduler, Workers]:
    """The engine and the service over it, not yet started."""
    workers = Workers()
    streams: dict = {}
    scheduler = Scheduler(
        transcriber,
        workers,
        streams,
        max_batch_size=config.max_batch_size,
        max_wait_ms=config.max_wait_ms,
        model_timeout_s=config.model_timeout_s,
    )
    admission = Admission(
        scheduler, streams, config.admission_utilization, config.latency_budget_ms / 1000
    )
    servicer = RecognizerServicer(config, transcriber, workers, admission, SileroVad(), metrics)
    servicer.notify = scheduler.notify
    return servicer, scheduler, workers


def _grpc_server(
    config: ServerConfig, servicer: RecognizerServicer, health_servicer
) -> grpc.aio.Server:
    interceptors = [*_interceptors(config), RecognizeIntake(servicer.Recognize)]
    server = grpc.aio.server(options=grpc_options(config), interceptors=interceptors)
    asr_pb2_grpc.add_RecognizerServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), server)
    return server


async def start_server(
    config: ServerConfig, transcriber: Transcriber | None = None, metrics=None
) -> RunningServer:
    """Load (unless given), warm up, bind and start; health turns SERVING at the end."""
    from .security import check_settings

    check_settings(config)  # before the model loads: a wrong setting fails in a second
    health_servicer = health.aio.HealthServicer()
    if metrics is None and config.metrics_port >= 0:
        from .metrics import Metrics

        metrics = Metrics()
    transcriber = transcriber or await asyncio.to_thread(load_transcriber, config)
    servicer, scheduler, workers = build_service(config, transcriber, metrics)
    server = _grpc_server(config, servicer, health_servicer)
    readiness = Readiness(health_servicer, ("", SERVICE_NAME))
    await readiness.loading()
    port = _bind(server, config)
    loopback = _loopback(server, config)
    servicer.replica = config.replica_name or f"{socket.gethostname()}:{port}"
    servicer.on_change = readiness.poke
    scheduler.supervisor.on_broken = lambda reason: _broken(servicer, readiness, reason)
    await server.start()
    warm = await workers.model(warm_up, transcriber)
    _freeze_startup_heap()
    scheduler.start()
    await readiness.start(servicer.refusal_reason)
    plan = transcriber.plan
    _LOGGER.info(
        "serving",
        extra={
            "port": port,
            "model": transcriber.name,
            "precision": plan.describe(),
            "device": plan.device,
            "replica": servicer.replica,
            "warmup_s": round(warm, 3),
        },
    )
    running = RunningServer(
        server, port, servicer, scheduler, workers, health_servicer, readiness, config, metrics
    )
    if metrics is not None:
        running.metrics_port = metrics.serve(config.host, config.metrics_port, running)
    if loopback is not None:
        from .web import WebBridge

        running.web = WebBridge(config, loopback)
        running.web_port = await running.web.start()
    return running


def _loopback(server: grpc.aio.Server, config: ServerConfig):
    """The bridge's private way in to this server (bound before the server starts)."""
    if config.web_port < 0:
        return None
    from .web import Loopback

    return Loopback(server)


def _broken(servicer: RecognizerServicer, readiness: Readiness, reason: str) -> None:
    """The replica can serve no one: refuse new calls, and turn every health name (liveness
    too) NOT_SERVING so that the orchestrator restarts it."""
    servicer.broken = reason
    asyncio.get_running_loop().create_task(readiness.broken(reason))


def _interceptors(config: ServerConfig) -> list:
    from .security import auth_interceptor

    interceptor = auth_interceptor(config)
    return [interceptor] if interceptor else []


def _bind(server: grpc.aio.Server, config: ServerConfig) -> int:
    address = f"{config.host}:{config.port}"
    if config.tls_cert:
        from .security import server_credentials

        port = server.add_secure_port(address, server_credentials(config))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    return port


async def serve(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    setup_logging(config.log_json)
    running = await start_server(config)
    if running.metrics is not None:
        print(f"metrics on http://{config.host}:{running.metrics_port}/metrics", flush=True)
    if running.web is not None:
        scheme = "https" if config.tls_cert else "http"
        print(f"live captions on {scheme}://{config.host}:{running.web_port}/", flush=True)
    print(f"streamstt listening on {config.host}:{running.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(running.server.wait_for_termination())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    _LOGGER.info(
        "draining",
        extra={"grace_s": config.grace_s, "active_streams": len(running.servicer.active)},
    )
    await running.drain_and_stop()
    with contextlib.suppress(asyncio.CancelledError):
        waiter.cancel()
    _LOGGER.info("stopped")
    return 0
