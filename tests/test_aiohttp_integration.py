"""coroexecutor against real I/O: an aiohttp server on 127.0.0.1 and an aiohttp client.

The server counts what it sees: how many requests are inside a handler at once (the
executor's ``max_workers`` must bound it), which requests were cancelled because the
client went away (fail-fast must cancel in-flight requests, not let them finish), and how
many requests arrived at all (fail-fast must stop the producer).

URL kinds served:

* ``/ok/{n}``   answers ``n`` as text;
* ``/fail/{n}`` answers 500;
* ``/park/{n}`` never answers: the handler waits until the client disconnects (the client
  either times out or is cancelled), and the server records the cancellation.

No test orders events with sleeps: the server signals through events, and every wait has
a bound.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp is a test extra")
from aiohttp import web  # noqa: E402

from coroexecutor import CoroutineExecutor  # noqa: E402

pytestmark = pytest.mark.timeout(20)

N_URLS = 2_000
MAX_WORKERS = 100


class Server:
    """A counting aiohttp server; all counters are touched on the server's loop only."""

    def __init__(self) -> None:
        self.active = 0  # requests inside a handler right now
        self.max_active = 0
        self.started: collections.Counter[str] = collections.Counter()  # per URL kind
        self.cancelled: collections.Counter[str] = collections.Counter()  # client went away
        self.port = 0
        # Set when `active` first reaches `gate_at`: the first requests wait for it, so a
        # test can prove the executor really runs max_workers requests at once.
        self.gate_at: int | None = None
        self.gate = asyncio.Event()
        self._watch: dict[str, tuple[int, asyncio.Event]] = {}

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{kind}/{n}", self.handle)
        return app

    def wait_parked(self, count: int) -> asyncio.Event:
        """An event set once `count` /park requests are inside their handler."""
        return self._event("park", count, self.started)

    def wait_cancelled(self, count: int) -> asyncio.Event:
        """An event set once `count` /park handlers were cancelled by a disconnect."""
        return self._event("park-cancelled", count, self.cancelled)

    def _event(self, key: str, count: int, counter: collections.Counter[str]) -> asyncio.Event:
        event = asyncio.Event()
        self._watch[key] = (count, event)
        if counter["park"] >= count:
            event.set()
        return event

    def _notify(self, key: str, value: int) -> None:
        if key in self._watch and value >= self._watch[key][0]:
            self._watch[key][1].set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind, n = request.match_info["kind"], request.match_info["n"]
        self.started[kind] += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if kind == "ok":
                if self.gate_at is not None and not self.gate.is_set():
                    if self.active >= self.gate_at:
                        self.gate.set()
                    else:
                        await asyncio.wait_for(self.gate.wait(), 5)
                return web.Response(text=n)
            if kind == "fail":
                return web.Response(status=500, text=f"failed {n}")
            if kind == "park":
                self._notify("park", self.started["park"])
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    self.cancelled["park"] += 1
                    self._notify("park-cancelled", self.cancelled["park"])
                    raise
            raise web.HTTPNotFound()
        finally:
            self.active -= 1


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[Server]:
    # handler_cancellation: a client that disconnects cancels its handler, so the server
    # can see which requests the executor cancelled.
    runner = web.AppRunner(server.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


def client_session(timeout: float | None = None) -> aiohttp.ClientSession:
    # limit=0: the connector must not cap concurrency itself (its default is 100),
    # or the test could not tell the executor's limit from aiohttp's.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


async def fetch(session: aiohttp.ClientSession, url: str, timeout: float | None = None) -> str:
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
    async with session.get(url, **kwargs) as response:
        response.raise_for_status()
        return await response.text()


#
# CoroutineExecutor
#


async def test_2000_urls_run_exactly_max_workers_at_once() -> None:
    async with serving(Server()) as server, client_session() as session:
        server.gate_at = MAX_WORKERS  # the first 100 requests wait until all 100 are in
        urls = [f"{server.origin}/ok/{i}" for i in range(N_URLS)]
        async with CoroutineExecutor(max_workers=MAX_WORKERS) as exe:
            results = [body async for body in exe.map(functools.partial(fetch, session), urls)]
        assert results == [str(i) for i in range(N_URLS)]
        assert server.gate.is_set()
        assert server.max_active == MAX_WORKERS  # reached, never exceeded
        assert server.started["ok"] == N_URLS
        assert exe.stats.succeeded == N_URLS


async def test_2000_urls_submitted_one_by_one_with_back_pressure() -> None:
    async with serving(Server()) as server, client_session() as session:
        server.gate_at = MAX_WORKERS
        tasks = []
        async with CoroutineExecutor(max_workers=MAX_WORKERS) as exe:
            for i in range(N_URLS):
                tasks.append(await exe.submit(fetch, session, f"{server.origin}/ok/{i}"))
                assert exe.stats.running <= MAX_WORKERS
        assert [task.result() for task in tasks] == [str(i) for i in range(N_URLS)]
        assert server.max_active == MAX_WORKERS


async def test_fail_fast_on_http_500_cancels_in_flight_requests() -> None:
    """The first error (a 500) is re-raised unchanged; the 50 parked requests and every
    other in-flight request are cancelled, and the producer stops submitting."""
    parked = 50
    fail_at = 1_000
    async with serving(Server()) as server, client_session() as session:
        all_parked = server.wait_parked(parked)
        all_cancelled = server.wait_cancelled(parked)
        urls = [f"{server.origin}/park/{i}" for i in range(parked)]
        urls += [f"{server.origin}/ok/{i}" for i in range(parked, fail_at)]
        urls.append(f"{server.origin}/fail/{fail_at}")
        urls += [f"{server.origin}/ok/{i}" for i in range(fail_at + 1, N_URLS)]
        tasks: list[asyncio.Task[str]] = []
        exe = CoroutineExecutor(max_workers=MAX_WORKERS)

        async def produce() -> None:
            async with exe:
                for i, url in enumerate(urls):
                    if i == parked:  # the parked requests hold 50 slots from here on
                        await asyncio.wait_for(all_parked.wait(), 5)
                    tasks.append(await exe.submit(fetch, session, url))

        with pytest.raises(aiohttp.ClientResponseError) as info:
            await produce()
        assert info.value.status == 500
        assert str(fail_at) in str(info.value.request_info.url)
        # The producer was interrupted at its next await: not every URL was submitted.
        assert len(tasks) < N_URLS
        assert all(task.done() for task in tasks)
        failed = [t for t in tasks if not t.cancelled() and t.exception() is not None]
        assert len(failed) == 1
        assert all(tasks[i].cancelled() for i in range(parked))
        # The server saw the client go away for every parked request.
        await asyncio.wait_for(all_cancelled.wait(), 5)
        assert server.cancelled["park"] == parked
        assert server.started["ok"] < N_URLS - 1
        assert server.max_active <= MAX_WORKERS
        stats = exe.stats
        assert stats.failed == 1
        assert stats.cancelled >= parked
        assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled


async def test_fail_fast_on_client_timeout() -> None:
    """A request that times out on the client fails its job with TimeoutError, which is
    the first error: every parked request is cancelled and the block re-raises it."""
    parked = MAX_WORKERS - 1
    async with serving(Server()) as server, client_session() as session:
        all_parked = server.wait_parked(parked)
        all_cancelled = server.wait_cancelled(parked + 1)
        exe = CoroutineExecutor(max_workers=MAX_WORKERS)

        async def produce() -> None:
            async with exe:
                for i in range(parked):  # these would wait forever
                    await exe.submit(fetch, session, f"{server.origin}/park/{i}")
                await asyncio.wait_for(all_parked.wait(), 5)
                await exe.submit(fetch, session, f"{server.origin}/park/late", 0.05)
                await asyncio.Event().wait()  # interrupted by the timeout's fail-fast

        with pytest.raises(asyncio.TimeoutError):
            await produce()
        await asyncio.wait_for(all_cancelled.wait(), 5)
        assert server.cancelled["park"] == parked + 1
        assert exe.stats.failed == 1
        assert exe.stats.cancelled == parked


async def test_absorb_policy_keeps_every_error_in_its_task() -> None:
    """suppress_task_errors=True: 180 answers of 500 and 20 client timeouts stay in their
    tasks; nothing else is cancelled and the block does not raise."""
    async with serving(Server()) as server, client_session() as session:
        all_cancelled = server.wait_cancelled(20)
        jobs: list[tuple[str, asyncio.Task[str]]] = []
        async with CoroutineExecutor(max_workers=MAX_WORKERS, suppress_task_errors=True) as exe:
            for i in range(N_URLS):
                if i % 100 == 0:
                    kind, timeout = "park", 0.2
                elif i % 10 == 0:
                    kind, timeout = "fail", None
                else:
                    kind, timeout = "ok", None
                url = f"{server.origin}/{kind}/{i}"
                jobs.append((kind, await exe.submit(fetch, session, url, timeout)))
        outcomes: collections.Counter[str] = collections.Counter()
        for kind, task in jobs:
            assert not task.cancelled()
            error = task.exception()
            if kind == "ok":
                assert error is None
                outcomes["ok"] += 1
            elif kind == "fail":
                assert isinstance(error, aiohttp.ClientResponseError)
                assert error.status == 500
                outcomes["500"] += 1
            else:
                assert isinstance(error, asyncio.TimeoutError)
                outcomes["timeout"] += 1
        assert outcomes == {"ok": 1_800, "500": 180, "timeout": 20}
        assert exe.stats.succeeded == 1_800
        assert exe.stats.failed == 200
        assert exe.stats.cancelled == 0
        await asyncio.wait_for(all_cancelled.wait(), 5)  # timed-out clients disconnected
        assert server.started == {"ok": 1_800, "fail": 180, "park": 20}
        assert server.max_active <= MAX_WORKERS


async def test_map_with_return_exceptions_yields_errors_in_place() -> None:
    async with serving(Server()) as server, client_session() as session:
        urls = [f"{server.origin}/{'fail' if i % 7 == 0 else 'ok'}/{i}" for i in range(N_URLS)]
        async with CoroutineExecutor(max_workers=MAX_WORKERS) as exe:
            results = [
                r
                async for r in exe.map(
                    functools.partial(fetch, session), urls, return_exceptions=True
                )
            ]
        for i, result in enumerate(results):
            if i % 7 == 0:
                assert isinstance(result, aiohttp.ClientResponseError)
            else:
                assert result == str(i)
        assert server.max_active <= MAX_WORKERS
