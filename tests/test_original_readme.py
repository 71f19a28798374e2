"""Every example of the original project's README (../shared/original-README.rst), run
against coroexecutor with its behaviour asserted.

Where the original orders events by sleeping, these use event handshakes instead; where
the original has a bug (``submit`` called without ``await`` in the nesting example,
``response.text()`` not awaited), the fixed form is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from random import random

import aiohttp
import pytest
from aiohttp import web

from coroexecutor import CoroutineExecutor


async def test_demo(loop_kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def f(dt: float, msg: str = "") -> None:
        await asyncio.sleep(dt)
        print(f"completion message: {msg}")

    async with CoroutineExecutor(max_workers=10) as exe:
        t1 = await exe.submit(f, 0.01, msg="task 1")
        t2 = await exe.submit(f, 0.05, msg="task 2")

    assert t1.done()
    assert t2.done()
    assert t1.result() is None
    assert t2.result() is None
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == ["completion message: task 1", "completion message: task 2"]


async def test_throttling_example(loop_kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def f() -> None:
        print("hi!")

    async with CoroutineExecutor(max_workers=10) as exe:
        t1 = await exe.submit(f)
    assert t1.done()
    assert capsys.readouterr().out == "hi!\n"


#
# The URL-fetching pattern, against a local aiohttp server
#


class Server:
    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self.hits = 0
        self.base = ""

    async def page(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            return web.Response(text=f"page {request.match_info['n']}")
        finally:
            self.live -= 1


@contextlib.asynccontextmanager
async def local_server() -> AsyncIterator[Server]:
    server = Server()
    app = web.Application()
    app.router.add_get("/page/{n}", server.page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nobody-listens"


async def test_url_fetching_pattern(loop_kind: str, tmp_path: Path) -> None:
    bodies: dict[str, str] = {}
    problems: list[str] = []

    async def fetch(url: str) -> None:
        url = url.strip()
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                bodies[url] = await response.text()
        except Exception:
            problems.append(url)

    async with local_server() as server:
        good = [f"{server.base}/page/{n}" for n in range(12)]
        bad = closed_port_url()
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"{u}\n" for u in [*good[:5], bad, *good[5:]]))

        async with CoroutineExecutor(max_workers=3) as exe:
            with open(urls) as lines:  # noqa: ASYNC230 - the README's pattern, a tiny file
                for line in lines:
                    await exe.submit(fetch, line)

    assert bodies == {f"{server.base}/page/{n}": f"page {n}" for n in range(12)}
    assert problems == [bad]
    assert server.hits == 12
    assert server.peak <= 3


async def test_suppress_task_errors_example(loop_kind: str, tmp_path: Path) -> None:
    fetched: list[str] = []

    async def naive_fetch(url: str) -> None:
        async with aiohttp.ClientSession() as session, session.get(url.strip()) as response:
            fetched.append(await response.text())

    async with local_server() as server:
        urls = tmp_path / "urls.txt"
        good = [f"{server.base}/page/{n}" for n in range(8)]
        bad = [closed_port_url() for _ in range(3)]
        urls.write_text("\n".join([bad[0], *good[:4], bad[1], *good[4:], bad[2]]) + "\n")

        async with CoroutineExecutor(max_workers=4, suppress_task_errors=True) as exe:
            with open(urls) as lines:  # noqa: ASYNC230 - the README's pattern, a tiny file
                for line in lines:
                    await exe.submit(naive_fetch, line)
        # The handles were dropped: conftest fails the test if asyncio logs
        # "Task exception was never retrieved" for the absorbed errors.

    assert sorted(fetched) == sorted(f"page {n}" for n in range(8))
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.failed, stats.cancelled) == (11, 8, 3, 0)


#
# Using map
#


async def test_map_example(loop_kind: str) -> None:
    times = [0.01, 0.02, 0.03]

    async def f(dt: float) -> float:
        await asyncio.sleep(dt)
        return dt

    async with CoroutineExecutor() as exe:
        results = exe.map(f, times)
        assert [v async for v in results] == times

    # Input order, even when the jobs finish in the opposite order.
    async with CoroutineExecutor() as exe:
        assert [v async for v in exe.map(f, times[::-1])] == times[::-1]


async def test_map_error_keeps_partial_results(loop_kind: str) -> None:
    values = [1, 2, 3, 4]
    results: list[int] = []
    got_two = asyncio.Event()
    raised: list[Exception] = []
    last_cancelled = False

    async def f(v: int) -> int:
        nonlocal last_cancelled
        if v == 3:
            await got_two.wait()  # fail only once the first two results have been received
            raised.append(Exception("oh noes"))
            raise raised[0]
        if v == 4:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                last_cancelled = True
                raise
        await asyncio.sleep(0)
        return v

    async def main() -> None:
        async with CoroutineExecutor() as exe:
            async for r in exe.map(f, values):
                results.append(r)
                if len(results) == 2:
                    got_two.set()

    with pytest.raises(Exception, match="oh noes") as excinfo:
        await main()
    assert excinfo.value is raised[0]
    assert results == [1, 2]
    assert last_cancelled, "the unfinished job was not cancelled"


#
# Nesting: passing the executor around
#


@pytest.mark.parametrize("submit_kind", ["await_submit", "submit_nowait"])
async def test_nesting_example(loop_kind: str, submit_kind: str) -> None:
    done: list[float] = []
    body_done = asyncio.Event()

    async def f(dt: float) -> None:
        await asyncio.sleep(0)
        done.append(dt)

    async def producer(executor: CoroutineExecutor) -> None:
        await body_done.wait()  # submit only after the body of the block has finished
        for _ in range(3):
            if submit_kind == "await_submit":
                await executor.submit(f, random())
            else:
                executor.submit_nowait(f, random())

    async with CoroutineExecutor(timeout=20) as executor:
        await executor.submit(f, random())
        await executor.submit(f, random())
        await executor.submit(f, random())

        await executor.submit(producer, executor)
        await executor.submit(producer, executor)
        body_done.set()

    # The block waited for the jobs the producers submitted after the body ended.
    assert len(done) == 9
    assert executor.stats.succeeded == 11


async def test_timeout_example(loop_kind: str) -> None:
    started = 0
    cancelled = 0

    async def f(dt: float) -> None:
        nonlocal started, cancelled
        started += 1
        try:
            await asyncio.Event().wait()  # far longer than the executor's timeout
        except asyncio.CancelledError:
            cancelled += 1
            raise

    async def producer(executor: CoroutineExecutor) -> None:
        for _ in range(3):
            await executor.submit(f, random())

    loop = asyncio.get_running_loop()
    begin = loop.time()

    async def main() -> None:
        async with CoroutineExecutor(timeout=0.05) as executor:
            await executor.submit(f, random())
            await executor.submit(f, random())
            await executor.submit(f, random())

            await executor.submit(producer, executor)
            await executor.submit(producer, executor)

    with pytest.raises(TimeoutError):
        await main()
    assert loop.time() - begin >= 0.04
    # The deadline reached the jobs submitted from other jobs too.
    assert started == 9
    assert cancelled == 9
