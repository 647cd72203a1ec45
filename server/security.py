"""TLS/mTLS credentials and bearer-token authentication.

The token check is a server interceptor, so it covers every method including the
bidirectional stream, and an unauthenticated call is refused before any handler (and so the
model) sees it. Health checks stay open: load balancers and kubelets probe without tokens.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc

from .refusal import first_request
from .settings import ServerConfig

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path!r}: {exc}") from exc


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    key = _read(config.tls_key, "TLS key (tls_key)")
    cert = _read(config.tls_cert, "TLS certificate (tls_cert)")
    if config.tls_client_ca:
        ca = _read(config.tls_client_ca, "client CA (tls_client_ca)")
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )
    return grpc.ssl_server_credentials([(key, cert)])


def check_settings(config: ServerConfig) -> None:
    """Refuse TLS settings that would serve something other than what was asked for."""
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ValueError("tls_cert and tls_key go together: set both for TLS, or neither")
    if config.tls_client_ca and not config.tls_cert:
        raise ValueError(
            "tls_client_ca (mTLS) needs tls_cert and tls_key: without them the server "
            "would serve plaintext"
        )
    # Every file named is read now, so a missing mount fails in a second, by name.
    for path, what in (
        (config.tls_cert, "TLS certificate (tls_cert)"),
        (config.tls_key, "TLS key (tls_key)"),
        (config.tls_client_ca, "client CA (tls_client_ca)"),
    ):
        if path:
            _read(path, what)
    if config.auth_tokens_file:
        load_tokens(config.auth_tokens_file)


def load_tokens(path: str) -> list[bytes]:
    """One token a line; blank lines and lines starting with `#` are not tokens."""
    lines = _read(path, "token file (auth_tokens_file)").decode().splitlines()
    tokens = [t.encode() for line in lines if (t := line.strip()) and not t.startswith("#")]
    if not tokens:
        raise ValueError(f"token file {path!r} holds no tokens")
    return tokens


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: list[bytes]) -> None:
        self._tokens = tokens

    def _authorized(self, metadata) -> bool:
        header = dict(metadata or ()).get("authorization", "")
        if not header.startswith("Bearer "):
            return False
        offered = header[len("Bearer ") :].encode()
        # compare against every token, in constant time, without an early exit
        matches = [hmac.compare_digest(offered, token) for token in self._tokens]
        return any(matches)

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(OPEN_METHOD_PREFIXES) or self._authorized(
            handler_call_details.invocation_metadata
        ):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        return _deny(handler)


def _deny(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    message = "missing or invalid bearer token (metadata 'authorization: Bearer <token>')"

    async def unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request_iterator, context):
        await first_request(request_iterator)  # see server.refusal
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    async def server_streaming(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(unary)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            streaming, handler.request_deserializer, handler.response_serializer
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            server_streaming, handler.request_deserializer, handler.response_serializer
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            unary, handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(
        unary, handler.request_deserializer, handler.response_serializer
    )


def auth_interceptor(config: ServerConfig) -> BearerTokenInterceptor | None:
    if not config.auth_tokens_file:
        return None
    return BearerTokenInterceptor(load_tokens(config.auth_tokens_file))
