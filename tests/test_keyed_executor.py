"""Per-key limits on CoroutineExecutor (``key=``, ``max_per_key=``), through the executor.

Jobs park on futures the test resolves, so every ordering is set by the test, never by
time. The loop-free KeyedLine has its own tests (tests/test_keyed.py); here: the limits
hold for running jobs, a full key holds back no other key, FIFO within a key, errors of
``key()`` reach the caller, cancellation leaves no state behind, and map's window.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import tracemalloc
from collections.abc import Hashable
from typing import Any

import pytest

from coroexecutor import Adaptive, CoroutineExecutor, LoopExecutor, Retry

pytestmark = pytest.mark.timeout(60)


class Park:
    """Jobs that wait for the test: ``running`` per key, their start order, and one
    future per job to finish it."""

    def __init__(self) -> None:
        self.running: dict[Hashable, int] = {}
        self.peak: dict[Hashable, int] = {}
        self.total = self.peak_total = 0
        self.started: list[Any] = []
        self.gates: dict[Any, asyncio.Future[None]] = {}

    def gate(self, name: Any) -> asyncio.Future[None]:
        if name not in self.gates:
            self.gates[name] = asyncio.get_running_loop().create_future()
        return self.gates[name]

    async def job(self, key: Hashable, name: Any = None) -> Any:
        self.running[key] = self.running.get(key, 0) + 1
        self.peak[key] = max(self.peak.get(key, 0), self.running[key])
        self.total += 1
        self.peak_total = max(self.peak_total, self.total)
        self.started.append(name)
        try:
            await self.gate(name)
        finally:
            self.running[key] -= 1
            self.total -= 1
        return name

    def finish(self, name: Any) -> None:
        self.gate(name).set_result(None)


async def turns(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def first(key: Hashable, name: Any = None) -> Hashable:
    return key


def assert_no_key_state(exe: CoroutineExecutor) -> None:
    slots: Any = exe._slots
    line = slots.line
    assert slots.jobs == {}
    assert (line._running, line._lines, line._limits, line._by_waiting) == ({}, {}, {}, {})
    assert len(line) == 0 and line.active_keys == 0


#
# Construction
#


def test_key_and_max_per_key_go_together() -> None:
    with pytest.raises(TypeError, match="max_per_key needs key="):
        CoroutineExecutor(max_per_key=2)
    with pytest.raises(TypeError, match="key= needs max_per_key="):
        CoroutineExecutor(key=first)
    with pytest.raises(TypeError, match="key must be a callable"):
        CoroutineExecutor(key="host", max_per_key=2)  # type: ignore[arg-type]  # the mistake tested
    with pytest.raises(ValueError, match="max_per_key must be greater than 0"):
        CoroutineExecutor(key=first, max_per_key=0)
    with pytest.raises(TypeError, match="max_per_key must be an int or a callable"):
        CoroutineExecutor(key=first, max_per_key=1.5)  # type: ignore[arg-type]  # the mistake tested


async def test_stats_without_key_say_none() -> None:
    async with CoroutineExecutor(4) as exe:
        assert exe.stats.active_keys is None and exe.stats.busiest_key is None


#
# The limits
#


async def test_never_more_than_max_per_key_of_one_key_nor_max_workers_in_all(
    loop_kind: str,
) -> None:
    park = Park()
    names = [(k, i) for i in range(12) for k in "abcd"]
    async with CoroutineExecutor(6, key=first, max_per_key=2) as exe:
        futures = [exe.submit_nowait(park.job, k, (k, i)) for k, i in names]
        await turns()
        assert park.total == 6 and all(n <= 2 for n in park.running.values())
        for name in names:
            while not park.gate(name).done():
                if name in park.started:
                    park.finish(name)
                await turns()
        await asyncio.gather(*futures)
    assert max(park.peak.values()) == 2 and park.peak_total == 6
    assert_no_key_state(exe)


async def test_a_full_key_does_not_hold_back_another_key(loop_kind: str) -> None:
    park = Park()
    async with CoroutineExecutor(10, key=first, max_per_key=1) as exe:
        a = [exe.submit_nowait(park.job, "a", ("a", i)) for i in range(3)]
        await turns()
        assert park.started == [("a", 0)]
        # await submit returns once the job has started: key "b" is not behind "a"'s line
        b = await exe.submit(park.job, "b", ("b", 0))
        await turns()
        assert park.started == [("a", 0), ("b", 0)]
        assert exe.stats.active_keys == 2 and exe.stats.busiest_key == ("a", 2)
        for i in range(3):
            park.finish(("a", i))
            await turns()
        park.finish(("b", 0))
        await asyncio.gather(*a, b)
    assert park.started == [("a", 0), ("b", 0), ("a", 1), ("a", 2)]  # FIFO within "a"
    assert_no_key_state(exe)


async def test_the_oldest_startable_job_takes_a_free_slot(loop_kind: str) -> None:
    # max_workers=2: "a" fills a slot and its key; a2 waits for its key, then c0 and d0
    # wait for a slot. When a0 ends, a2 is startable and older than c0: it goes first.
    park = Park()
    async with CoroutineExecutor(2, key=first, max_per_key=1) as exe:
        for name in [("a", 0), ("b", 0), ("a", 2), ("c", 0), ("d", 0)]:
            exe.submit_nowait(park.job, name[0], name)
        await turns()
        assert park.started == [("a", 0), ("b", 0)]
        park.finish(("a", 0))
        await turns()
        assert park.started[2:] == [("a", 2)]
        park.finish(("b", 0))
        await turns()
        assert park.started[3:] == [("c", 0)]
        for name in [("a", 2), ("c", 0), ("d", 0)]:
            park.finish(name)
            await turns()
    assert park.started[4:] == [("d", 0)]


async def test_max_per_key_may_be_a_callable_of_the_key() -> None:
    park = Park()
    limits = {"big": 3, "small": 1}
    async with CoroutineExecutor(10, key=first, max_per_key=limits.__getitem__) as exe:
        futures = [exe.submit_nowait(park.job, k, (k, i)) for k in limits for i in range(4)]
        await turns()
        assert park.running == {"big": 3, "small": 1}
        for name in list(park.gates):
            park.finish(name)
        while not all(f.done() for f in futures):
            for name in park.started:
                if not park.gate(name).done():
                    park.finish(name)
            await turns()
    assert park.peak == {"big": 3, "small": 1}
    assert_no_key_state(exe)


async def test_key_is_called_with_the_job_arguments() -> None:
    seen: list[tuple[Any, ...]] = []

    def key(*args: Any, **kwargs: Any) -> Hashable:
        seen.append((args, kwargs))
        return "k"

    async def job(*args: Any, **kwargs: Any) -> None:
        pass

    async with CoroutineExecutor(4, key=key, max_per_key=1) as exe:
        await exe.submit(job, 1, x=2)
        exe.submit_nowait(job, 3)
        [_ async for _ in exe.map(job, [4], [5])]
    assert seen == [((1,), {"x": 2}), ((3,), {}), ((4, 5), {})]


#
# Errors of key()
#


class KeyError_(Exception):
    pass


def bad_key(key: Hashable, name: Any = None) -> Hashable:
    if key == "bad":
        raise KeyError_(key)
    if key == "unhashable":
        return ["a list"]  # type: ignore[return-value]  # the mistake tested
    return key


async def test_an_error_of_key_goes_to_the_caller_and_starts_nothing() -> None:
    park = Park()
    async with CoroutineExecutor(4, key=bad_key, max_per_key=1) as exe:
        with pytest.raises(KeyError_):
            await exe.submit(park.job, "bad")
        with pytest.raises(KeyError_):
            exe.submit_nowait(park.job, "bad")
        with pytest.raises(TypeError, match="key\\(\\) must return a hashable"):
            await exe.submit(park.job, "unhashable")
        with pytest.raises(TypeError, match="key\\(\\) must return a hashable"):
            exe.submit_nowait(park.job, "unhashable")
        ok = exe.submit_nowait(park.job, "ok", "ok")
        await turns()
        park.finish("ok")
        await ok
    assert park.started == ["ok"]
    assert exe.stats.submitted == 1
    assert_no_key_state(exe)


async def test_an_error_of_key_in_a_map_goes_to_its_consumer() -> None:
    async def job(key: str) -> str:
        return key

    async with CoroutineExecutor(4, key=bad_key, max_per_key=1) as exe:
        got: list[str] = []
        with pytest.raises(KeyError_):
            async for result in exe.map(job, ["a", "b", "bad", "c"], buffersize=1):
                got.append(result)
        assert got == ["a", "b"]
    assert_no_key_state(exe)


async def test_an_error_of_max_per_key_goes_to_the_caller() -> None:
    def limit(key: Hashable) -> int:
        if key == "bad":
            raise KeyError_(key)
        return 1

    park = Park()
    async with CoroutineExecutor(4, key=first, max_per_key=limit) as exe:
        with pytest.raises(KeyError_):
            await exe.submit(park.job, "bad")
        with pytest.raises(KeyError_):
            exe.submit_nowait(park.job, "bad")
    assert_no_key_state(exe)


#
# Cancellation and shutdown leave no state
#


async def test_a_submitter_cancelled_while_it_waits_leaves_its_key_line(loop_kind: str) -> None:
    park = Park()
    async with CoroutineExecutor(4, key=first, max_per_key=1) as exe:
        a0 = await exe.submit(park.job, "a", "a0")
        with pytest.raises(asyncio.TimeoutError):
            # (a timeout of 0 cancels the wait at its first await: no clock involved)
            await asyncio.wait_for(exe.submit(park.job, "a", "a1"), 0)
        assert exe.stats.busiest_key is None and exe.stats.active_keys == 1
        park.finish("a0")
        await a0
        await turns()
        assert exe.stats.active_keys == 0
    assert park.started == ["a0"]
    assert_no_key_state(exe)


async def test_a_submitter_cancelled_just_as_it_is_granted_passes_the_room_on(
    loop_kind: str,
) -> None:
    park = Park()
    async with CoroutineExecutor(4, key=first, max_per_key=1) as exe:
        await exe.submit(park.job, "a", "a0")
        waiter = asyncio.ensure_future(exe.submit(park.job, "a", "a1"))
        queued = exe.submit_nowait(park.job, "a", "a2")
        await turns()
        park.finish("a0")  # a1 is granted the room in "a" ...
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        waiter.cancel()  # ... and cancelled before it resumes: a2 gets the room
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await turns()
        assert park.started == ["a0", "a2"]
        park.finish("a2")
        await queued
    assert_no_key_state(exe)


async def test_cancelling_a_queued_job_leaves_its_key_line() -> None:
    park = Park()
    async with CoroutineExecutor(4, key=first, max_per_key=1) as exe:
        a0 = exe.submit_nowait(park.job, "a", "a0")
        a1 = exe.submit_nowait(park.job, "a", "a1")
        assert exe.stats.queued == 1
        assert a1.cancel()
        await turns()
        assert exe.stats.queued == 0 and exe.stats.cancelled == 1
        park.finish("a0")
        await a0
    assert park.started == ["a0"]
    assert_no_key_state(exe)


async def test_fail_fast_cancels_jobs_waiting_in_key_lines(loop_kind: str) -> None:
    class Boom(Exception):
        pass

    async def boom(key: str, name: Any = None) -> None:
        await asyncio.sleep(0)
        raise Boom

    park = Park()
    waiting: asyncio.Future[Any] | None = None
    with pytest.raises(Boom):
        async with CoroutineExecutor(4, key=first, max_per_key=1) as exe:
            exe.submit_nowait(park.job, "a", "a0")
            waiting = exe.submit_nowait(park.job, "a", "a1")
            exe.submit_nowait(boom, "b")
            await asyncio.Event().wait()  # interrupted by the job error
    assert waiting is not None and waiting.cancelled()
    assert park.started == ["a0"]
    assert_no_key_state(exe)


async def test_a_map_left_early_cancels_its_jobs_waiting_in_key_lines(loop_kind: str) -> None:
    park = Park()
    async with CoroutineExecutor(10, key=first, max_per_key=1) as exe:
        it = exe.map(park.job, ["a"] * 5 + ["b"], range(6), buffersize=6)
        task = asyncio.ensure_future(it.__anext__())
        await turns()
        assert sorted(park.started) == [0, 5]  # a0 and b5: the window holds a1..a4 waiting
        assert exe.stats.queued == 4 and exe.stats.busiest_key == ("a", 4)
        park.finish(0)
        assert await task == 0
        await it.aclose()
        await turns()
        assert exe.stats.running == 0 and exe.stats.queued == 0
    assert sorted(park.started) == [0, 1, 5]
    assert exe.stats.cancelled == 5  # a1 and b5 (running), a2..a4 (waiting); not errors
    assert_no_key_state(exe)


async def test_a_map_window_full_of_one_key_is_its_bound(loop_kind: str) -> None:
    park = Park()
    async with CoroutineExecutor(10, key=first, max_per_key=1) as exe:
        read: list[int] = []

        def inputs() -> Any:
            for i in range(100):
                read.append(i)
                yield "a"

        it = exe.map(park.job, inputs(), range(100), buffersize=5)
        task = asyncio.ensure_future(it.__anext__())
        await turns()
        assert len(read) == 5 and park.started == [0]  # 1 running + 4 waiting: the window
        for i in range(100):
            park.finish(i)
            assert await (task if i == 0 else it.__anext__()) == i
            await turns()
            assert len(read) <= i + 6
    assert_no_key_state(exe)


async def test_retries_keep_their_key_room_between_attempts() -> None:
    class Flaky(Exception):
        pass

    attempts: dict[str, int] = {}
    park = Park()

    async def flaky(key: str, name: Any = None) -> str:
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] == 1:
            raise Flaky
        return await park.job(key, name)

    retry = Retry(attempts=2, on=Flaky, backoff=0, jitter=False)
    async with CoroutineExecutor(2, key=first, max_per_key=1, retry=retry) as exe:
        a = exe.submit_nowait(flaky, "a", "a0")
        b = exe.submit_nowait(park.job, "a", "a1")  # waits for "a" through a0's pause
        c = exe.submit_nowait(park.job, "c", "c0")
        await turns(20)
        assert sorted(park.started) == ["a0", "c0"] and attempts == {"a": 2}
        park.finish("a0")
        park.finish("c0")
        await turns()
        assert park.started[2:] == ["a1"]
        park.finish("a1")
        await asyncio.gather(a, b, c)
    assert_no_key_state(exe)


#
# Settling in-line: a keyed job gives its room back in its own last step
#


async def test_a_keyed_job_hands_its_room_on_in_its_own_last_step(loop_kind: str) -> None:
    if loop_kind == "eager":
        pytest.skip("a task factory's jobs start from a wake-up (see _admit_after_job)")
    park = Park()
    seen: list[list[Any]] = []
    async with CoroutineExecutor(4, key=first, max_per_key=1) as exe:
        a0 = await exe.submit(park.job, "a", "a0")
        a0.add_done_callback(lambda _: seen.append(list(park.started)))
        a1 = exe.submit_nowait(park.job, "a", "a1")
        await turns()
        assert park.started == ["a0"]
        park.finish("a0")
        await a0
        # a0's last step started a1 before a0's task was done: a1's first step was
        # scheduled ahead of a0's done callbacks (from a done callback it would follow).
        assert seen == [["a0", "a1"]]
        park.finish("a1")
        await a1
    assert_no_key_state(exe)


async def test_a_submitter_cancelled_as_the_room_comes_back_passes_it_on(
    loop_kind: str,
) -> None:
    # a0's last step gives the room back before the cancelled submitter's task has left
    # the line (its step comes later): the room must skip it and go to a2.
    park = Park()
    async with CoroutineExecutor(4, key=first, max_per_key=1) as exe:
        await exe.submit(park.job, "a", "a0")
        waiter = asyncio.ensure_future(exe.submit(park.job, "a", "a1"))
        await turns()
        queued = exe.submit_nowait(park.job, "a", "a2")
        park.finish("a0")
        waiter.cancel()  # in the same turn
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await turns()
        assert park.started == ["a0", "a2"]
        park.finish("a2")
        await queued
    assert exe.stats.cancelled == 0  # (the submitter's job never existed)
    assert_no_key_state(exe)


async def quick(key: Hashable, name: Any = None) -> Any:
    return name


async def test_jobs_ending_in_their_start_give_their_room_back_once(loop_kind: str) -> None:
    # Under an eager task factory each quick job runs to its end inside its start, before
    # its start could record it; one key with room for one shows a room never given back
    # (the next start waits for ever) or given back twice (KeyedLine.release fails).
    async def outer(key: Hashable, name: Any) -> Any:
        # A start nested in a job's first step: the inner job ends in its start too.
        inner = exe.submit_nowait(quick, "b", ("inner", name))
        return name, await inner

    async with CoroutineExecutor(4, key=first, max_per_key=1) as exe:
        for i in range(5):
            assert await (await exe.submit(quick, "a", i)) == i
        queued = [exe.submit_nowait(quick, "a", i) for i in range(5)]
        assert await asyncio.gather(*queued) == list(range(5))
        assert [r async for r in exe.map(quick, ["a"] * 5, range(5))] == list(range(5))
        nested = [await exe.submit(outer, "a", i) for i in range(3)]
        assert await asyncio.gather(*nested) == [(i, ("inner", i)) for i in range(3)]
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.running) == (21, 0, 0)
    assert_no_key_state(exe)


async def test_a_keyed_job_whose_start_fails_gives_its_room_back(loop_kind: str) -> None:
    def not_a_job(key: Hashable) -> Any:
        raise ValueError(key)

    async with CoroutineExecutor(4, key=first, max_per_key=1) as exe:
        with pytest.raises(ValueError):
            await exe.submit(not_a_job, "a")
        assert await (await exe.submit(quick, "a", 1)) == 1
    assert_no_key_state(exe)


#
# Memory: keys seen leave nothing behind
#


async def run_many(jobs: int, keys: int) -> int:
    """Run ``jobs`` jobs over ``keys`` keys through map; the tracemalloc peak."""

    async def job(key: int) -> None:
        await asyncio.sleep(0)

    tracemalloc.start()
    try:
        async with CoroutineExecutor(50, key=lambda k: k, max_per_key=2) as exe:
            async for _ in exe.map(job, (i % keys for i in range(jobs)), buffersize=100):
                pass
        assert_no_key_state(exe)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_memory_stays_flat_over_many_keys() -> None:
    # (Debug mode and tracemalloc make each job slow: the million-job run over 100,000
    # keys is ``python -m benchmarks.keyed_memory``.)
    await run_many(200, 20)  # first-use allocations happen here, not in what is compared
    gc.collect()
    small = await run_many(1_000, 100)
    gc.collect()
    large = await run_many(4_000, 4_000)  # four times the jobs, forty times the keys
    assert large < 1.5 * small, (small, large)


async def test_key_works_with_an_adaptive_limit_and_a_start_rate(loop_kind: str) -> None:
    # The start rate's wake-up timer moves the key lines too; the adaptive limit resizes
    # the slots as jobs settle. Nothing here depends on how long a timer takes.
    park = Park()
    names = [(k, i) for i in range(5) for k in "abc"]
    exe = CoroutineExecutor(
        Adaptive(min=2, max=6, initial=3), key=first, max_per_key=1,
        max_per_second=100_000, burst=2,
    )
    async with exe:
        futures = [exe.submit_nowait(park.job, k, (k, i)) for k, i in names]
        while not all(f.done() for f in futures):
            for name in park.started:
                if not park.gate(name).done():
                    park.finish(name)
            await asyncio.sleep(0)
        await asyncio.gather(*futures)
    assert max(park.peak.values()) == 1 and park.peak_total <= 6
    assert sorted(park.started) == sorted(names)
    assert [n for n in park.started if n[0] == "a"] == [("a", i) for i in range(5)]
    assert_no_key_state(exe)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_outer_timeouts_around_keyed_submits_leave_no_state(
    loop_kind: str, seed: int
) -> None:
    # Found by a docs-only tester: timeouts around `await submit` waiting for their key's
    # room, in every phase of the grant, broke the key lines (InvalidStateError in the
    # loop's handler, waiting=-1) and the block's exit then hung. Whatever the timing, it
    # must end with nothing left and nothing reported.
    rng = random.Random(seed)
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: reported.append(context))

    async def job(key: str) -> None:
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)

    async with CoroutineExecutor(2, key=lambda k: k, max_per_key=1) as exe:

        async def producer() -> None:
            for _ in range(60):
                try:
                    submit = exe.submit(job, rng.choice("abc"))
                    await asyncio.wait_for(submit, rng.random() * 0.002)
                except asyncio.TimeoutError:
                    pass

        await asyncio.gather(*(producer() for _ in range(3)))
    stats = exe.stats
    assert reported == [] and stats.active_keys == 0 and stats.running == stats.queued == 0


async def test_a_queued_job_cancelled_by_its_keys_last_job_never_starts(loop_kind: str) -> None:
    # "First answer wins": the running job of a key cancels the queued jobs of its key in
    # its last step; the next in line had its room handed on in that same step, before its
    # future's callback ran, and started anyway (found by a docs-only tester).
    started: list[int] = []
    futures: list[asyncio.Future[Any]] = []

    async def fetch(i: int) -> int:
        started.append(i)
        await asyncio.sleep(0)
        for future in futures:
            if future is not asyncio.current_task():
                future.cancel()
        return i

    async with CoroutineExecutor(10, key=lambda i: "host", max_per_key=1) as exe:
        futures += [exe.submit_nowait(fetch, i) for i in range(3)]
        await asyncio.gather(*futures, return_exceptions=True)
    assert started == [0] and [f.cancelled() for f in futures] == [False, True, True]
    stats = exe.stats
    assert (stats.succeeded, stats.cancelled, stats.queued, stats.active_keys) == (1, 2, 0, 0)


async def host_of(url: str) -> str:
    return "example.org"


def test_an_async_key_or_max_per_key_is_refused_at_the_constructor() -> None:
    # Its coroutine would be each job's key (a new one per job): no limit would hold.
    for executor in (CoroutineExecutor, LoopExecutor):
        with pytest.raises(TypeError, match="key must be a plain function returning the key"):
            executor(key=host_of, max_per_key=1)
        with pytest.raises(TypeError, match="max_per_key must be a plain function of the key"):
            executor(key=str, max_per_key=host_of)  # type: ignore[arg-type]


#
# A submit() waiting in a key's line, cancelled in the turn the executor starts cancelling
# everything (found by a docs-only tester: InvalidStateError, the clean-up stopped
# halfway, a job outlived the block, and the block's exit could hang)
#


async def _hold(key: str) -> None:
    await asyncio.Event().wait()


async def _quick(key: str) -> None:
    pass


@pytest.mark.parametrize("how", ["the body raises", "shutdown(wait=False)"])
async def test_a_cancelled_waiting_submit_does_not_break_the_clean_up(how: str) -> None:
    exe = CoroutineExecutor(10, key=lambda k: k, max_per_key=1)
    with pytest.raises(RuntimeError, match="body failed"):
        async with exe:
            running = await exe.submit(_hold, "a")
            producer = asyncio.ensure_future(exe.submit(_hold, "a"))  # waits: "a" is full
            await asyncio.sleep(0)  # (one step: it is in the line now)
            queued = exe.submit_nowait(_hold, "a")
            producer.cancel()  # cancelled, and not resumed yet when the clean-up runs
            if how == "shutdown(wait=False)":
                await exe.shutdown(wait=False)
            raise RuntimeError("body failed")
    assert running.cancelled() and queued.cancelled() and producer.cancelled()
    stats = exe.stats
    assert (stats.running, stats.queued, stats.cancelled) == (0, 0, 2)
    assert stats.active_keys == 0


async def test_fail_fast_in_the_turn_a_waiting_submit_is_cancelled() -> None:
    go = asyncio.Event()
    producer: asyncio.Future[Any] | None = None
    reached: list[str] = []

    async def canceller(key: str) -> None:
        await go.wait()
        assert producer is not None
        producer.cancel()  # the submit() waiting in "a"'s line
        await asyncio.Event().wait()

    async def failing(key: str) -> None:
        await go.wait()  # wakes in the same turn, right after canceller
        raise ValueError("job failed")

    exe = CoroutineExecutor(10, key=lambda k: k, max_per_key=1)
    with pytest.raises(ValueError, match="job failed"):
        async with exe:
            await exe.submit(canceller, "b")
            await exe.submit(failing, "a")
            producer = asyncio.ensure_future(exe.submit(_quick, "a"))
            await asyncio.sleep(0)
            queued = exe.submit_nowait(_quick, "a")
            go.set()
            await asyncio.Event().wait()  # fail-fast interrupts this
            reached.append("after the wait")
    assert reached == [] and queued.cancelled()
    assert exe.stats.active_keys == 0


async def test_a_broken_initializer_with_a_queued_keyed_job_cancelled_in_its_step() -> None:
    # The initializer cancels a queued keyed job's future and raises in the same step:
    # the queued jobs are failed with the initializer's error, that one stays cancelled.
    from coroexecutor import BrokenCoroutineExecutor

    jobs: list[asyncio.Future[Any]] = []

    async def init() -> None:
        await asyncio.sleep(0)
        jobs[0].cancel()
        raise OSError("no database")

    exe = CoroutineExecutor(2, key=lambda k: k, max_per_key=1, initializer=init)
    jobs.append(exe.submit_nowait(_quick, "a"))
    jobs.append(exe.submit_nowait(_quick, "b"))
    await asyncio.gather(*jobs, return_exceptions=True)
    with pytest.raises(BrokenCoroutineExecutor):
        await exe.shutdown()
    assert jobs[0].cancelled()
    assert isinstance(jobs[1].exception(), BrokenCoroutineExecutor)
    stats = exe.stats
    assert (stats.queued, stats.cancelled, stats.failed) == (0, 1, 1)


#
# max_per_key() using the executor
#


@pytest.mark.parametrize("how", ["submit", "submit_nowait", "map", "map_unordered"])
async def test_a_job_that_max_per_key_submits_of_its_own_key_obeys_the_limit(
    loop_kind: str, how: str
) -> None:
    # Found by a docs-only tester: max_per_key() was called amid its key's activation, so
    # a job of the same key it submitted started beside the outer one (two running at a
    # limit of 1), the room came back twice (an internal KeyError from the outer job's
    # task, lost to fail-fast) and a map never yielded. The job it submits is a job of
    # that key like any other: it runs, and the outer job waits for its room behind it.
    park = Park()
    calls: list[Hashable] = []
    inner: list[asyncio.Future[Any]] = []

    def limit(key: Hashable) -> int:
        calls.append(key)
        if len(calls) == 1:
            inner.append(exe.submit_nowait(park.job, key, "inner"))
        return 1

    async def outer() -> list[Any]:
        if how == "submit":
            return [await (await exe.submit(park.job, "a", "outer"))]
        if how == "submit_nowait":
            return [await exe.submit_nowait(park.job, "a", "outer")]
        jobs = getattr(exe, how)(park.job, ["a"], ["outer"])
        return [result async for result in jobs]

    async with CoroutineExecutor(4, key=first, max_per_key=limit) as exe:
        got = asyncio.ensure_future(outer())
        await turns()
        assert park.started == ["inner"] and park.running == {"a": 1}
        assert exe.stats.active_keys == 1 and exe.stats.busiest_key == ("a", 1)
        park.finish("inner")
        await turns()
        assert park.started == ["inner", "outer"]
        park.finish("outer")
        assert await got == ["outer"] and await inner[0] == "inner"
    assert park.peak == {"a": 1}
    assert calls == ["a", "a"]  # the inner submit found the key not active yet
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.failed) == (2, 2, 0)
    assert_no_key_state(exe)


async def test_max_per_key_may_read_stats_and_raise_after_submitting(loop_kind: str) -> None:
    # The outer submit raises what max_per_key() raised, with nothing of its key touched:
    # the job submitted from inside it runs with the limit its own call gave.
    park = Park()
    seen: list[tuple[int | None, int]] = []

    def limit(key: Hashable) -> int:
        stats = exe.stats
        seen.append((stats.active_keys, stats.running))
        if len(seen) == 1:
            exe.submit_nowait(park.job, key, "inner")
            raise KeyError_(key)
        return 1

    async with CoroutineExecutor(4, key=first, max_per_key=limit) as exe:
        with pytest.raises(KeyError_):
            exe.submit_nowait(park.job, "a", "outer")
        later = exe.submit_nowait(park.job, "a", "later")  # the key is active: no call
        await turns()
        assert park.started == ["inner"] and exe.stats.busiest_key == ("a", 1)
        park.finish("inner")
        await turns()
        park.finish("later")
        assert await later == "later"
    assert seen == [(0, 0), (0, 0)] and park.peak == {"a": 1}
    assert exe.stats.submitted == 2
    assert_no_key_state(exe)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="needs asyncio.eager_task_factory")
@pytest.mark.parametrize("how", ["submit", "submit_nowait"])
@pytest.mark.parametrize("where", ["key", "max_per_key"])
async def test_a_submit_whose_key_or_limit_shuts_the_executor_down_is_refused(
    where: str, how: str
) -> None:
    # With an eager task factory, a shutdown(wait=False) task made in key() or
    # max_per_key() runs at once: the job being submitted is not accepted yet, so it is
    # refused as after any shutdown. (It started, or was queued after the lines were
    # drained and started later, only to be cancelled.)
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]  # 3.12+, skipped before
    park = Park()
    stops: list[asyncio.Future[None]] = []

    def stop(key: Hashable, name: Any = None) -> Any:
        if not stops:
            stops.append(asyncio.ensure_future(exe.shutdown(wait=False)))
        return key if where == "key" else 1

    exe = CoroutineExecutor(4, key=stop if where == "key" else first,
                            max_per_key=1 if where == "key" else stop)
    async with exe:
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            if how == "submit":
                await exe.submit(park.job, "a", "outer")
            else:
                exe.submit_nowait(park.job, "a", "outer")
        assert stops[0].done()  # (it ran inside the call)
    assert park.started == [] and exe.stats.submitted == 0
    assert_no_key_state(exe)
