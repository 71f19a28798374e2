"""Type tests: ``mypy --strict`` must accept this file (tests/typing/test_type_checkers.py runs it).

Nothing here runs: the functions are only type-checked. Each ``assert_type`` pins what an
editor infers for a call of the public API. Each ``# type: ignore[code]`` marks a call
that must be rejected; ``warn_unused_ignores`` (pyproject.toml) turns an ignore that is no
longer needed, because the call started to type-check, into an error.
"""

# pyright: strict

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import random
from collections.abc import AsyncIterator, Callable, Iterator

from typing_extensions import assert_type

from coroexecutor import CoroutineExecutor, ExecutorStats, LoopExecutor, MapIterator, Retry
from coroexecutor.distributed import DaskExecutor


async def fetch_int(n: int) -> int:
    await asyncio.sleep(0)
    return n


async def fetch_text(url: str, *, retries: int = 0) -> str:
    await asyncio.sleep(0)
    return url * (retries + 1)


def blocking_str(n: int) -> str:
    return str(n)


def blocking_none() -> None:
    pass


class Fetcher:
    """A callable object with an async __call__: a job function like any other."""

    async def __call__(self, n: int) -> bytes:
        await asyncio.sleep(0)
        return bytes(n)


async def numbers() -> AsyncIterator[int]:
    yield 1


async def fetch_bytes(url: str) -> bytes:
    await asyncio.sleep(0)
    return url.encode()


async def fetch_page(url: str, page: int) -> bytes:
    await asyncio.sleep(0)
    return url.encode() * page


async def fetch_range(url: str, start: int, stop: float) -> bytes:
    await asyncio.sleep(0)
    return url.encode()[start : int(stop)]


async def total(*parts: int) -> int:
    await asyncio.sleep(0)
    return sum(parts)


def blocking_pair(n: int, label: str) -> str:
    return f"{label}{n}"


def blocking_sum(*parts: int) -> int:
    return sum(parts)


#
# CoroutineExecutor
#


async def check_coroutine_executor(flag: bool) -> None:
    async with CoroutineExecutor(max_workers=10) as exe:
        assert_type(exe, CoroutineExecutor)

        task = await exe.submit(fetch_int, 1)
        assert_type(task, asyncio.Task[int])
        assert_type(await task, int)
        assert_type(await exe.submit(fetch_text, "u", retries=2), asyncio.Task[str])

        assert_type(await exe.submit(Fetcher(), 3), asyncio.Task[bytes])
        assert_type(await exe.submit(functools.partial(fetch_int, 1)), asyncio.Task[int])

        assert_type(exe.submit_nowait(fetch_int, 1), asyncio.Future[int])
        assert_type(exe.submit_nowait(fetch_text, "u"), asyncio.Future[str])

        results = exe.map(fetch_int, range(3))
        assert_type(results, MapIterator[int])
        async for value in results:
            assert_type(value, int)
        assert_type(exe.map(fetch_int, range(3), buffersize=2), MapIterator[int])
        assert_type(exe.map_unordered(fetch_int, range(3)), MapIterator[int])
        assert_type(exe.map(fetch_int, numbers()), MapIterator[int])  # async input
        async with exe.map(fetch_int, range(3)) as in_order:
            assert_type(in_order, MapIterator[int])

        assert_type(exe.stats, ExecutorStats)
        assert_type(exe.stats.done, int)
        assert_type(exe.max_workers, int)
        exe.max_workers = 20

        # Wrong argument types and counts are rejected.
        await exe.submit(fetch_int, "one")  # type: ignore[arg-type]
        await exe.submit(fetch_int)  # type: ignore[call-arg]
        await exe.submit(fetch_text, "u", retries="2")  # type: ignore[arg-type]
        exe.submit_nowait(fetch_int, 1, 2)  # type: ignore[call-arg]
        # A coroutine object instead of the function and its arguments.
        await exe.submit(fetch_int(1))  # type: ignore[arg-type]
        exe.submit_nowait(fetch_int(1))  # type: ignore[arg-type]
        exe.map(fetch_int(1), range(3))  # type: ignore[call-overload]
        # A plain function: the async executor needs something that returns an awaitable.
        await exe.submit(blocking_str, 1)  # type: ignore[arg-type]
        exe.map(blocking_str, range(3))  # type: ignore[arg-type]
        exe.max_workers = "10"  # type: ignore[assignment]
        # Sync syntax on the async API: refused at run time with the way out, and here.
        for _ in exe.map(fetch_int, range(3)):  # type: ignore[attr-defined]
            pass
        with exe:  # type: ignore[attr-defined]
            pass

        # With return_exceptions=True a job's exception is yielded in place of its result.
        assert_type(
            exe.map(fetch_int, range(3), return_exceptions=True),
            MapIterator[int | BaseException],
        )
        assert_type(
            exe.map_unordered(fetch_int, range(3), return_exceptions=True),
            MapIterator[int | BaseException],
        )
        async for outcome in exe.map(fetch_int, range(3), return_exceptions=True):
            assert_type(outcome, int | BaseException)

        # A plain bool for return_exceptions (not a Literal) takes the bool overloads.
        either = exe.map(fetch_int, range(3), return_exceptions=flag)
        assert_type(either, MapIterator[int | BaseException])
        either_unordered = exe.map_unordered(
            fetch_int, range(3), return_exceptions=flag
        )
        assert_type(either_unordered, MapIterator[int | BaseException])

    CoroutineExecutor(max_workers="10")  # type: ignore[arg-type]


async def check_map_inputs(urls: list[str], flag: bool) -> None:
    """map() and map_unordered() check each input's items against fn's parameter in that
    place, as the builtin map does, for up to three inputs; the result types stay."""
    async with CoroutineExecutor() as exe:
        assert_type(exe.map(fetch_bytes, urls), MapIterator[bytes])
        assert_type(exe.map(fetch_bytes, ["a"], return_exceptions=True),
                    MapIterator[bytes | BaseException])
        assert_type(exe.map(fetch_page, urls, range(3)), MapIterator[bytes])
        assert_type(exe.map(fetch_page, urls, numbers()), MapIterator[bytes])  # async input
        assert_type(exe.map(fetch_range, urls, [0], [2.0]), MapIterator[bytes])
        assert_type(exe.map(fetch_range, urls, range(3), [1]), MapIterator[bytes])  # int: float
        assert_type(exe.map(total, [1], [2], [3], [4], [5]), MapIterator[int])  # unchecked
        assert_type(exe.map(functools.partial(fetch_page, "u"), range(3)), MapIterator[bytes])
        assert_type(exe.map(functools.partial(fetch_text, retries=1), urls), MapIterator[str])
        assert_type(exe.map(Fetcher(), range(3), buffersize=4, retry=None), MapIterator[bytes])
        assert_type(exe.map(fetch_page, urls, range(3), return_exceptions=flag),
                    MapIterator[bytes | BaseException])
        assert_type(exe.map_unordered(fetch_page, urls, range(3)), MapIterator[bytes])
        assert_type(exe.map_unordered(fetch_range, urls, [0], [2.0], return_exceptions=True),
                    MapIterator[bytes | BaseException])
        assert_type(exe.map_unordered(fetch_bytes, urls, retry=Retry()), MapIterator[bytes])
        async for page in exe.map(fetch_page, urls, range(3)):
            assert_type(page, bytes)

        # Items of the wrong type, and too many or too few inputs for fn.
        exe.map(fetch_bytes, [1, 2])  # type: ignore[arg-type]
        exe.map(fetch_bytes, numbers())  # type: ignore[arg-type]
        exe.map(fetch_bytes, ["a"], ["b"])  # type: ignore[arg-type]
        exe.map(fetch_page, urls)  # type: ignore[arg-type]
        exe.map(fetch_page, range(3), urls)  # type: ignore[arg-type]
        exe.map(fetch_range, urls, [0], ["2"])  # type: ignore[arg-type]
        exe.map(fetch_bytes, [1], return_exceptions=True)  # type: ignore[arg-type]
        exe.map_unordered(fetch_bytes, [1, 2])  # type: ignore[arg-type]
        exe.map_unordered(fetch_page, urls, urls, return_exceptions=flag)  # type: ignore[arg-type]
        exe.map(fetch_bytes)  # type: ignore[call-overload]
    CoroutineExecutor(max_workers=None)  # the default, as for LoopExecutor
    CoroutineExecutor(10, True)  # type: ignore[call-arg]


#
# ThreadedLoopExecutor / LoopExecutor
#


def check_loop_executor() -> None:
    with LoopExecutor(max_workers=4) as exe:
        assert_type(exe, LoopExecutor)
        assert_type(exe.submit(fetch_int, 1), concurrent.futures.Future[int])
        assert_type(exe.submit(fetch_text, "u", retries=1), concurrent.futures.Future[str])
        assert_type(exe.submit(blocking_str, 1), concurrent.futures.Future[str])
        assert_type(exe.submit(blocking_none), concurrent.futures.Future[None])
        assert_type(exe.submit(fetch_int, 1).result(), int)
        assert_type(exe.submit(Fetcher(), 1), concurrent.futures.Future[bytes])
        # A plain callable that returns an awaitable: the awaitable's result.
        assert_type(exe.submit(lambda: fetch_int(1)), concurrent.futures.Future[int])

        assert_type(exe.map(fetch_int, range(3)), Iterator[int])
        assert_type(exe.map(blocking_str, range(3)), Iterator[str])
        assert_type(exe.map(fetch_int, range(3), timeout=1.0), Iterator[int])

        assert_type(exe.stats, ExecutorStats)
        assert_type(exe.max_workers, int)

        # Usable wherever the stdlib expects an Executor.
        executor: concurrent.futures.Executor = exe
        assert_type(executor.submit(blocking_str, 1), concurrent.futures.Future[str])

        # Wrong arguments match neither overload (coroutine function, plain function).
        exe.submit(fetch_int, "one")  # type: ignore[call-overload]
        exe.submit(blocking_str)  # type: ignore[call-overload]
        exe.submit(fetch_text, "u", retries="1")  # type: ignore[arg-type]
        exe.submit(fetch_int(1))  # type: ignore[call-overload]
        exe.map(fetch_int(1), range(3))  # type: ignore[call-overload]


def check_loop_executor_map_inputs(urls: list[str], base: concurrent.futures.Executor) -> None:
    with LoopExecutor() as exe:
        assert_type(exe.map(blocking_str, range(3), timeout=1.0, buffersize=2), Iterator[str])
        assert_type(exe.map(blocking_pair, range(3), urls), Iterator[str])
        assert_type(exe.map(fetch_page, urls, range(3)), Iterator[bytes])
        assert_type(exe.map(fetch_range, urls, [0], [2.0], chunksize=4), Iterator[bytes])
        assert_type(exe.map(blocking_sum, [1], [2], [3], [4], [5]), Iterator[int])  # unchecked
        assert_type(exe.map(total, [1], [2], [3], [4]), Iterator[int])
        assert_type(exe.map(functools.partial(blocking_pair, label="n"), [1]), Iterator[str])
        assert_type(exe.map(str.upper, urls, retry=Retry()), Iterator[str])
        assert_type(exe.map(blocking_none), Iterator[None])  # no input, as Executor.map allows

        exe.map(blocking_str, ["a"])  # type: ignore[arg-type]
        exe.map(fetch_bytes, [1])  # type: ignore[arg-type]
        exe.map(blocking_pair, urls, range(3))  # type: ignore[arg-type]
        exe.map(blocking_str, [1], [2])  # type: ignore[arg-type]
        exe.map(fetch_range, urls, [0], ["2"], timeout=1.0)  # type: ignore[arg-type]

    # Through the Executor type, map() is typeshed's: inputs are not checked there.
    assert_type(base.map(blocking_str, ["a"]), Iterator[str])


def check_dask_executor_map(exe: DaskExecutor, urls: list[str], flag: bool) -> None:
    """DaskExecutor.map types its results as the other executors do: the awaited result of
    a coroutine function, a plain function's result; with return_exceptions any bool but
    False, results of type T | BaseException (a job's error is yielded in its place)."""
    assert_type(exe.map(fetch_int, range(3)), Iterator[int])
    assert_type(exe.map(blocking_str, range(3), chunksize=10), Iterator[str])
    assert_type(exe.map(Fetcher(), range(3), timeout=1.0), Iterator[bytes])
    assert_type(exe.map(functools.partial(fetch_page, "u"), range(3)), Iterator[bytes])
    assert_type(exe.map(str.upper, urls, retry=Retry()), Iterator[str])
    for page in exe.map(fetch_bytes, urls):
        assert_type(page, bytes)

    assert_type(exe.map(fetch_int, range(3), return_exceptions=False), Iterator[int])
    assert_type(exe.map(fetch_int, range(3), return_exceptions=True),
                Iterator[int | BaseException])
    assert_type(exe.map(blocking_str, range(3), return_exceptions=True),
                Iterator[str | BaseException])
    assert_type(exe.map(blocking_str, range(3), return_exceptions=flag, retry=None),
                Iterator[str | BaseException])
    for outcome in exe.map(fetch_bytes, urls, return_exceptions=True):
        assert_type(outcome, bytes | BaseException)

    # Two and three inputs (items checked), four and more (not checked): typed results.
    assert_type(exe.map(fetch_page, urls, range(3)), Iterator[bytes])
    assert_type(exe.map(blocking_pair, range(3), urls, buffersize=8), Iterator[str])
    assert_type(exe.map(fetch_page, urls, range(3), return_exceptions=True),
                Iterator[bytes | BaseException])
    assert_type(exe.map(fetch_range, urls, [0], [2.0]), Iterator[bytes])
    assert_type(exe.map(fetch_range, urls, range(3), [1], return_exceptions=flag),
                Iterator[bytes | BaseException])
    assert_type(exe.map(total, [1], [2], [3], [4]), Iterator[int])
    assert_type(exe.map(blocking_sum, [1], [2], [3], [4], [5], timeout=1.0), Iterator[int])
    assert_type(exe.map(total, [1], [2], [3], [4], [5], return_exceptions=True),
                Iterator[int | BaseException])
    assert_type(exe.map(blocking_sum, [1], [2], [3], [4], return_exceptions=flag),
                Iterator[int | BaseException])
    assert_type(exe.map(blocking_none), Iterator[None])  # no input, as Executor.map allows

    # Items of the wrong type for fn, and wrong options.
    exe.map(blocking_str, ["a"])  # type: ignore[arg-type]
    exe.map(fetch_bytes, [1], return_exceptions=True)  # type: ignore[arg-type]
    exe.map(fetch_page, range(3), urls)  # type: ignore[arg-type]
    exe.map(fetch_page, urls, urls, return_exceptions=flag)  # type: ignore[arg-type]
    exe.map(blocking_str, [1], [2], retry=None)  # type: ignore[arg-type]
    exe.map(fetch_range, urls, [0], ["2"], chunksize=4)  # type: ignore[arg-type]
    exe.map(blocking_str, [1], retry=3)  # type: ignore[call-overload]
    exe.map(blocking_str, [1], return_exceptions="yes")  # type: ignore[call-overload]
    exe.map(fetch_int(1), range(3))  # type: ignore[call-overload]

    # A result used as what it is not (when results were Any, none of these was reported).
    blocking_str(next(exe.map(fetch_bytes, urls)))  # type: ignore[arg-type]
    exe.map(fetch_bytes, exe.map(fetch_int, [1]))  # type: ignore[arg-type]
    first: str = next(exe.map(fetch_bytes, urls))  # type: ignore[assignment]
    length = len(next(exe.map(blocking_sum, [1], [2], [3], [4])))  # type: ignore[arg-type]
    pages: Iterator[bytes]
    pages = exe.map(fetch_bytes, urls, return_exceptions=flag)  # type: ignore[assignment]
    for value in exe.map(fetch_int, [1], return_exceptions=True):
        blocking_str(value)  # type: ignore[arg-type]  # it may be a job's error
    del first, length, pages


async def check_loop_executor_from_async_code() -> None:
    async with LoopExecutor() as exe:
        assert_type(exe, LoopExecutor)
        assert_type(await asyncio.wrap_future(exe.submit(fetch_int, 1)), int)


def check_retry_policy() -> None:
    retry = Retry(attempts=5, on=(OSError, KeyError), backoff=0.5, rng=random.Random(1))
    assert_type(retry(1, OSError()), float | None)
    assert_type(retry.on, tuple[type[Exception], ...])
    Retry(on=ConnectionError, jitter=False)

    # A Retry is a policy, as is any function of the same shape.
    def retry_after(attempt: int, exc: BaseException) -> float | None:
        return retry(attempt, exc)

    policies: list[Callable[[int, BaseException], float | None]] = [retry, retry_after]
    assert_type(policies, list[Callable[[int, BaseException], float | None]])

    Retry(on="OSError")  # type: ignore[arg-type]
    Retry(attempts=2.5)  # type: ignore[arg-type]
    Retry(rng=42)  # type: ignore[arg-type]
    retry.attempts = 4  # type: ignore[misc]


async def check_retry_options() -> None:
    def policy(attempt: int, exc: BaseException) -> float | None:
        return None

    async with CoroutineExecutor(retry=Retry(), annotate_errors=False) as exe:
        assert_type(exe.map(fetch_int, range(3), retry=policy), MapIterator[int])
        assert_type(exe.map_unordered(fetch_int, range(3), retry=None), MapIterator[int])
        exe.map(fetch_int, range(3), retry=3)  # type: ignore[call-overload]
    CoroutineExecutor(retry=policy)
    CoroutineExecutor(retry="Retry()")  # type: ignore[arg-type]
    LoopExecutor(annotate_errors=False).shutdown()
    with LoopExecutor(retry=Retry()) as bridge:
        assert_type(bridge.map(fetch_int, range(3), retry=policy), Iterator[int])
        assert_type(bridge.map(str.upper, ["a"], retry=None), Iterator[str])
        bridge.map(fetch_int, range(3), retry=3)  # type: ignore[call-overload]
    LoopExecutor(retry=policy).shutdown()
    LoopExecutor(retry=1.5)  # type: ignore[arg-type]
