"""Retries against real I/O: an aiohttp server on 127.0.0.1 that answers 503 twice per path.

Every path ``/flaky/{n}`` answers ``503 Service Unavailable`` (with ``Retry-After: 0``)
to its first two requests and ``n`` to the third. With ``retry=``, every result arrives,
``stats.retried`` is exactly twice the number of paths, and the server never sees more
requests at once than ``max_workers``: on the core, and on the bridge with blocking and
coroutine fetches.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Optional

import pytest

pytest.importorskip("aiohttp", reason="aiohttp is a test extra")
import aiohttp
from aiohttp import web

from coroexecutor import CoroutineExecutor, LoopExecutor, Retry
from tests._http import serve

pytestmark = pytest.mark.timeout(60)  # loopback requests in debug mode under tox -p 2

PATHS = 300
MAX_WORKERS = 20
FAILURES = 2


class FlakyServer:
    def __init__(self) -> None:
        self.requests: collections.Counter[int] = collections.Counter()
        self.active = 0
        self.max_active = 0
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        self.requests[n] += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(0)  # let other requests in: max_active means something
            if self.requests[n] <= FAILURES:
                return web.Response(status=503, headers={"Retry-After": "0"})
            return web.Response(text=str(n))
        finally:
            self.active -= 1


@asynccontextmanager
async def serving(server: FlakyServer) -> AsyncIterator[FlakyServer]:
    app = web.Application()
    app.router.add_get("/flaky/{n}", server.handle)
    async with serve(app) as server.port:
        yield server


def policy(attempt: int, exc: BaseException) -> Optional[float]:
    """Retry 503s as the server says (Retry-After), up to three attempts in all."""
    if attempt < 3 and isinstance(exc, aiohttp.ClientResponseError) and exc.status == 503:
        return float(exc.headers["Retry-After"]) if exc.headers else 0.0
    return None


async def fetch(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.text()


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def test_every_result_arrives_after_two_503s_per_path() -> None:
    async with serving(FlakyServer()) as server, session() as client:
        urls = [f"{server.origin}/flaky/{n}" for n in range(PATHS)]
        async with CoroutineExecutor(max_workers=MAX_WORKERS, retry=policy) as exe:
            bodies = [b async for b in exe.map(functools.partial(fetch, client), urls)]
    assert bodies == [str(n) for n in range(PATHS)]
    assert exe.stats.retried == FAILURES * PATHS
    assert exe.stats.succeeded == PATHS and exe.stats.failed == 0
    assert set(server.requests.values()) == {FAILURES + 1}
    assert server.max_active <= MAX_WORKERS


async def test_giving_up_names_the_url_that_kept_failing() -> None:
    async with serving(FlakyServer()) as server, session() as client:
        url = f"{server.origin}/flaky/7"
        two = Retry(attempts=2, on=aiohttp.ClientResponseError, backoff=0)
        with pytest.raises(aiohttp.ClientResponseError) as info:
            async with CoroutineExecutor(retry=two) as exe:
                await exe.submit(fetch, client, url)
    assert info.value.status == 503
    (note,) = info.value.__notes__
    assert note.startswith("coroexecutor: job fetch(<aiohttp.client.ClientSession")
    assert note.endswith(f"'{url}') failed after 2 attempts")


async def test_the_bridge_retries_blocking_and_coroutine_fetches() -> None:
    """LoopExecutor: blocking urllib calls on worker threads and aiohttp coroutines on its
    loop, against the same flaky server (run by this test's loop)."""
    def get(url: str) -> str:
        with urllib.request.urlopen(url, timeout=30) as response:
            return str(response.read().decode())

    async def aget(url: str) -> str:
        async with session() as client:
            return await fetch(client, url)

    paths = 40
    http_503 = Retry(attempts=3, on=urllib.error.HTTPError, backoff=0, jitter=False)
    async with serving(FlakyServer()) as server:
        blocking_urls = [f"{server.origin}/flaky/{n}" for n in range(paths)]
        coroutine_urls = [f"{server.origin}/flaky/{n}" for n in range(paths, 2 * paths)]
        async with LoopExecutor(max_workers=MAX_WORKERS, retry=http_503) as exe:
            # map() blocks while it waits: in a thread, so that this loop serves.
            blocking = await asyncio.to_thread(lambda: list(exe.map(get, blocking_urls)))
            coroutine = await asyncio.to_thread(
                lambda: list(exe.map(aget, coroutine_urls, retry=policy))
            )
    assert blocking == [str(n) for n in range(paths)]
    assert coroutine == [str(n) for n in range(paths, 2 * paths)]
    assert exe.stats.retried == FAILURES * 2 * paths
    assert exe.stats.succeeded == 2 * paths and exe.stats.failed == 0
    assert set(server.requests.values()) == {FAILURES + 1}
    assert server.max_active <= MAX_WORKERS
