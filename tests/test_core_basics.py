"""CoroutineExecutor basics: submit, back-pressure, the slot limit, the FIFO backlog,
submit_nowait, stats and contextvars (the initializer: test_core_initializer.py).

The error policy, cancellation and timeouts are tested in test_core_policy.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import subprocess
import sys
import weakref
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, ExecutorStats, Retry

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")
box: contextvars.ContextVar[object] = contextvars.ContextVar("box", default=None)


async def yield_many(times: int = 20) -> None:
    """Let every ready callback and task run a few rounds (no timing involved)."""
    for _ in range(times):
        await asyncio.sleep(0)


def assert_consistent(stats: ExecutorStats) -> None:
    total = stats.queued + stats.running + stats.succeeded + stats.failed + stats.cancelled
    assert stats.submitted == total, stats
    assert stats.done == stats.succeeded + stats.failed + stats.cancelled


class LiveCounter:
    """Counts jobs running right now and remembers the most seen at once."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self.finished = 0

    async def job(self, i: int) -> int:
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            for _ in range(1 + i % 5):  # jobs of different lengths: slots free up out of order
                await asyncio.sleep(0)
            return i
        finally:
            self.live -= 1
            self.finished += 1


#
# submit and back-pressure
#


async def test_submit_returns_the_scheduled_task_of_the_job(loop_kind: str) -> None:
    async def job(a: int, *, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    async with CoroutineExecutor(max_workers=2) as exe:
        task = await exe.submit(job, 1, b=2)
        assert isinstance(task, asyncio.Task)
        assert await task == 3


async def test_submit_returns_at_once_while_slots_are_free(loop_kind: str) -> None:
    release = asyncio.Event()
    started = 0

    async def parked() -> None:
        nonlocal started
        started += 1
        await release.wait()

    async with CoroutineExecutor(max_workers=3) as exe:
        # No job has finished or even run: submit must not have waited for any of them.
        tasks = [await exe.submit(parked) for _ in range(3)]
        assert [t.done() for t in tasks] == [False, False, False]
        await yield_many()
        assert started == 3
        release.set()


async def test_submit_waits_for_a_free_slot(loop_kind: str) -> None:
    releases = [asyncio.Event(), asyncio.Event()]
    third_ran = asyncio.Event()

    async def parked(release: asyncio.Event) -> None:
        await release.wait()

    async def third() -> str:
        third_ran.set()
        return "third"

    async with CoroutineExecutor(max_workers=2) as exe:
        await exe.submit(parked, releases[0])
        await exe.submit(parked, releases[1])
        submitting = asyncio.create_task(exe.submit(third))
        await yield_many(50)
        assert not submitting.done(), "submit returned while max_workers jobs were running"
        assert not third_ran.is_set()

        releases[0].set()
        task = await submitting  # returns once the released job has given its slot back
        assert await task == "third"
        assert third_ran.is_set()
        releases[1].set()


async def test_producer_stays_max_workers_jobs_ahead(loop_kind: str) -> None:
    releases = [asyncio.Event() for _ in range(10)]
    returned = 0

    async def parked(i: int) -> None:
        await releases[i].wait()

    async def producer(exe: CoroutineExecutor) -> None:
        nonlocal returned
        for i in range(10):
            await exe.submit(parked, i)
            returned += 1

    async with CoroutineExecutor(max_workers=3) as exe:
        producing = asyncio.create_task(producer(exe))
        await yield_many(50)
        assert returned == 3
        for i in range(7):
            releases[i].set()
            await yield_many()
            assert returned == 4 + i, "the producer must advance one job per freed slot"
        for release in releases:
            release.set()
        await producing
    assert returned == 10


async def test_submit_waiters_get_slots_in_fifo_order(loop_kind: str) -> None:
    release = asyncio.Event()
    order: list[int] = []

    async def parked() -> None:
        await release.wait()

    async def record(i: int) -> None:
        order.append(i)

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(parked)
        waiters = []
        for i in range(5):
            waiters.append(asyncio.create_task(exe.submit(record, i)))
            await yield_many(3)  # let this submitter join the line before the next one
        release.set()
        await asyncio.gather(*waiters)
    assert order == [0, 1, 2, 3, 4]


#
# max_workers is never exceeded
#


@pytest.mark.parametrize("how", ["submit", "submit_nowait", "map", "map_unordered", "nested"])
async def test_max_workers_is_never_exceeded(loop_kind: str, how: str) -> None:
    counter = LiveCounter()
    n, limit = 300, 7

    async def spawner(exe: CoroutineExecutor, i: int) -> None:
        # A job that submits more jobs: nested jobs are limited as well.
        exe.submit_nowait(counter.job, i)
        await counter.job(i)  # runs inside this job's own slot

    async with CoroutineExecutor(max_workers=limit) as exe:
        if how == "submit":
            for i in range(n):
                await exe.submit(counter.job, i)
        elif how == "submit_nowait":
            for i in range(n):
                exe.submit_nowait(counter.job, i)
        elif how == "map":
            assert [r async for r in exe.map(counter.job, range(n))] == list(range(n))
        elif how == "map_unordered":
            results = [r async for r in exe.map_unordered(counter.job, range(n))]
            assert sorted(results) == list(range(n))
        else:
            for i in range(n // 2):
                await exe.submit(spawner, exe, i)
    assert counter.finished == n
    assert counter.peak <= limit
    assert counter.peak == limit, "the test never filled the slots: it proves nothing"


async def test_mixed_submitters_share_the_same_slots(loop_kind: str) -> None:
    counter = LiveCounter()

    async def submit_all(exe: CoroutineExecutor) -> None:
        for i in range(100):
            await exe.submit(counter.job, i)

    async def consume_map(exe: CoroutineExecutor) -> None:
        async for _ in exe.map(counter.job, range(100), buffersize=10):
            pass

    async with CoroutineExecutor(max_workers=5) as exe:
        for i in range(100):
            exe.submit_nowait(counter.job, i)
        await asyncio.gather(submit_all(exe), consume_map(exe))
    assert counter.finished == 300
    assert counter.peak == 5


#
# submit_nowait and the backlog
#


@pytest.mark.parametrize("max_workers", [1, 3])
async def test_backlog_starts_jobs_in_fifo_order(loop_kind: str, max_workers: int) -> None:
    release = asyncio.Event()
    order: list[int] = []

    async def parked() -> None:
        await release.wait()

    async def record(i: int) -> None:
        order.append(i)
        await asyncio.sleep(0)

    async with CoroutineExecutor(max_workers=max_workers) as exe:
        for _ in range(max_workers):
            exe.submit_nowait(parked)
        for i in range(30):
            exe.submit_nowait(record, i)
        await yield_many()
        assert order == []
        assert exe.stats.queued == 30
        release.set()
    assert order == list(range(30))


async def test_backlog_and_submit_waiters_share_one_fifo_line(loop_kind: str) -> None:
    release = asyncio.Event()
    order: list[str] = []

    async def parked() -> None:
        await release.wait()

    async def record(name: str) -> None:
        order.append(name)

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(parked)
        waiters = []
        for name in "abcdef":
            if name in "ace":
                exe.submit_nowait(record, name)
            else:
                waiters.append(asyncio.create_task(exe.submit(record, name)))
                await yield_many(3)
        release.set()
        await asyncio.gather(*waiters)
    assert order == list("abcdef")


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "key="])
async def test_cancelling_a_queued_future_as_its_job_starts_stops_the_job(
    loop_kind: str, keyed: bool
) -> None:
    # The queued job "B" is admitted (its task made) in the last step of "A"; its future
    # is cancelled before B's first step. The cancel reached B's task one callback late:
    # cancel() said True, B ran anyway (its error was the block's, or it counted as a
    # success). A docs-only tester found it. Whatever the loop's timing, the future, the
    # job and the counts must agree.
    ran: list[str] = []
    release = asyncio.Event()

    async def job(name: str) -> None:
        ran.append(name)
        if name == "A":
            await release.wait()
        else:
            raise ValueError("B ran after its future was cancelled")

    per_key: dict[str, object] = {"key": lambda n: "k", "max_per_key": 1} if keyed else {}
    async with CoroutineExecutor(1, suppress_task_errors=True, **per_key) as exe:  # type: ignore[arg-type]  # from a dict
        exe.submit_nowait(job, "A")
        b = exe.submit_nowait(job, "B")
        await yield_many(3)
        release.set()
        while exe.stats.queued:  # A ends and B is admitted
            await asyncio.sleep(0)
        ran_before = list(ran)
        cancelled = b.cancel()
    if cancelled:
        assert ran == ran_before and b.cancelled()
        assert (exe.stats.cancelled, exe.stats.failed) == (1, 0)
    else:  # (an eager task factory ran B's first step as it was admitted)
        assert isinstance(b.exception(), ValueError)
        assert (exe.stats.cancelled, exe.stats.failed) == (0, 1)
    if loop_kind == "default":
        assert cancelled and ran == ["A"]  # the timing the tester found, every time


async def test_a_late_cancel_keeps_a_finished_queued_jobs_error(loop_kind: str) -> None:
    release = asyncio.Event()

    async def job(name: str) -> None:
        if name == "A":
            raise ValueError("A failed")
        await release.wait()

    async with CoroutineExecutor(1, suppress_task_errors=True) as exe:
        exe.submit_nowait(job, "X")
        a = exe.submit_nowait(job, "A")
        release.set()
        while exe.stats.failed == 0:  # A has run and failed: counted in its last step
            await asyncio.sleep(0)
        assert not a.cancel()  # the job has ended: its outcome stands
    assert isinstance(a.exception(), ValueError)
    assert (exe.stats.failed, exe.stats.cancelled) == (1, 0)


async def test_submit_nowait_returns_the_task_when_a_slot_is_free(loop_kind: str) -> None:
    async def job(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async with CoroutineExecutor(max_workers=1) as exe:
        fut = exe.submit_nowait(job, 21)
        assert isinstance(fut, asyncio.Task)
        assert exe.stats.running == 1
        assert await fut == 42


async def test_submit_nowait_queues_a_future_that_follows_the_job(loop_kind: str) -> None:
    release = asyncio.Event()
    ran = asyncio.Event()

    async def parked() -> None:
        await release.wait()

    async def job(x: int) -> int:
        ran.set()
        await asyncio.sleep(0)
        return x * 2

    async with CoroutineExecutor(max_workers=1) as exe:
        exe.submit_nowait(parked)
        fut = exe.submit_nowait(job, 21)
        assert isinstance(fut, asyncio.Future)
        assert not isinstance(fut, asyncio.Task)
        await yield_many()
        assert not fut.done()
        assert not ran.is_set()
        assert exe.stats.queued == 1
        release.set()
        assert await fut == 42
        assert ran.is_set()


async def test_queued_future_carries_the_job_error_when_errors_are_suppressed(
    loop_kind: str,
) -> None:
    release = asyncio.Event()
    error = LookupError("queued job failed")

    async def parked() -> None:
        await release.wait()

    async def failing() -> None:
        raise error

    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
        exe.submit_nowait(parked)
        fut = exe.submit_nowait(failing)
        release.set()
        with pytest.raises(LookupError) as excinfo:
            await fut
        assert excinfo.value is error


async def test_cancelled_queued_future_never_runs(loop_kind: str) -> None:
    release = asyncio.Event()
    ran: list[str] = []

    async def parked() -> None:
        await release.wait()

    async def record(name: str) -> None:
        ran.append(name)

    async with CoroutineExecutor(max_workers=1) as exe:
        exe.submit_nowait(parked)
        before = exe.submit_nowait(record, "before")
        doomed = exe.submit_nowait(record, "doomed")
        after = exe.submit_nowait(record, "after")
        assert doomed.cancel()
        await yield_many()
        assert exe.stats.queued == 2
        release.set()
        await asyncio.gather(before, after)
    assert doomed.cancelled()
    assert ran == ["before", "after"]
    stats = exe.stats
    assert_consistent(stats)
    assert (stats.succeeded, stats.failed, stats.cancelled) == (3, 0, 1)


async def test_leaving_the_block_waits_for_every_job(loop_kind: str) -> None:
    finished: list[int] = []

    async def job(i: int) -> None:
        await yield_many(5)
        finished.append(i)

    async with CoroutineExecutor(max_workers=4) as exe:
        for i in range(4):
            await exe.submit(job, i)
        for i in range(4, 10):
            exe.submit_nowait(job, i)
        assert finished == []
    assert sorted(finished) == list(range(10))
    assert exe.stats.running == exe.stats.queued == 0


async def test_shutdown_without_async_with_waits_for_every_job(loop_kind: str) -> None:
    finished: list[int] = []

    async def job(i: int) -> None:
        await asyncio.sleep(0)
        finished.append(i)

    exe = CoroutineExecutor(max_workers=2)
    for i in range(3):
        await exe.submit(job, i)
    exe.submit_nowait(job, 3)
    await exe.shutdown()
    assert sorted(finished) == [0, 1, 2, 3]


#
# stats
#


async def test_stats_snapshot_stays_consistent(loop_kind: str) -> None:
    release = asyncio.Event()
    snapshots: list[ExecutorStats] = []

    async def parked() -> None:
        await release.wait()

    async def ok(*_: object) -> int:
        await asyncio.sleep(0)
        return 1

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("counted, not raised")

    def snap() -> ExecutorStats:
        stats = exe.stats
        assert_consistent(stats)
        snapshots.append(stats)
        return stats

    exe = CoroutineExecutor(max_workers=3, suppress_task_errors=True)
    async with exe:
        assert snap() == ExecutorStats(0, 0, 0, 0, 0, 0)
        await exe.submit(parked)
        await exe.submit(ok)
        await exe.submit(failing)
        assert snap().running == 3
        queued = [exe.submit_nowait(ok) for _ in range(4)]
        assert snap().queued == 4
        queued[1].cancel()
        await yield_many()
        assert snap() == ExecutorStats(
            submitted=7, queued=0, running=1, succeeded=4, failed=1, cancelled=1
        )
        async for _ in exe.map(ok, range(5), buffersize=2):
            snap()
        release.set()
    final = snap()
    assert final == ExecutorStats(
        submitted=12, queued=0, running=0, succeeded=10, failed=1, cancelled=1
    )
    assert final.done == 12
    with pytest.raises(AttributeError):
        final.submitted = 0  # type: ignore[misc]


@pytest.mark.parametrize("how", ["submit", "map"])
async def test_stats_stay_consistent_while_a_submitter_waits(how: str) -> None:
    # Regression: a submitter waiting for a slot was counted as queued but not submitted.
    release = asyncio.Event()

    async def parked(*_: object) -> None:
        await release.wait()

    async def consume(exe: CoroutineExecutor) -> None:
        async for _ in exe.map(parked, [1]):
            pass

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(parked)
        if how == "submit":
            waiting = asyncio.create_task(exe.submit(parked))
        else:
            waiting = asyncio.create_task(consume(exe))
        await yield_many()
        try:
            assert_consistent(exe.stats)
            assert (exe.stats.submitted, exe.stats.running) == (1, 1)
        finally:
            release.set()
            await waiting


#
# contextvars
#


async def test_contextvars_reach_running_and_queued_jobs(loop_kind: str) -> None:
    release = asyncio.Event()
    seen: dict[str, str] = {}

    async def parked(name: str) -> None:
        seen[name] = request_id.get()
        await release.wait()

    async def job(name: str) -> None:
        seen[name] = request_id.get()
        request_id.set("changed by " + name)  # stays inside the job

    async def other_submitter(exe: CoroutineExecutor) -> None:
        request_id.set("other")
        exe.submit_nowait(job, "queued-from-other")

    async with CoroutineExecutor(max_workers=1) as exe:
        request_id.set("first")
        await exe.submit(parked, "running")
        request_id.set("second")
        exe.submit_nowait(job, "queued")
        await asyncio.create_task(other_submitter(exe))
        request_id.set("third")
        waiting = asyncio.create_task(exe.submit(job, "waited-for-slot"))
        await yield_many()
        request_id.set("fourth")
        release.set()
        await waiting
    assert seen == {
        "running": "first",
        "queued": "second",  # the value when it was submitted, not when it started
        "queued-from-other": "other",
        "waited-for-slot": "third",  # create_task copied the context holding "third"
    }
    assert request_id.get() == "fourth"


async def test_contextvars_reach_map_jobs(loop_kind: str) -> None:
    async def job(i: int) -> str:
        value = request_id.get()
        request_id.set("changed")
        return f"{i}:{value}"

    async with CoroutineExecutor(max_workers=2) as exe:
        request_id.set("mapped")
        results = [r async for r in exe.map(job, range(4))]
        unordered = [r async for r in exe.map_unordered(job, range(4))]
    assert results == [f"{i}:mapped" for i in range(4)]
    assert sorted(unordered) == results
    assert request_id.get() == "mapped"


# Every job's task runs in a copy of the submitter's context as it is at the job's start,
# by every start path. These guard any cache of a context made for jobs (one was tried
# and not kept): a change always reaches the next job, an equal but distinct value is not
# taken for the same, no value is compared, and nothing is kept.

START_PATHS = {
    "in-line": {},
    "retry": {"retry": Retry()},  # in-line too, its call kept by run_job
    "job_timeout": {"job_timeout": 60.0},  # a done callback: not in-line
    "key": {"key": lambda *args: "one key", "max_per_key": 8},
}


@pytest.mark.timeout(15)
@pytest.mark.parametrize("how", ["submit", "submit_nowait", "queued"])
@pytest.mark.parametrize("options", list(START_PATHS.values()), ids=list(START_PATHS))
async def test_a_job_sees_what_the_submitter_set_last(
    loop_kind: str, how: str, options: dict[str, Any]
) -> None:
    release = asyncio.Event()
    seen: list[str] = []

    async def job() -> None:
        seen.append(request_id.get())

    async with CoroutineExecutor(max_workers=1 if how == "queued" else 8, **options) as exe:
        if how == "queued":  # the rest wait in the backlog until it ends
            await exe.submit(release.wait)
        submit = exe.submit_nowait if how != "submit" else exe.submit

        async def submit_with(value: str) -> None:
            request_id.set(value)
            started = submit(job)
            if how == "submit":
                await started

        for value in ("a", "b", "b", "c"):
            await submit_with(value)
        token = request_id.set("d")
        exe.submit_nowait(job)
        request_id.reset(token)  # back to "c", in a new mapping
        exe.submit_nowait(job)
        release.set()
    assert seen == ["a", "b", "b", "c", "d", "c"]


@pytest.mark.timeout(15)
async def test_jobs_of_two_submitters_taking_turns_see_their_own_submitters_values(
    loop_kind: str,
) -> None:
    seen: list[tuple[str, str]] = []
    turn = [asyncio.Event() for _ in range(6)]

    async def job(name: str) -> None:
        seen.append((name, request_id.get()))

    async def submitter(exe: CoroutineExecutor, name: str, turns: range) -> None:
        request_id.set(name)
        for i in turns:
            await turn[i].wait()
            await (await exe.submit(job, f"{name} {i}"))
            if i + 1 < len(turn):
                turn[i + 1].set()

    async with CoroutineExecutor(max_workers=2) as exe:
        turn[0].set()
        await asyncio.gather(
            submitter(exe, "even", range(0, 6, 2)), submitter(exe, "odd", range(1, 6, 2))
        )
    assert seen == [(f"{'odd' if i % 2 else 'even'} {i}", "odd" if i % 2 else "even")
                    for i in range(6)]


@pytest.mark.timeout(15)
@pytest.mark.parametrize("start", ["in-line", "job_timeout", "key=", "queued", "retry"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_every_map_job_sees_the_context_of_the_map_call(
    loop_kind: str, ordered: bool, start: str
) -> None:
    # Not what the consumer sets later, whenever the job starts (a window of one job: each
    # starts after the consumer changed the value); each job gets its own copy.
    options: dict[str, Any] = {
        "in-line": {}, "job_timeout": {"job_timeout": 60}, "retry": {"retry": Retry()},
        "key=": {"key": lambda i: i % 2, "max_per_key": 1}, "queued": {},
    }[start]

    async def job(i: int) -> tuple[int, str]:
        seen = request_id.get()
        request_id.set(f"set by job {i}")  # kept to this job
        return i, seen

    results: list[tuple[int, str]] = []
    async with CoroutineExecutor(max_workers=1, **options) as exe:
        request_id.set("at the call")
        buffersize = 3 if start == "queued" else None  # above the limit: jobs queue
        mapped = (exe.map if ordered else exe.map_unordered)(job, range(3), buffersize=buffersize)
        request_id.set("after the call")
        async for i, value in mapped:
            results.append((i, value))
            request_id.set(f"after result {i}")
        assert request_id.get() == "after result 2"
    assert sorted(results) == [(i, "at the call") for i in range(3)]


@pytest.mark.timeout(15)
@pytest.mark.parametrize("buffersize", [None, 4], ids=["window", "queued"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_map_calls_a_plain_fn_in_the_jobs_own_copy_of_the_context(
    loop_kind: str, ordered: bool, buffersize: int | None
) -> None:
    # A plain function returning an awaitable: its own call is part of the job, so it sees
    # the map() call's values and what it sets stays in the job (and its later attempts).
    attempts: dict[int, int] = {}
    first_seen: dict[int, str] = {}

    async def report(n: int, seen: str) -> tuple[int, str, str]:
        await asyncio.sleep(0)
        attempts[n] = attempts.get(n, 0) + 1
        if attempts[n] == 1:
            raise ConnectionError("once")  # retried: the next call sees this one's set
        return n, seen, request_id.get()

    def fetch(n: int) -> Any:
        seen = request_id.get()
        first_seen.setdefault(n, seen)
        request_id.set(f"set by job {n}")
        return report(n, seen)

    request_id.set("at the call")
    async with CoroutineExecutor(max_workers=1, retry=Retry(backoff=0)) as exe:
        mapped = (exe.map if ordered else exe.map_unordered)(fetch, range(3), buffersize=buffersize)
        request_id.set("consumer, later")
        results = [r async for r in mapped]
        assert request_id.get() == "consumer, later"
    assert sorted(results) == [
        (n, f"set by job {n}", f"set by job {n}") for n in range(3)
    ]
    assert attempts == {0: 2, 1: 2, 2: 2}
    assert first_seen == {n: "at the call" for n in range(3)}


@pytest.mark.timeout(15)
async def test_a_job_gets_the_object_set_not_an_equal_one_set_before(loop_kind: str) -> None:
    values: list[object] = [[1], [1], 1, 1.0, True, "x", "".join(["x"])]
    seen: list[object] = []

    async def job() -> None:
        seen.append(box.get())

    async with CoroutineExecutor(max_workers=2) as exe:
        for value in values:
            box.set(value)
            await exe.submit(job)
    assert len(seen) == len(values)
    assert all(got is value for got, value in zip(seen, values))


class Incomparable:
    """A value that refuses ``==``, as a numpy array or an SQLAlchemy column does."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("a context variable's value was compared")

    __ne__ = __eq__  # refuses != too
    __hash__ = object.__hash__


@pytest.mark.timeout(15)
async def test_values_are_never_compared_to_tell_a_submitters_change(loop_kind: str) -> None:
    first, second, third = Incomparable(), Incomparable(), Incomparable()
    seen: list[object] = []

    async def job() -> None:
        seen.append(box.get())

    async with CoroutineExecutor(max_workers=1) as exe:
        box.set(first)
        await exe.submit(job)
        box.set(second)  # as many variables as before, another value
        await exe.submit(job)
        box.set(third)
        exe.submit_nowait(job)  # queued behind the last
    assert [id(value) for value in seen] == [id(first), id(second), id(third)]


@pytest.mark.timeout(15)
async def test_a_jobs_own_changes_reach_neither_other_jobs_nor_the_submitter(
    loop_kind: str,
) -> None:
    changed = asyncio.Event()
    release = asyncio.Event()
    seen: dict[str, str] = {}

    async def changer() -> None:
        request_id.set("set by a job")
        changed.set()
        await release.wait()
        seen["changer at its end"] = request_id.get()

    async def look(name: str) -> None:
        seen[name] = request_id.get()

    async def submitting_job() -> None:
        request_id.set("set by a submitting job")
        await (await exe.submit(look, "its job"))

    async with CoroutineExecutor(max_workers=4) as exe:
        request_id.set("submitter")
        await exe.submit(changer)
        await changed.wait()
        await (await exe.submit(look, "a later job"))
        await (await exe.submit(submitting_job))
        await (await exe.submit(look, "a job after that"))
        release.set()
    assert seen == {
        "a later job": "submitter",
        "its job": "set by a submitting job",
        "a job after that": "submitter",
        "changer at its end": "set by a job",
    }
    assert request_id.get() == "submitter"


@pytest.mark.timeout(15)
async def test_a_closed_executor_keeps_no_value_of_its_submitters(loop_kind: str) -> None:
    class Value:
        pass

    async def noop() -> None:
        pass

    async def submitter(exe: CoroutineExecutor) -> weakref.ref[Value]:
        value = Value()
        box.set(value)
        await (await exe.submit(noop))
        return weakref.ref(value)

    async with CoroutineExecutor() as exe:
        ref = await asyncio.create_task(submitter(exe))
    gc.collect()
    assert ref() is None


@pytest.mark.timeout(15)
@pytest.mark.parametrize("how", ["submit", "queued"])
@pytest.mark.parametrize("options", list(START_PATHS.values()), ids=list(START_PATHS))
async def test_shutdown_in_a_job_never_waits_however_the_job_started(
    loop_kind: str, how: str, options: dict[str, Any]
) -> None:
    """It would wait for its own job (for ever) if the job's context did not say where it
    runs: the watchdog would end the test."""
    release = asyncio.Event()
    order: list[str] = []

    async def closer() -> None:
        await exe.shutdown()  # returns at once: it may not wait from here
        order.append("shut down")
        release.set()

    async def quick() -> None:
        pass

    async with CoroutineExecutor(max_workers=2, **options) as exe:
        await exe.submit(release.wait)
        if how == "queued":  # the closer starts from the quick job's end
            exe.submit_nowait(quick)
            exe.submit_nowait(closer)
        else:
            await exe.submit(closer)
    assert order == ["shut down"]
    assert release.is_set()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.9/3.10 take Self from typing_extensions")
def test_importing_the_package_leaves_typing_extensions_unimported() -> None:
    # Its names matter to type checkers only; importing it would put some 600 more
    # objects in every full collection of the garbage collector.
    code = "import sys, coroexecutor; print('typing_extensions' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_an_executor_keeps_its_state_in_slots_and_can_be_weakly_referenced() -> None:
    # More attributes than CPython's shared-key instance dicts hold: with a __dict__,
    # every attribute read of the hot path would be a dict lookup.
    import weakref

    exe = CoroutineExecutor(max_workers=3)
    assert not hasattr(exe, "__dict__")
    ref = weakref.ref(exe)
    assert ref() is exe
    del exe
    assert ref() is None
