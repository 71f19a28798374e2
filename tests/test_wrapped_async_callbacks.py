"""key(), max_per_key() and the on_job_done hook given as a plain wrapper of an async
function (``key=lambda u: host_of(u)``, ``host_of`` async).

The constructors refuse an async function itself; a plain wrapper they cannot see. Its
coroutine was taken as the answer: a new key per job (no per-key limit held), a hook's
coroutine never awaited, and "coroutine ... was never awaited" warnings. Such an answer
is refused as the Adaptive predicate's is: closed (no warning), and a TypeError at the
call that asked (key() and max_per_key(): submit(), submit_nowait(), the map; the hook:
to the loop's exception handler, as the hook's own errors).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Hashable
from typing import Any, Callable

import pytest

from coroexecutor import CoroutineExecutor, LoopExecutor

KEY_ERROR = "key must be a plain function: it returned <coroutine object host_of at"
LIMIT_ERROR = "max_per_key must be a plain function: it returned <coroutine object limit_of at"


async def host_of(url: str) -> str:  # an async function by mistake
    return url.split("/")[2]


async def limit_of(key: Hashable) -> int:  # the same mistake for max_per_key
    return 1


async def fetch(url: str) -> str:
    await asyncio.sleep(0)
    return url


class Made:
    """The coroutines a plain wrapper made, to check each was closed."""

    def __init__(self) -> None:
        self.made: list[Coroutine[Any, Any, object]] = []

    def key(self, url: str) -> Hashable:
        coro = host_of(url)
        self.made.append(coro)
        return coro  # type: ignore[return-value]  # the mistake tested

    def limit(self, key: Hashable) -> int:
        coro = limit_of(key)
        self.made.append(coro)
        return coro  # type: ignore[return-value]  # the mistake tested

    def all_closed(self) -> bool:
        return bool(self.made) and all(coro.cr_frame is None for coro in self.made)


URL = "https://example.org/1"


async def _submit(exe: CoroutineExecutor) -> object:
    return await exe.submit(fetch, URL)


async def _submit_nowait(exe: CoroutineExecutor) -> object:
    return exe.submit_nowait(fetch, URL)


async def _map(exe: CoroutineExecutor) -> object:
    return [r async for r in exe.map(fetch, [URL])]


async def _submit_without_a_free_slot(exe: CoroutineExecutor) -> object:
    exe.max_workers = 1
    release = asyncio.Event()
    exe.submit_nowait(release.wait)  # holds the one slot (no args: see _key_or_wrapper)
    try:
        return await exe.submit(fetch, URL)
    finally:
        release.set()


CALLS: dict[str, Callable[[CoroutineExecutor], Coroutine[Any, Any, object]]] = {
    "submit": _submit,
    "submit_nowait": _submit_nowait,
    "map": _map,
    "submit, no slot free": _submit_without_a_free_slot,
}


def _key_or_wrapper(made: Made) -> Callable[..., Hashable]:
    # The parked job of _submit_without_a_free_slot has no URL: it gets a plain key.
    return lambda *args: made.key(*args) if args else "parked"


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("limit", ["int", "function"])
async def test_a_coroutine_key_is_refused_at_the_call_that_asked(call: str, limit: str) -> None:
    made, asked = Made(), []

    def per_key(key: Hashable) -> int:
        asked.append(key)
        return 1

    max_per_key = 1 if limit == "int" else per_key
    async with CoroutineExecutor(key=_key_or_wrapper(made), max_per_key=max_per_key) as exe:
        with pytest.raises(TypeError, match=re.escape(KEY_ERROR)):
            await CALLS[call](exe)
    assert made.all_closed()  # no "never awaited" warning
    assert all(type(key) is str for key in asked)  # never asked about the coroutine
    assert exe.stats.submitted == (1 if call == "submit, no slot free" else 0)


@pytest.mark.parametrize("call", ["submit", "submit_nowait", "map"])
async def test_a_coroutine_from_max_per_key_is_refused_at_the_call(call: str) -> None:
    made = Made()
    async with CoroutineExecutor(key=lambda url: url, max_per_key=made.limit) as exe:
        with pytest.raises(TypeError, match=re.escape(LIMIT_ERROR)):
            await CALLS[call](exe)
    assert made.all_closed()
    assert exe.stats.submitted == 0


async def test_a_coroutine_from_the_hook_is_reported_as_its_errors_are() -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reports.append(context))
    made: list[Coroutine[Any, Any, None]] = []

    async def progress(job: asyncio.Future[Any]) -> None:
        pass

    def hook(job: asyncio.Future[Any]) -> None:
        made.append(progress(job))
        return made[-1]  # type: ignore[return-value]  # the mistake tested

    try:
        async with CoroutineExecutor(1, on_job_done=hook) as exe:
            first = await exe.submit(fetch, URL)
            queued = exe.submit_nowait(fetch, URL)  # (its hook runs from its future)
    finally:
        loop.set_exception_handler(previous)
    assert first.result() == queued.result() == URL  # the jobs are not affected
    assert len(made) == len(reports) == 2
    assert all(coro.cr_frame is None for coro in made)
    for context in reports:
        assert context["message"] == "on_job_done hook raised"
        error = context["exception"]
        assert isinstance(error, TypeError)
        assert str(error).startswith("on_job_done must be a plain function: it returned <corou")


@pytest.mark.parametrize("option", ["key", "max_per_key"])
def test_the_bridge_refuses_them_at_submit(option: str) -> None:
    made = Made()
    if option == "key":
        bridge = LoopExecutor(key=made.key, max_per_key=1)
        message = KEY_ERROR
    else:
        bridge = LoopExecutor(key=lambda url: url, max_per_key=made.limit)
        message = LIMIT_ERROR
    with bridge:
        with pytest.raises(TypeError, match=re.escape(message)):
            bridge.submit(fetch, URL)
        with pytest.raises(TypeError, match=re.escape(message)):
            bridge.map(fetch, [URL])
        assert bridge.stats.submitted == 0
    assert made.all_closed()
