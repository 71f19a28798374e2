"""Bad input to CoroutineExecutor: the exact exception and message at the call that made
the mistake, and an executor that keeps working afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import re
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, ExecutorStats, MapIterator

SHUTDOWN = "cannot schedule new futures after shutdown"


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


async def fetch(url: str) -> str:
    await asyncio.sleep(0)
    return url


def coroutine_hint(where: str, coro: object) -> str:
    # A map takes an iterable of arguments: its hint says `urls`, not `url`.
    arg = "urls" if where.startswith("map") else ""
    wrong, right = (f"fetch(url), {arg}", f"fetch, {arg}") if arg else ("fetch(url)", "fetch, url")
    return (
        f"{where}() expects an async function and its arguments, not a coroutine object"
        f" (got {coro!r})\n"
        f"  wrong: {where}({wrong})\n"
        f"  right: {where}({right})"
    )


async def call(exe: CoroutineExecutor, where: str, fn: Any) -> None:
    if where == "submit":
        await exe.submit(fn, "x")
    elif where == "submit_nowait":
        exe.submit_nowait(fn, "x")
    elif where == "map":
        exe.map(fn, ["x"])
    else:
        exe.map_unordered(fn, ["x"])


WHERE = ["submit", "submit_nowait", "map", "map_unordered"]


#
# fn
#


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("full", [False, True], ids=["free", "full"])
async def test_coroutine_object_instead_of_function(where: str, full: bool) -> None:
    release = asyncio.Event()
    async with CoroutineExecutor(max_workers=1) as exe:
        if full:
            await exe.submit(release.wait)
        coro = fetch("https://example.com")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a "never awaited" RuntimeWarning fails here
            with pytest.raises(TypeError, match=exactly(coroutine_hint(where, coro))):
                # Bounded: with every slot taken, submit must not wait before reporting.
                await asyncio.wait_for(call(exe, where, coro), 5)
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
            del coro
            gc.collect()
        assert exe.stats.submitted == (1 if full else 0)
        release.set()
        assert await (await exe.submit(fetch, "still works")) == "still works"


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("fn", [42, "fetch", None], ids=["int", "str", "None"])
async def test_non_callable_fn(where: str, fn: object) -> None:
    async with CoroutineExecutor(max_workers=2) as exe:
        with pytest.raises(
            TypeError, match=exactly(f"{where}() fn must be a callable (got {fn!r})")
        ):
            await call(exe, where, fn)
        assert exe.stats == ExecutorStats(0, 0, 0, 0, 0, 0)
        assert await (await exe.submit(fetch, "ok")) == "ok"


async def numbers(x: object) -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize("where", WHERE)
async def test_async_generator_function_is_refused(where: str) -> None:
    if where.startswith("map"):
        # Refused by map() itself, before any input is read.
        pattern = exactly(
            f"{where}() expects an async function, not an async generator function"
            " (got numbers)"
        )
    else:
        # Known from what fn returned; calling it ran none of its body.
        pattern = (
            "^" + re.escape("job function must return an awaitable, not an async generator")
            + r" \(got <async_generator object .*> from numbers\)"
            + "$"
        )
    async with CoroutineExecutor(max_workers=2) as exe:
        with pytest.raises(TypeError, match=pattern):
            await call(exe, where, numbers)
        assert exe.stats == ExecutorStats(0, 0, 0, 0, 0, 0)
        assert await (await exe.submit(fetch, "ok")) == "ok"


def not_async(x: object) -> int:
    return 42


@pytest.mark.parametrize("where", ["submit", "submit_nowait"])
async def test_fn_returning_a_non_awaitable_fails_the_call(where: str) -> None:
    message = "job function must return an awaitable (got 42 from not_async)"
    async with CoroutineExecutor(max_workers=1) as exe:
        with pytest.raises(TypeError, match=exactly(message)):
            await call(exe, where, not_async)
        # The slot was given back: the next job starts at once on the one slot.
        fut = exe.submit_nowait(fetch, "next")
        assert isinstance(fut, asyncio.Task)
        assert await fut == "next"
    assert exe.stats == ExecutorStats(1, 0, 0, 1, 0, 0)


@pytest.mark.parametrize("option", ["initializer", "job_timeout"])
async def test_fn_returning_a_non_awaitable_fails_the_call_with_a_wrapped_job(
    option: str,
) -> None:
    message = "job function must return an awaitable (got 42 from not_async)"
    kwargs: dict[str, Any] = (
        {"initializer": lambda: None} if option == "initializer" else {"job_timeout": 10}
    )
    async with CoroutineExecutor(max_workers=1, **kwargs) as exe:
        with pytest.raises(TypeError, match=exactly(message)):
            await exe.submit(not_async, 1)
        assert await (await exe.submit(fetch, "next")) == "next"


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_map_fn_returning_a_non_awaitable_fails_the_iteration(ordered: bool) -> None:
    """The input's job error (as a queued job's is), counted and noted: the map calls fn
    as the job starts (semantics.rst, "What is checked before fn is called")."""
    message = "job function must return an awaitable (got 42 from not_async)"
    async with CoroutineExecutor(max_workers=2, suppress_task_errors=True) as exe:
        it = (exe.map if ordered else exe.map_unordered)(not_async, [1, 2])
        with pytest.raises(TypeError) as info:
            await it.__anext__()
        assert str(info.value) == message
        assert info.value.__notes__ == ["coroexecutor: job not_async(1) failed (map input #0)"]
        assert exe.stats.failed == 1
        assert await (await exe.submit(fetch, "ok")) == "ok"


async def test_queued_fn_returning_a_non_awaitable_fails_its_future() -> None:
    message = "job function must return an awaitable (got 42 from not_async)"
    release = asyncio.Event()
    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
        await exe.submit(release.wait)
        fut = exe.submit_nowait(not_async, 1)
        release.set()
        with pytest.raises(TypeError) as info:
            await fut
    # (pytest's match= reads the note too: the job is named there, not in the message)
    assert str(info.value) == message
    assert info.value.__notes__ == ["coroexecutor: job not_async(1) failed"]
    assert exe.stats == ExecutorStats(2, 0, 0, 1, 1, 0)


async def test_fn_raising_when_called_raises_from_submit() -> None:
    error = ZeroDivisionError("while building the job")

    def broken(x: object) -> Any:
        raise error

    async with CoroutineExecutor(max_workers=1) as exe:
        with pytest.raises(ZeroDivisionError) as excinfo:
            await exe.submit(broken, 1)
        assert excinfo.value is error
        assert await (await exe.submit(fetch, "ok")) == "ok"


#
# Constructor arguments
#


@pytest.mark.parametrize("max_workers", [0, -1, -1000])
def test_max_workers_below_one(max_workers: int) -> None:
    with pytest.raises(ValueError, match=exactly("max_workers must be greater than 0")):
        CoroutineExecutor(max_workers=max_workers)


@pytest.mark.parametrize("max_workers", ["3", 2.5, True, [4]])
def test_max_workers_of_the_wrong_type(max_workers: object) -> None:
    with pytest.raises(
        TypeError, match=exactly(f"max_workers must be an int (got {max_workers!r})")
    ):
        CoroutineExecutor(max_workers=max_workers)  # type: ignore[arg-type]


async def test_max_workers_setter_validates_too() -> None:
    async with CoroutineExecutor(max_workers=3) as exe:
        with pytest.raises(ValueError, match=exactly("max_workers must be greater than 0")):
            exe.max_workers = 0
        with pytest.raises(TypeError, match=exactly("max_workers must be an int (got '5')")):
            exe.max_workers = "5"  # type: ignore[assignment]
        assert exe.max_workers == 3


@pytest.mark.parametrize("initializer", [42, "setup", object()])
def test_bad_initializer(initializer: object) -> None:
    with pytest.raises(
        TypeError, match=exactly(f"initializer must be a callable or None (got {initializer!r})")
    ):
        CoroutineExecutor(initializer=initializer)  # type: ignore[arg-type]


async def test_max_workers_none_means_the_default() -> None:
    # As LoopExecutor(max_workers=None) and ThreadPoolExecutor(max_workers=None) accept.
    exe = CoroutineExecutor(max_workers=None)
    assert exe.max_workers == CoroutineExecutor().max_workers == 1000
    async with exe:
        assert await (await exe.submit(fetch, "ok")) == "ok"
    async with CoroutineExecutor(None) as positional:
        assert positional.max_workers == 1000
        positional.max_workers = 2
        positional.max_workers = None  # the setter takes what the constructor takes
        assert positional.max_workers == 1000


def test_defaults_construct_without_a_loop() -> None:
    # Construction needs no running loop; the executor binds to one on first use.
    exe = CoroutineExecutor()
    assert exe.max_workers == 1000
    assert exe.stats == ExecutorStats(0, 0, 0, 0, 0, 0)


#
# After shutdown
#


async def every_entry_point_refuses(exe: CoroutineExecutor) -> None:
    with pytest.raises(RuntimeError, match=exactly(SHUTDOWN)):
        await exe.submit(fetch, "x")
    with pytest.raises(RuntimeError, match=exactly(SHUTDOWN)):
        exe.submit_nowait(fetch, "x")
    with pytest.raises(RuntimeError, match=exactly(SHUTDOWN)):
        exe.map(fetch, ["x"])
    with pytest.raises(RuntimeError, match=exactly(SHUTDOWN)):
        exe.map_unordered(fetch, ["x"])


async def test_submit_after_shutdown_inside_the_block(loop_kind: str) -> None:
    async with CoroutineExecutor() as exe:
        await exe.submit(fetch, "before")
        await exe.shutdown()
        await every_entry_point_refuses(exe)
    await every_entry_point_refuses(exe)
    assert exe.stats.submitted == 1


async def test_submit_after_the_block(loop_kind: str) -> None:
    async with CoroutineExecutor() as exe:
        pass
    await every_entry_point_refuses(exe)


async def test_submit_after_shutdown_without_async_with(loop_kind: str) -> None:
    exe = CoroutineExecutor()
    await exe.submit(fetch, "x")
    await exe.shutdown()
    await every_entry_point_refuses(exe)

    never_used = CoroutineExecutor()
    await never_used.shutdown()
    await every_entry_point_refuses(never_used)


async def test_coroutine_object_after_shutdown_leaves_no_warning() -> None:
    async with CoroutineExecutor() as exe:
        pass
    coro = fetch("x")
    with pytest.raises((RuntimeError, TypeError)):
        await exe.submit(coro)  # type: ignore[arg-type]
    coro.close()  # whichever error won, the caller still owns a refused coroutine


#
# Entering twice
#


async def test_entering_twice_is_refused(loop_kind: str) -> None:
    exe = CoroutineExecutor()
    async with exe:
        with pytest.raises(RuntimeError, match=re.escape("has already been used")):
            await exe.__aenter__()
        # The refused entry did not disturb the block that is running.
        assert await (await exe.submit(fetch, "inner")) == "inner"
    with pytest.raises(
        RuntimeError, match=re.escape("has already been used; create a new executor")
    ):
        async with exe:
            pass


async def test_entering_after_use_without_async_with_is_refused() -> None:
    exe = CoroutineExecutor()
    await exe.submit(fetch, "x")
    with pytest.raises(RuntimeError, match=re.escape("has already been used")):
        await exe.__aenter__()
    await exe.shutdown()


#
# Sync syntax on the async API: the stock error, plus the way out
#


def test_plain_with_says_async_with_or_loop_executor() -> None:
    message = (
        "'CoroutineExecutor' object does not support the context manager protocol:"
        " use 'async with' (in async code), or LoopExecutor from sync code"
    )
    exe = CoroutineExecutor()
    with pytest.raises(TypeError, match=exactly(message)), exe:  # type: ignore[attr-defined]
        pass  # pragma: no cover
    assert exe.stats == ExecutorStats(0, 0, 0, 0, 0, 0)


async def test_plain_with_inside_async_code_leaves_the_executor_usable() -> None:
    exe = CoroutineExecutor()
    with pytest.raises(TypeError, match=re.escape("use 'async with'")), exe:  # type: ignore[attr-defined]
        pass  # pragma: no cover
    async with exe:  # the mistake did not use it up
        assert await (await exe.submit(fetch, "ok")) == "ok"


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_plain_for_over_a_map_says_async_for_or_loop_executor(ordered: bool) -> None:
    message = (
        "'MapIterator' object is not iterable: use 'async for' (in async code),"
        " or LoopExecutor.map() from sync code"
    )
    started = []

    async def job(n: int) -> int:
        started.append(n)
        return n

    async with CoroutineExecutor(max_workers=2) as exe:
        it = (exe.map if ordered else exe.map_unordered)(job, range(3))
        with pytest.raises(TypeError, match=exactly(message)):
            for _ in it:  # type: ignore[attr-defined]
                pass  # pragma: no cover
        with pytest.raises(TypeError, match=exactly(message)):
            list(it)  # type: ignore[call-overload]
        assert started == []  # nothing started: a map starts jobs as it is consumed
        assert sorted([r async for r in it]) == [0, 1, 2]  # and it still works
    assert not isinstance(it, Iterator)  # no __next__: only the hint was added


#
# Runtime types of what the API returns
#


async def test_returned_objects_have_the_documented_types() -> None:
    release = asyncio.Event()
    async with CoroutineExecutor(max_workers=1) as exe:
        task = await exe.submit(release.wait)
        assert isinstance(task, asyncio.Task)
        queued = exe.submit_nowait(fetch, "q")
        assert isinstance(queued, asyncio.Future)
        assert not isinstance(queued, asyncio.Task)
        it = exe.map(fetch, [])
        assert isinstance(it, MapIterator)
        await it.aclose()
        assert isinstance(exe.stats, ExecutorStats)
        release.set()
    assert await queued == "q"
