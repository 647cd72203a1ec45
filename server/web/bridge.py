"""The HTTP side of the bridge: `GET /` (the live-captions page) and `WS /v1/stream`, served
by aiohttp on the gRPC server's own event loop.

The bridge reaches the gRPC server through a private Unix socket (a 0700 folder of its own),
so the one engine, with its interceptors, serves both, and a TLS or mTLS gRPC port needs no
loopback certificate. The web port itself serves TLS (and asks for client certificates) when
the gRPC port does.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import tempfile
from pathlib import Path

import grpc
from aiohttp import web

from streamstt.v1 import asr_pb2_grpc

from ..settings import ServerConfig, message_limit
from .protocol import BEARER_PROTOCOL, bearer_token
from .relay import relay

_LOGGER = logging.getLogger("streamstt.server.web")
PAGE = Path(__file__).parent / "static" / "index.html"
STREAM_PATH = "/v1/stream"
SHUTDOWN_S = 2.0  # after the gRPC drain: time a relay gets to pass on its call's end
HEARTBEAT_S = 20.0  # WebSocket pings, so idle proxies keep the connection


class Loopback:
    """A private Unix socket on the gRPC server for the bridge's calls."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.folder = tempfile.mkdtemp(prefix="streamstt-web-")  # mode 0700: this user only
        self.target = f"unix:{self.folder}/grpc.sock"
        if not server.add_insecure_port(self.target):
            raise RuntimeError(f"could not bind {self.target}")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class WebBridge:
    """The page and the WebSocket endpoint; `start` binds, `stop` closes after the drain."""

    def __init__(self, config: ServerConfig, loopback: Loopback) -> None:
        self.config, self.loopback = config, loopback
        self.channel = grpc.aio.insecure_channel(loopback.target)
        self.stub = asr_pb2_grpc.RecognizerStub(self.channel)
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get(STREAM_PATH, self._stream)
        self.runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_S, access_log=None)
        self.port = 0

    async def start(self) -> int:
        """Bind config.host:config.web_port (0 = a free port); returns the bound port."""
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, self.config.host, self.config.web_port, ssl_context=_tls(self.config)
        )
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.channel.close()
        self.loopback.remove()

    async def _page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE, headers={"Cache-Control": "no-cache"})

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        # A frame over the server's message limit still reaches the server, which refuses
        # it with its own RESOURCE_EXHAUSTED; far bigger ones aiohttp closes with 1009.
        ws = web.WebSocketResponse(
            protocols=(BEARER_PROTOCOL,),
            heartbeat=HEARTBEAT_S,
            max_msg_size=message_limit(self.config) + 1024 * 1024,
        )
        await ws.prepare(request)
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        token = bearer_token(offered, dict(request.query))
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            await relay(ws, self.stub, metadata, self.config.idle_timeout_s)
        except asyncio.CancelledError:
            _LOGGER.info("web stream cut by shutdown", extra={"peer": request.remote})
            raise
        return ws


def _tls(config: ServerConfig) -> ssl.SSLContext | None:
    """The gRPC port's certificate (and client CA) for the web port too: no plaintext side door."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca:
        context.load_verify_locations(config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
