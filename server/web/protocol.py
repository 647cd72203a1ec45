"""The WebSocket bridge's wire protocol: what a browser sends, what it is told, and how a gRPC
status becomes a close code. Pure functions; docs/web.md has the table."""

from __future__ import annotations

import json

import grpc
from google.protobuf import json_format

from streamstt.v1 import asr_pb2

NORMAL_CLOSE = 1000  # the gRPC call ended OK
STATUS_CLOSE_BASE = 4000  # a failed call closes with 4000 + its gRPC code number
BEARER_PROTOCOL = "bearer"  # Sec-WebSocket-Protocol: bearer, <token>
TOKEN_QUERY = "token"  # or ws://host:port/v1/stream?token=<token>
CONTROL_HELP = 'after the config, text messages are {"end": true} or {"finalize": true}'
# Issue 18 adds StreamingRecognizeRequest.finalize; until the contract has it, UNIMPLEMENTED.
HAS_FINALIZE = "finalize" in asr_pb2.StreamingRecognizeRequest.DESCRIPTOR.fields_by_name


class BridgeError(Exception):
    """A message the bridge itself refuses, with the status gRPC would give it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def close_code(code: grpc.StatusCode) -> int:
    """1000 for OK, else 4000 + the gRPC code number (INVALID_ARGUMENT 3 -> 4003)."""
    return NORMAL_CLOSE if code == grpc.StatusCode.OK else STATUS_CLOSE_BASE + code.value[0]


def error_message(code: grpc.StatusCode, message: str) -> str:
    """The text message sent just before a non-1000 close."""
    return json.dumps({"error": {"code": code.name, "message": message}})


def opening_request(text: str | None, audio: bytes | None) -> asr_pb2.StreamingRecognizeRequest:
    """The first WebSocket message as the call's first request: a text message is the JSON
    form of StreamingRecognitionConfig. Audio first is passed on as audio, so the server
    refuses it with its own INVALID_ARGUMENT, word for word what a gRPC caller gets."""
    if audio is not None:
        return asr_pb2.StreamingRecognizeRequest(audio_content=audio)
    config = asr_pb2.StreamingRecognitionConfig()
    try:
        json_format.Parse(text or "", config)
    except json_format.ParseError as exc:
        raise BridgeError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the first message must be a StreamingRecognitionConfig in protobuf JSON: {exc}",
        ) from exc
    return asr_pb2.StreamingRecognizeRequest(streaming_config=config)


def control(text: str) -> str:
    """A text message after the config: "end" (half-close), "finalize", or raises."""
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise BridgeError(grpc.StatusCode.INVALID_ARGUMENT, f"{CONTROL_HELP}: {exc}") from exc
    if message == {"end": True}:
        return "end"
    if message == {"finalize": True} and HAS_FINALIZE:
        return "finalize"
    if message == {"finalize": True}:
        raise BridgeError(
            grpc.StatusCode.UNIMPLEMENTED,
            'finalize is not in the streamstt.v1 contract yet; send {"end": true} to '
            "half-close (the open utterance is finalised and the stream ends)",
        )
    raise BridgeError(grpc.StatusCode.INVALID_ARGUMENT, f"{CONTROL_HELP}, not {text[:80]!r}")


def finalize_request() -> asr_pb2.StreamingRecognizeRequest:
    """The contract's own finalize message (only where HAS_FINALIZE)."""
    request = asr_pb2.StreamingRecognizeRequest()
    request.finalize.SetInParent()
    return request


def bearer_token(protocols: list[str], query: dict) -> str | None:
    """The token offered as the subprotocol after "bearer", else the ?token= parameter."""
    if BEARER_PROTOCOL in protocols:
        position = protocols.index(BEARER_PROTOCOL)
        if position + 1 < len(protocols):
            return protocols[position + 1]
    return query.get(TOKEN_QUERY) or None


def response_json(response: asr_pb2.StreamingRecognizeResponse) -> str:
    """One response as protobuf's JSON mapping (camelCase names, durations as "1.5s")."""
    return json.dumps(json_format.MessageToDict(response), separators=(",", ":"))
