"""An async input that holds ``asyncio.timeout()`` open across its ``yield`` and catches
its expiry is read on (docs/semantics.rst, "How a map reads an async input"): every item
it yields, the ones it yields back from the cancel thrown into it included, is read once
and in input order, however many times its timeout expires before the map reads on.

Each timeout is expired by hand (``reschedule()`` to now) at a point the test chooses:
the reader waits for room (the window full of parked jobs) or in another input's read.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor

pytestmark = [
    pytest.mark.timeout(15),
    pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is new in 3.11"),
]


class Expiring:
    """An input of ``count`` items, each yielded inside its own ``asyncio.timeout(None)``
    (``scopes``, by item) that the input catches, going on with the next item. ``at[i]``
    is set as it yields item i (the reader takes it in that step), ``expired`` lists the
    items whose yield met the expiry, ``ended`` is set once it has returned. With
    ``catch=k``, it catches only the first k expiries: the next one is its error."""

    def __init__(self, count: int, *, catch: int | None = None) -> None:
        self.count, self.catch = count, catch
        self.scopes: dict[int, Any] = {}
        self.at = [asyncio.Event() for _ in range(count)]
        self.expired: list[int] = []
        self.ended = asyncio.Event()

    async def __call__(self) -> AsyncIterator[int]:
        for i in range(self.count):
            try:
                async with asyncio.timeout(None) as scope:
                    self.scopes[i] = scope
                    self.at[i].set()
                    yield i
            except TimeoutError:
                if len(self.expired) == self.catch:
                    raise
                self.expired.append(i)
        self.ended.set()

    async def expire(self, i: int) -> None:
        """Expire item i's timeout as the input waits at its yield, and wait until the
        reader has thrown that in and the input has yielded again or returned."""
        await self.at[i].wait()  # it yielded i: the reader has taken it and waits for room
        self.scopes[i].reschedule(asyncio.get_running_loop().time())  # expires now
        await (self.at[i + 1].wait() if i + 1 < self.count else self.ended.wait())


async def _collect(results: AsyncIterator[Any]) -> list[Any]:
    return [r async for r in results]


@pytest.mark.parametrize("expiries", [1, 2])
@pytest.mark.parametrize("last", [False, True], ids=["reads_on", "ends_at_last"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_items_yielded_back_from_expiries_are_read_once_in_order(
    loop_kind: str, expiries: int, last: bool, ordered: bool
) -> None:
    """Regression (brk33 f2): with the window full, the input's timeout expired at its
    yield, once or again before the map read on; each time the input caught it and
    yielded its next item (athrow()'s return value), held for the next read. A second
    expiry put its item AHEAD of the one held before (map() yielded [0, 1, 3, 2]), and an
    input that returned at an expiry lost every item still held (map() ended at [0, 1]).
    ``ends_at_last``: the last expiry meets the input's last item, so it returns there."""
    count = expiries + 1 if last else 4
    source = Expiring(count)
    started: list[int] = []
    release = asyncio.Event()

    async def job(n: int) -> int:
        started.append(n)
        if n == 0:
            for i in range(1, expiries + 1):  # item 1 read: the window (2) is full
                await source.expire(i)
            release.set()
        await release.wait()
        return n

    async with CoroutineExecutor(max_workers=2) as exe:
        run = exe.map if ordered else exe.map_unordered
        results = await _collect(run(job, source()))
    assert source.expired == list(range(1, expiries + 1))
    assert started == list(range(count))  # every item became a job, in input order
    assert (results if ordered else sorted(results)) == list(range(count))
    assert exe.stats.submitted == count
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("expiries", [1, 2], ids=["end", "end_held"])
async def test_an_input_ending_at_an_expiry_leaves_no_reference_cycle(
    loop_kind: str, expiries: int
) -> None:
    """The input returned at its last expiry. ``end_held``: item 2 still held, so its end
    is held behind it, with the reader's frames in its traceback, which hold the held
    items (the map ended at [0, 1] before: item 2 lost). ``end``: nothing held; on
    Python 3.12 and later the input's finished frame keeps pass_on's frame (its f_back)
    and so the cancel thrown in, whose traceback holds that frame: a cycle. Nothing of
    the map's reading is left for the cycle collector once the map ends."""
    source = Expiring(expiries + 1)
    release = asyncio.Event()

    async def job(n: int) -> int:
        if n == 0:
            for i in range(1, expiries + 1):  # it returns at the last one
                await source.expire(i)
            release.set()
        await release.wait()
        return n

    async with CoroutineExecutor(max_workers=2) as exe:
        await exe.submit(job, -1)  # warm up: lazily created objects
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            assert await _collect(exe.map(job, source())) == list(range(expiries + 1))
            gc.collect()
            assert not gc.garbage
        finally:
            gc.set_debug(0)
            gc.garbage.clear()


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_an_error_at_an_expiry_comes_after_the_item_held_before_it(
    loop_kind: str, ordered: bool
) -> None:
    """Regression: the input caught its first expiry and yielded item 2 back (held, the
    window full); its second expiry it did not catch. Its TimeoutError ended the reading
    at once, and item 2, which it had yielded before it raised, never became a job."""
    source = Expiring(4, catch=1)
    called: list[int] = []  # the items the map started a job for (it calls job() then)
    release = asyncio.Event()

    async def run(n: int) -> int:
        if n == 0:
            await source.expire(1)
            await source.at[2].wait()
            source.scopes[2].reschedule(asyncio.get_running_loop().time())  # not caught
            release.set()
        await release.wait()
        return n

    def job(n: int) -> Coroutine[Any, Any, int]:
        called.append(n)
        return run(n)

    with pytest.raises(TimeoutError):
        async with CoroutineExecutor(max_workers=2) as exe:
            map_ = exe.map if ordered else exe.map_unordered
            await _collect(map_(job, source()))
    assert source.expired == [1]
    # Item 2 was read before the error, as an input read at once is: its job started
    # (and the error cancelled it, maybe before its first step).
    assert called == [0, 1, 2]
    assert exe.stats.submitted == 3
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


class Gated:
    """An async iterator object (not a generator: a cancel passes through its read and it
    reads on) of ``b0``, ``b1``, ...: its read of item ``stop_at`` waits for ``gate``
    (``waiting`` is set then)."""

    def __init__(self, count: int, stop_at: int) -> None:
        self.count, self.stop_at, self.n = count, stop_at, 0
        self.waiting, self.gate = asyncio.Event(), asyncio.Event()

    def __aiter__(self) -> Gated:
        return self

    async def __anext__(self) -> str:
        if self.n == self.count:
            raise StopAsyncIteration
        if self.n == self.stop_at:
            self.waiting.set()
            await self.gate.wait()
        self.n += 1
        return f"b{self.n - 1}"


async def pair(*values: Any) -> tuple[Any, ...]:
    return values


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_an_expiry_in_a_later_inputs_read_keeps_the_items_read_before_it(
    loop_kind: str, ordered: bool
) -> None:
    """Regression: zipped inputs; the first one's timeout expired while the reader waited
    in the second one's read (the first one at its yield of item 1). The cancel cut that
    read short and item 1, already read, was dropped: the map paired item 2 (the one the
    first input yielded back) with b1."""
    first, second = Expiring(3), Gated(3, stop_at=1)

    async def drive() -> None:
        await second.waiting.wait()  # the reader has item 1 of the first and waits here
        await first.expire(1)
        second.gate.set()

    async with CoroutineExecutor(max_workers=4) as exe:
        driver = asyncio.ensure_future(drive())
        run = exe.map if ordered else exe.map_unordered
        results = await _collect(run(pair, first(), second))
        await driver
    assert first.expired == [1]
    expected = [(0, "b0"), (1, "b1"), (2, "b2")]
    assert (results if ordered else sorted(results)) == expected


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_an_input_ended_by_another_inputs_cancel_raises_not_a_quiet_end(
    loop_kind: str, ordered: bool
) -> None:
    """Regression (brk34): zipped async inputs, the second one's timeout expired at its
    yield. Which input holds the expiring context cannot be told, so the cancel is
    thrown into the inputs in order: the first, which holds none, ended with it, and the
    map then ended quietly after one result, the rest of both inputs dropped. It now
    raises a RuntimeError that says so (a limit, documented: hold such a context in the
    first async input)."""
    first_ended: list[BaseException] = []

    async def plain() -> AsyncIterator[str]:
        try:
            for i in range(3):
                yield f"p{i}"
        except BaseException as exc:
            first_ended.append(exc)
            raise

    second = Expiring(3)
    release = asyncio.Event()

    async def job(a: str, b: int) -> tuple[str, int]:
        if b == 0:
            await second.expire(1)  # item 1 read: the window (2) is full
            release.set()
        await release.wait()
        return a, b

    got: list[tuple[str, int]] = []
    async with CoroutineExecutor(max_workers=2) as exe:
        run = exe.map if ordered else exe.map_unordered
        with pytest.raises(RuntimeError, match="map input 0 was closed by the cancel of a"):
            async for result in run(job, plain(), second()):
                got.append(result)
    assert [type(exc) for exc in first_ended] == [asyncio.CancelledError]
    assert set(got) <= {("p0", 0), ("p1", 1)}
