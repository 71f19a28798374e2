"""A loopback aiohttp server for the tests that make real HTTP requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serve(app: web.Application, *, handler_cancellation: bool = False) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 at a free port (yielded) until the block ends.

    ``handler_cancellation``: a client that disconnects cancels its handler, so a server
    can see which requests the executor cancelled.
    """
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
