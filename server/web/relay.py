"""One WebSocket stream relayed onto one StreamingRecognize call of the local gRPC server, so
validation, limits, admission, auth and status codes are the server's own."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from aiohttp import WSMsgType, web

from streamstt.v1 import asr_pb2, asr_pb2_grpc

from .protocol import (
    BridgeError,
    close_code,
    control,
    error_message,
    finalize_request,
    opening_request,
)
from .protocol import response_json as to_json

# Requests held between the socket and the call: when the server stops reading a
# stream (max_backlog_s), the bridge stops reading the socket and TCP holds the browser.
QUEUE_MESSAGES = 8
ADMISSION_WAIT_S = 1.0  # longest hold of the audio until the server has admitted the stream
_END = None  # queued after {"end": true}: the call half-closes


async def relay(
    ws: web.WebSocketResponse, stub: asr_pb2_grpc.RecognizerStub, metadata, idle_timeout_s: float
) -> None:
    """Run one stream from its first message to its close."""
    try:  # before the call exists the server's idle timeout cannot hold the socket: this does
        first = await ws.receive(timeout=idle_timeout_s)
    except asyncio.TimeoutError:
        message = f"no config within idle_timeout_s ({idle_timeout_s:g} s)"
        await _close(ws, grpc.StatusCode.DEADLINE_EXCEEDED, message)
        return
    if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return  # closed before it began
    try:
        text = first.data if first.type == WSMsgType.TEXT else None
        audio = first.data if first.type == WSMsgType.BINARY else None
        opening = opening_request(text, audio)
    except BridgeError as error:
        await _close(ws, error.code, error.message)
        return
    queue: asyncio.Queue = asyncio.Queue(QUEUE_MESSAGES)
    admitted = asyncio.Event()
    call = stub.StreamingRecognize(_requests(opening, queue, admitted), metadata=metadata)
    reader = asyncio.create_task(_read_client(ws, queue))
    writer = asyncio.create_task(_write_client(ws, call, admitted))
    try:
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        call.cancel()  # no-op after the call ended; stops the server's work if the client left
        for task in (reader, writer):
            task.cancel()
        await asyncio.wait({reader, writer})  # collects their ends without raising them
    code, message = _outcome(reader, writer)
    if code is not None and not ws.closed:
        await _close(ws, code, message)


def _outcome(reader: asyncio.Task, writer: asyncio.Task) -> tuple[grpc.StatusCode | None, str]:
    """How the stream ended: the call's status, or the bridge's refusal of a client message;
    None when the client went away first (there is no one to tell)."""
    for task in (reader, writer):  # the reader first: its refusal cancelled the call
        if not task.done() or task.cancelled():
            continue
        error = task.exception()
        if isinstance(error, BridgeError):
            return error.code, error.message
        if task is writer and error is None:
            return writer.result()
    return None, ""


async def _requests(opening, queue: asyncio.Queue, admitted: asyncio.Event):
    """The call's requests. Audio waits until the server admitted the stream (it sends its
    initial metadata then), so a refusal is never raced by audio (see client._after_admission)."""
    yield opening
    with contextlib.suppress(asyncio.TimeoutError):  # not the builtin before Python 3.11
        await asyncio.wait_for(admitted.wait(), ADMISSION_WAIT_S)
    while (request := await queue.get()) is not _END:
        yield request


async def _read_client(ws: web.WebSocketResponse, queue: asyncio.Queue) -> None:
    """Binary messages are audio; text ones are controls. Returns when the client closes."""
    ended = False
    async for message in ws:
        if message.type == WSMsgType.ERROR:
            return
        if ended and message.type in (WSMsgType.BINARY, WSMsgType.TEXT):
            raise BridgeError(grpc.StatusCode.INVALID_ARGUMENT, 'a message after {"end": true}')
        if message.type == WSMsgType.BINARY:
            await queue.put(asr_pb2.StreamingRecognizeRequest(audio_content=message.data))
        elif message.type == WSMsgType.TEXT and control(message.data) == "finalize":
            await queue.put(finalize_request())
        elif message.type == WSMsgType.TEXT:  # control() said "end"
            ended = True
            await queue.put(_END)


async def _write_client(ws: web.WebSocketResponse, call, admitted: asyncio.Event):
    """Every response as a text message; returns the call's status code and details."""
    try:
        await call.initial_metadata()  # admitted, or the call has ended with its refusal
        admitted.set()
        async for response in call:
            await ws.send_str(to_json(response))
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def _close(ws: web.WebSocketResponse, code: grpc.StatusCode, message: str) -> None:
    """The error as JSON (unless OK), then the close code that names the status."""
    with contextlib.suppress(ConnectionError, RuntimeError):
        if code != grpc.StatusCode.OK:
            await ws.send_str(error_message(code, message))
        await ws.close(code=close_code(code), message=code.name.encode())
