"""Per-host limits against real sockets: aiohttp servers on 127.0.0.1, one port per host.

The crawler's key is the URL's host (``netloc``: here each "host" is a listening socket of
its own), with ``max_per_key=2`` and a ``max_workers`` well above hosts x 2. The server
counts, per Host header, how many requests are inside a handler at once. The first
requests wait in their handler until every host has two in flight (an event, no sleep):
so the test proves that two per host do run at once, and that no host ever sees three.
Both doors: CoroutineExecutor on the test's loop, LoopExecutor from sync code with the
server on a thread of its own.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip("aiohttp", reason="aiohttp is a test extra")
import aiohttp
from aiohttp import web

from coroexecutor import CoroutineExecutor, LoopExecutor

pytestmark = pytest.mark.timeout(60)

HOSTS = 4
PER_HOST = 2
MAX_WORKERS = 20  # more than HOSTS * PER_HOST: only the per-host limit can hold them back
URLS_PER_HOST = 50


class HostServer:
    """Counts requests in flight per Host header; touched on the server's loop only."""

    def __init__(self) -> None:
        self.active: collections.Counter[str] = collections.Counter()
        self.peak: collections.Counter[str] = collections.Counter()
        self.served = 0
        self.gate = asyncio.Event()  # set once HOSTS * PER_HOST requests are in flight
        self.ports: list[int] = []

    async def handle(self, request: web.Request) -> web.Response:
        host = request.host
        self.active[host] += 1
        self.peak[host] = max(self.peak[host], self.active[host])
        try:
            if sum(self.active.values()) >= HOSTS * PER_HOST:
                self.gate.set()
            await asyncio.wait_for(self.gate.wait(), 10)
            self.served += 1
            return web.Response(text=request.match_info["n"])
        finally:
            self.active[host] -= 1

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[HostServer]:
        app = web.Application()
        app.router.add_get("/{n}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for _ in range(HOSTS):
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
        self.ports = [address[1] for address in runner.addresses]
        try:
            yield self
        finally:
            await runner.cleanup()

    def urls(self) -> list[str]:
        # Interleaved by host, as a crawl frontier would be; every host gets its share.
        return [
            f"http://127.0.0.1:{port}/{n}"
            for n in range(URLS_PER_HOST) for port in self.ports
        ]


def host_of(url: str = "", session: Any = None) -> str:
    # Every job of a keyed executor has a key: opening and closing the session (no URL)
    # get the key "".
    return urlsplit(url).netloc


async def fetch(url: str, session: aiohttp.ClientSession) -> str:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.text()


def client_session() -> aiohttp.ClientSession:
    # limit=0: aiohttp's own connector limits must not be what holds requests back.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0))


def check(server: HostServer, results: list[str]) -> None:
    assert results == [str(n) for n in range(URLS_PER_HOST) for _ in range(HOSTS)]
    assert server.served == HOSTS * URLS_PER_HOST
    assert len(server.peak) == HOSTS
    assert set(server.peak.values()) == {PER_HOST}  # reached on every host, never passed


async def test_coroutine_executor_keeps_per_host_limits_on_the_wire() -> None:
    exe = CoroutineExecutor(MAX_WORKERS, key=host_of, max_per_key=PER_HOST)
    async with HostServer().serving() as server, client_session() as session, exe:
        urls = server.urls()
        results = [r async for r in exe.map(fetch, urls, [session] * len(urls), buffersize=60)]
        assert exe.stats.active_keys == 0
    check(server, results)


def test_loop_executor_keeps_per_host_limits_on_the_wire() -> None:
    ready = threading.Event()
    stop: list[Any] = []
    servers: list[HostServer] = []

    async def serve() -> None:
        async with HostServer().serving() as server:
            servers.append(server)
            done = asyncio.Event()
            stop.append((asyncio.get_running_loop(), done))
            ready.set()
            await done.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="host-server")
    thread.start()
    try:
        assert ready.wait(10), "the server thread did not start"
        server = servers[0]
        with LoopExecutor(MAX_WORKERS, key=host_of, max_per_key=PER_HOST) as exe:
            session = exe.submit(_open_session).result(10)
            try:
                urls = server.urls()
                results = list(exe.map(fetch, urls, [session] * len(urls), timeout=30))
            finally:
                exe.submit(session.close).result(10)
    finally:
        if stop:
            loop, done = stop[0]
            loop.call_soon_threadsafe(done.set)
        thread.join(10)
    assert not thread.is_alive()
    check(server, results)  # (read after the server's loop has ended: no race)


async def _open_session() -> aiohttp.ClientSession:
    return client_session()
