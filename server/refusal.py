"""Refusing a streamed call before its first request was read, so that its client sees the
status.

grpc's asyncio client reports INTERNAL "Internal error from Core" in place of the server's
status when one of its writes crosses the server's end of the call (grpc/grpc#36066; a CI run
of tests/test_web.py saw it through the browser bridge). Clients hold their audio back until
the server has answered the config, so the first request is the one write that can cross a
refusal: a stream is refused once it has arrived, or after FIRST_REQUEST_WAIT_S without it.
"""

from __future__ import annotations

import asyncio
import contextlib

FIRST_REQUEST_WAIT_S = 1.0


async def first_request(requests) -> None:
    """Wait for a streamed call's first request (at most FIRST_REQUEST_WAIT_S); it is read
    and dropped, as the call is about to be refused."""
    with contextlib.suppress(TimeoutError, StopAsyncIteration):
        await asyncio.wait_for(anext(aiter(requests)), FIRST_REQUEST_WAIT_S)
