"""The window of map() and map_unordered() while jobs pause between attempts (retry=),
and a default window that follows the executor's limit (a setter, an Adaptive limit).

The retry tests run on virtual time (tests/virtual_clock.py): every attempt takes a
whole number of seconds and every pause 10 or 100, so the tests can say when each input
started without any wall-clock threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Callable

import pytest

from coroexecutor import Adaptive, CoroutineExecutor, Retry
from coroexecutor._limiter import MIN_SAMPLES

pytestmark = pytest.mark.timeout(30)

ORDERED = pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
virtual_time = pytest.mark.virtual_time


def now() -> float:
    return asyncio.get_running_loop().time()


class Inputs:
    """Jobs of a map: each attempt takes ``work`` seconds, and the inputs in ``failing``
    fail their first attempt. Records when each input first started, how many attempts
    ran at once, and how many inputs were started and not yet received (``held``)."""

    def __init__(self, failing: Callable[[int], bool], work: float = 1) -> None:
        self.failing = failing
        self.work = work
        self.first_start: dict[int, float] = {}
        self.attempts = 0
        self.running = 0
        self.peak_running = 0
        self.received = 0
        self.peak_held = 0
        self.t0 = now()

    async def __call__(self, n: int) -> int:
        first = n not in self.first_start
        if first:
            self.first_start[n] = now() - self.t0
            self.peak_held = max(self.peak_held, len(self.first_start) - self.received)
        self.attempts += 1
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        try:
            await asyncio.sleep(self.work)
        finally:
            self.running -= 1
        if first and self.failing(n):
            raise OSError(f"input {n}, first attempt")
        return n

    def starts(self) -> dict[float, list[int]]:
        """The inputs by the time they first started."""
        by_time: dict[float, list[int]] = {}
        for n, at in sorted(self.first_start.items()):
            by_time.setdefault(at, []).append(n)
        return by_time


def mapper(exe: CoroutineExecutor, ordered: bool) -> Any:
    return exe.map if ordered else exe.map_unordered


#
# Pausing jobs leave the window
#


@virtual_time
@ORDERED
@pytest.mark.parametrize("hook", [False, True], ids=["in-line", "hook"])
@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "key="])
async def test_jobs_pausing_between_attempts_let_the_map_start_others(
    ordered: bool, hook: bool, keyed: bool
) -> None:
    # Inputs 0 and 1 fail at t=1 and pause until t=11. Their slots go to inputs 4 and 5
    # at once (before: the map's window of 4 still counted them, and 4, 5 waited
    # for t=12). An unordered map keeps all 4 slots busy; an ordered one cannot yield
    # past its pausing head, so the results behind it fill the window and it waits.
    # (With a hook, jobs run their attempts in a wrapper and settle from a callback.)
    jobs = Inputs(failing=lambda n: n < 2)
    retry = Retry(attempts=2, backoff=10, jitter=False)
    results = []
    on_job_done = (lambda job: None) if hook else None
    # key=: every start takes the keyed path (one key per input here: no key is full).
    per_key: dict[str, Any] = {"key": lambda n: n, "max_per_key": 1} if keyed else {}
    async with CoroutineExecutor(
        max_workers=4, retry=retry, on_job_done=on_job_done, **per_key
    ) as exe:
        async for n in mapper(exe, ordered)(jobs, range(12)):
            results.append(n)
            jobs.received += 1
    assert jobs.peak_running == 4
    assert exe.stats.retried == 2 and exe.stats.succeeded == 12
    if ordered:
        assert results == list(range(12))
        assert jobs.starts() == {0: [0, 1, 2, 3], 1: [4, 5], 12: [6, 7, 8, 9], 13: [10, 11]}
    else:
        assert sorted(results) == list(range(12))
        assert jobs.starts() == {0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: [8, 9, 10, 11]}


@virtual_time
@ORDERED
@pytest.mark.parametrize(
    ("max_workers", "buffersize"), [(3, None), (10, 3)], ids=["default", "buffersize"]
)
@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "key="])
async def test_a_map_holds_at_most_twice_its_window_while_jobs_pause(
    ordered: bool, max_workers: int, buffersize: int | None, keyed: bool
) -> None:
    # Every input fails its first attempt: at most 3 pausing jobs leave the window of 3,
    # so the map holds 6 inputs started and not yet received, never more.
    jobs = Inputs(failing=lambda n: True)
    retry = Retry(attempts=2, backoff=10, jitter=False)
    results = []
    per_key: dict[str, Any] = {"key": lambda n: n, "max_per_key": 1} if keyed else {}
    async with CoroutineExecutor(max_workers=max_workers, retry=retry, **per_key) as exe:
        async for n in mapper(exe, ordered)(jobs, range(30), buffersize=buffersize):
            results.append(n)
            jobs.received += 1
    assert jobs.peak_held == 6
    assert jobs.peak_running <= 3 + (3 if buffersize is not None else 0)
    assert (results if ordered else sorted(results)) == list(range(30))
    assert exe.stats.retried == 30
    starts = jobs.starts()
    assert starts[0] == [0, 1, 2] and starts[1] == [3, 4, 5]  # the second 3: pauses left
    assert 2 not in starts  # then 3 pausing jobs count again: the window is full


@virtual_time
@ORDERED
async def test_an_ordered_result_stream_is_unchanged_by_pauses(ordered: bool) -> None:
    jobs = Inputs(failing=lambda n: n % 3 == 0)
    retry = Retry(attempts=2, backoff=10, jitter=False)
    async with CoroutineExecutor(max_workers=5, retry=retry) as exe:
        results = [n async for n in mapper(exe, ordered)(jobs, range(50), buffersize=4)]
    assert (results if ordered else sorted(results)) == list(range(50))
    assert exe.stats.retried == 17
    assert jobs.peak_running <= 5


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(100):  # virtual time: the jobs' own timers decide
        if condition():
            return
        await asyncio.sleep(0.5)
    raise AssertionError("the condition never held")


@virtual_time
@ORDERED
@pytest.mark.parametrize("how", ["aclose", "break", "cancel the block"])
async def test_closing_a_map_while_its_jobs_pause_ends_it_at_once(
    ordered: bool, how: str
) -> None:
    # Inputs 2 and 3 fail at t=1 and would pause until t=101; other inputs run in their
    # slots meanwhile. Closing the map then ends the pauses at once, and no attempt of
    # any input starts after it.
    jobs = Inputs(failing=lambda n: n in (2, 3))
    retry = Retry(attempts=2, backoff=100, max_backoff=100, jitter=False)
    start = now()
    attempts_at_close = -1
    paused_and_replaced = lambda: {4, 5} <= set(jobs.first_start)  # noqa: E731

    if how == "cancel the block":

        async def owner() -> None:
            async with CoroutineExecutor(max_workers=4, retry=retry) as exe:
                async for _ in mapper(exe, ordered)(jobs, range(1000)):
                    jobs.received += 1

        block = asyncio.ensure_future(owner())
        await _until(paused_and_replaced)
        attempts_at_close = jobs.attempts
        block.cancel()
        with pytest.raises(asyncio.CancelledError):
            await block
    else:
        async with CoroutineExecutor(max_workers=4, retry=retry) as exe:
            if how == "break":
                async for _ in mapper(exe, ordered)(jobs, range(1000)):
                    jobs.received += 1
                    if jobs.received == 2:
                        # (The jobs the map started before it yielded take a step.)
                        await _until(paused_and_replaced)
                        attempts_at_close = jobs.attempts
                        break  # the map is dropped: closed in this step
            else:
                results = mapper(exe, ordered)(jobs, range(1000))
                consumer = asyncio.ensure_future(_collect(results))
                await _until(paused_and_replaced)
                attempts_at_close = jobs.attempts
                await results.aclose()  # the consumer's iteration ends
                await consumer
    assert now() - start < 100  # the pauses ended at once
    assert jobs.attempts == attempts_at_close  # nothing started after the close
    if how != "cancel the block":
        assert exe.stats.retried == 2 and exe.stats.running == 0


#
# A default window follows the limit
#


@ORDERED
async def test_a_default_window_follows_an_adaptive_limit(loop_kind: str, ordered: bool) -> None:
    # The tuner's clock never moves (every latency is 0), so successes grow the limit
    # from 4 to 64; the map's running jobs grow with it (before: 4, the limit when the
    # map was made, for the whole map).
    running = peak = 0

    async def job(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(n % 3 + 1):
            await asyncio.sleep(0)
        running -= 1
        return n

    exe = CoroutineExecutor(max_workers=Adaptive(min=2, max=64, initial=4))
    assert exe._tuner is not None
    exe._tuner.clock = lambda: 0.0
    async with exe:
        results = [n async for n in mapper(exe, ordered)(job, range(60 * MIN_SAMPLES))]
    assert (results if ordered else sorted(results)) == list(range(60 * MIN_SAMPLES))
    assert exe.max_workers == 64
    assert 32 < peak <= 64  # (an unordered map's consumer takes a step per result)


async def test_an_explicit_buffersize_stays_under_an_adaptive_limit(loop_kind: str) -> None:
    running = peak = 0

    async def job(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1
        return n

    exe = CoroutineExecutor(max_workers=Adaptive(min=2, max=64, initial=4))
    assert exe._tuner is not None
    exe._tuner.clock = lambda: 0.0
    async with exe:
        results = [n async for n in exe.map(job, range(40 * MIN_SAMPLES), buffersize=4)]
    assert results == list(range(40 * MIN_SAMPLES))
    assert peak == 4


@virtual_time
@ORDERED
@pytest.mark.parametrize("buffersize", [None, 2], ids=["default", "buffersize"])
async def test_setting_max_workers_grows_a_default_window_at_once(
    ordered: bool, buffersize: int | None
) -> None:
    # The jobs park: no result comes, so only the setter can start more of them.
    release = asyncio.Event()
    started: list[int] = []

    async def parked(n: int) -> int:
        started.append(n)
        await release.wait()
        return n

    async with CoroutineExecutor(max_workers=2) as exe:
        results = mapper(exe, ordered)(parked, range(10), buffersize=buffersize)
        consumer = asyncio.ensure_future(_collect(results))
        await _until(lambda: len(started) == 2)
        exe.max_workers = 5
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_until(lambda: len(started) == 5), 10)
        assert len(started) == (5 if buffersize is None else 2)
        release.set()
        values = await consumer
    assert (values if ordered else sorted(values)) == list(range(10))


async def _collect(results: Any) -> list[Any]:
    return [value async for value in results]
