"""`streamstt bench --websocket N`: a stream over the browser bridge (server/web,
docs/web.md) instead of gRPC, on the same timeline: a chunk's time is when it is handed to
the socket, a response's when its message is read."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

from google.protobuf import json_format

from streamstt.v1 import asr_pb2

END = json.dumps({"end": True})  # half-close: the server finalises, then closes with 1000


async def stream_over_websocket(
    url: str,
    config: asr_pb2.StreamingRecognitionConfig,
    audio: AsyncIterator[bytes],
    timeout_s: float,
    on_response: Callable[[float, asr_pb2.StreamingRecognizeResponse], None],
) -> tuple[str | None, str]:
    """Stream the audio; each response goes to on_response(receive time, response). Returns
    (status name, message) for a refused or broken stream, (None, "") for a normal close."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, max_msg_size=0) as ws,
    ):
        sender = asyncio.create_task(_send(ws, config, audio))
        try:
            return await asyncio.wait_for(_receive(ws, on_response), timeout_s)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            return "DEADLINE_EXCEEDED", f"no close within {timeout_s:.0f} s"
        finally:
            sender.cancel()


async def _send(ws, config, audio: AsyncIterator[bytes]) -> None:
    await ws.send_str(json_format.MessageToJson(config))
    async with contextlib.aclosing(audio):  # closed here even when the stream ends early
        async for chunk in audio:
            await ws.send_bytes(chunk)
    await ws.send_str(END)


async def _receive(ws, on_response) -> tuple[str | None, str]:
    async for message in ws:
        received = time.monotonic()
        body = json.loads(message.data)
        if "error" in body:
            return body["error"]["code"], body["error"]["message"]
        on_response(received, json_format.ParseDict(body, asr_pb2.StreamingRecognizeResponse()))
    if ws.close_code != 1000:
        return "UNAVAILABLE", f"closed with code {ws.close_code}"
    return None, ""
