"""Options beyond the seed: rate limit, per-job deadline, live resizing, counts and hook."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import coroexecutor
from coroexecutor import CoroutineExecutor, ExecutorStats, ExecutorTimeoutError, JobTimeoutError
from coroexecutor._ratelimit import RateLimiter
from tests.conftest import new_loop

pytestmark = pytest.mark.timeout(15)


async def park() -> None:
    await asyncio.Event().wait()


#
# Rate limit
#


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_burst_then_steady_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10.0, burst=3, clock=clock)
    assert [limiter.try_take() for _ in range(4)] == [True, True, True, False]
    assert limiter.delay() == pytest.approx(0.1)
    clock.now += 0.05
    assert not limiter.try_take()
    assert limiter.delay() == pytest.approx(0.05)
    clock.now += 0.05
    assert limiter.try_take()
    clock.now += 60  # a long idle period refills to the burst, never beyond
    assert [limiter.try_take() for _ in range(4)] == [True, True, True, False]


def test_rate_limiter_window_bound_holds_for_any_take_pattern() -> None:
    """Over any window of t seconds at most burst + rate * t starts (the documented rule)."""
    clock = FakeClock()
    limiter = RateLimiter(rate=4.0, burst=2, clock=clock)
    starts = []
    for step in range(400):
        clock.now = 100.0 + step * 0.013
        if limiter.try_take():
            starts.append(clock.now)
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            window = starts[j] - first
            assert j - i + 1 <= 2 + 4.0 * window + 1e-9


async def test_max_per_second_spaces_job_starts(
    loop_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starts are spaced by the limiter's own clock (the loop's time when the token was
    taken): jobs record nothing themselves, since when a started task first runs varies."""
    taken: list[float] = []
    real_try_take = RateLimiter.try_take

    def recording_try_take(self: RateLimiter) -> bool:
        ok = real_try_take(self)
        if ok:
            taken.append(self._stamp)  # the clock reading this token was taken at
        return ok

    monkeypatch.setattr(RateLimiter, "try_take", recording_try_take)
    ran = 0

    async def job() -> None:
        nonlocal ran
        ran += 1

    async with CoroutineExecutor(max_workers=10, max_per_second=50) as exe:
        for _ in range(6):
            await exe.submit(job)  # back-pressure: waits for a token too
    assert ran == 6
    assert len(taken) == 6
    gaps = [b - a for a, b in zip(taken, taken[1:])]
    assert min(gaps) >= 1 / 50 - 1e-6


async def test_burst_lets_that_many_start_at_once_then_queues() -> None:
    async with CoroutineExecutor(max_workers=10, max_per_second=20, burst=3) as exe:
        handles = [exe.submit_nowait(park) for _ in range(4)]
        assert [isinstance(h, asyncio.Task) for h in handles] == [True, True, True, False]
        assert exe.stats.running == 3 and exe.stats.queued == 1
        while exe.stats.running < 4:  # the fourth starts once a token arrives
            await asyncio.sleep(0.01)
        await exe.shutdown(wait=False)


async def test_rate_limit_and_max_workers_together() -> None:
    release = asyncio.Event()
    peak = running = 0

    async def job() -> None:
        nonlocal peak, running
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    async with CoroutineExecutor(max_workers=2, max_per_second=1000, burst=5) as exe:
        for _ in range(2):
            await exe.submit(job)
        third = asyncio.ensure_future(exe.submit(job))
        await asyncio.sleep(0.01)
        assert not third.done()  # tokens are there, slots are not
        release.set()
        await third
    assert peak == 2


def test_rate_limiter_reconfigure_keeps_earned_tokens_up_to_the_new_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=5, clock=clock)
    assert [limiter.try_take() for _ in range(5)] == [True] * 5
    clock.now += 2  # two tokens earned at the old rate
    limiter.reconfigure(rate=100.0, burst=1)
    assert limiter.try_take()  # one kept: the new burst
    assert not limiter.try_take()
    assert limiter.delay() == pytest.approx(0.01)  # the new rate from now on
    clock.now += 0.01
    assert limiter.try_take()


# One token per 1000 s: a job held back by it never starts within a test, so what starts
# and what waits does not depend on timing.
STARVED = 0.001


async def test_max_per_second_can_be_lifted_while_jobs_wait(loop_kind: str) -> None:
    ran: list[int] = []
    all_ran = asyncio.Event()

    async def job(n: int) -> None:
        ran.append(n)
        if len(ran) == 3:
            all_ran.set()

    async with CoroutineExecutor(max_workers=10, max_per_second=STARVED) as exe:
        handles = [exe.submit_nowait(job, n) for n in range(3)]
        assert [isinstance(h, asyncio.Task) for h in handles] == [True, False, False]
        assert exe.stats.queued == 2
        exe.max_per_second = None  # the queued jobs start without waiting 1000 s
        assert exe.max_per_second is None
        await asyncio.wait_for(all_ran.wait(), 5)
    assert ran == [0, 1, 2]


async def test_max_per_second_can_be_imposed_and_changed_while_jobs_run(loop_kind: str) -> None:
    async with CoroutineExecutor(max_workers=10) as exe:
        first = exe.submit_nowait(park)
        assert isinstance(first, asyncio.Task)
        exe.max_per_second = STARVED  # a fresh bucket: one start (the burst), then none
        assert exe.max_per_second == STARVED and exe.burst == 1
        assert isinstance(exe.submit_nowait(park), asyncio.Task)
        held = exe.submit_nowait(park)
        assert not isinstance(held, asyncio.Task)  # queued: no token
        exe.burst = 3
        assert not isinstance(exe.submit_nowait(park), asyncio.Task)  # still no token
        exe.max_per_second = 1e9  # raised: the queued ones start on the next turns

        async def queue_empties() -> None:
            while exe.stats.queued:
                await asyncio.sleep(0)

        await asyncio.wait_for(queue_empties(), 5)
        assert exe.stats.running == 4
        await exe.shutdown(wait=False)


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_running_map_follows_a_new_max_per_second(ordered: bool) -> None:
    started: list[int] = []

    async def job(n: int) -> int:
        started.append(n)
        return n

    async with CoroutineExecutor(max_workers=10) as exe:
        it = (exe.map if ordered else exe.map_unordered)(job, range(4))
        exe.max_per_second = STARVED  # set after the map was made, before it starts jobs
        assert await it.__anext__() == 0  # the one token
        waiting = asyncio.ensure_future(it.__anext__())
        for _ in range(20):
            await asyncio.sleep(0)
        assert started == [0] and not waiting.done()  # the map honours the new limit
        exe.max_per_second = None
        assert await asyncio.wait_for(waiting, 5) == 1
        assert sorted([r async for r in it]) == [2, 3]


async def test_max_per_second_set_before_first_use_applies() -> None:
    exe = CoroutineExecutor(max_workers=10)
    exe.max_per_second = STARVED
    exe.burst = 2
    async with exe:
        handles = [exe.submit_nowait(park) for _ in range(3)]
        assert [isinstance(h, asyncio.Task) for h in handles] == [True, True, False]
        await exe.shutdown(wait=False)


@pytest.mark.virtual_time
async def test_a_start_token_taken_for_a_grant_cancelled_before_it_resumed_comes_back() -> None:
    """A submit() waiter granted its slot, with a start token, but cancelled before it
    resumed starts no job: its token must go back, or the next start waits a whole token
    interval for nothing (found by a docs-only tester: a start 1/max_per_second late).
    Two tokens (burst=2), then one per 1000 s of the loop's virtual clock."""
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    waiter: asyncio.Future[Any] | None = None

    def on_job_done(job: asyncio.Future[Any]) -> None:
        # Called once the parked job has settled: its slot and the second token are
        # granted to the waiter, which has not resumed yet.
        if waiter is not None and not waiter.done():
            waiter.cancel()

    async with CoroutineExecutor(
        max_workers=1, max_per_second=STARVED, burst=2, on_job_done=on_job_done
    ) as exe:
        parked = await exe.submit(release.wait)  # the first token
        waiter = asyncio.ensure_future(exe.submit(park))
        await asyncio.sleep(0)  # in line
        release.set()
        await parked
        released = loop.time()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        started: list[float] = []

        async def job() -> None:
            started.append(loop.time())

        await exe.submit(job)
        await exe.shutdown()
    assert started[0] - released < 1.0  # the returned token, not one 1000 s later


@pytest.mark.virtual_time
async def test_a_start_token_taken_for_a_grant_a_shrink_sent_back_comes_back() -> None:
    """The same for a waiter granted a slot and a token and sent back to wait again
    because max_workers shrank before it resumed: when the limit grows back it starts
    on that token at once."""
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    shrunk = False

    def on_job_done(job: asyncio.Future[Any]) -> None:
        nonlocal shrunk
        if not shrunk:  # the first parked job settled: the waiter is granted its slot
            shrunk = True
            exe.max_workers = 1  # ... which a job still holds: it must wait again

    started: list[float] = []

    async def job() -> None:
        started.append(loop.time())

    async with CoroutineExecutor(
        max_workers=2, max_per_second=STARVED, burst=3, on_job_done=on_job_done
    ) as exe:
        first = await exe.submit(release.wait)  # two tokens, the third is the waiter's
        await exe.submit(park)
        waiter = asyncio.ensure_future(exe.submit(job))
        await asyncio.sleep(0)  # in line
        release.set()
        await first
        for _ in range(3):
            await asyncio.sleep(0)  # the waiter resumes, finds no room and waits again
        assert not waiter.done()
        grown = loop.time()
        exe.max_workers = 2
        await waiter
        await exe.shutdown(wait=False)
    assert started[0] - grown < 1.0  # its returned token, not one 1000 s later


async def test_rate_setters_validate_as_the_constructor_does() -> None:
    async with CoroutineExecutor(max_workers=2) as exe:
        with pytest.raises(ValueError, match=re.escape("burst requires max_per_second")):
            exe.burst = 3
        with pytest.raises(
            ValueError, match=re.escape("max_per_second must be greater than 0 (got 0)")
        ):
            exe.max_per_second = 0
        with pytest.raises(
            TypeError, match=re.escape("max_per_second must be a number or None (got '5')")
        ):
            exe.max_per_second = "5"  # type: ignore[assignment]
        exe.max_per_second = 5
        with pytest.raises(ValueError, match=re.escape("burst must be an int greater than 0")):
            exe.burst = 0
        with pytest.raises(ValueError, match=re.escape(
            "max_per_second must be large enough that 1/max_per_second is finite (got 1e-320)"
        )):
            exe.max_per_second = 1e-320  # an infinite spacing (brk20)
        assert (exe.max_per_second, exe.burst) == (5.0, 1)  # unchanged by the refusals


#
# Per-job deadline
#


async def test_job_timeout_fails_the_job_with_timeout_error_under_fail_fast(
    loop_kind: str,
) -> None:
    with pytest.raises(TimeoutError):
        async with CoroutineExecutor(job_timeout=0.05) as exe:
            await exe.submit(park)
            await asyncio.Event().wait()


async def test_job_timeout_under_suppress_stays_in_the_job() -> None:
    async def quick() -> str:
        return "fast"

    async with CoroutineExecutor(job_timeout=0.05, suppress_task_errors=True) as exe:
        slow = await exe.submit(park)
        fast = await exe.submit(quick)
    assert isinstance(slow.exception(), TimeoutError)
    assert fast.result() == "fast"
    assert exe.stats.failed == 1 and exe.stats.succeeded == 1


async def test_job_timeout_applies_to_queued_jobs_from_their_start() -> None:
    started = asyncio.Event()

    async def first() -> None:
        started.set()
        await asyncio.sleep(0.01)

    async with CoroutineExecutor(max_workers=1, job_timeout=5) as exe:
        a = exe.submit_nowait(first)
        b = exe.submit_nowait(first)
    assert a.result() is None and b.result() is None


async def test_job_timeout_error_is_public_and_names_the_job_and_the_limit(
    loop_kind: str,
) -> None:
    async def fetch(url: str, *, retries: int) -> None:
        await park()

    url = "https://example.com/" + "x" * 200
    with pytest.raises(JobTimeoutError) as info:
        async with CoroutineExecutor(job_timeout=0.05) as exe:
            await exe.submit(fetch, url, retries=3)
            await park()
    error = info.value
    assert isinstance(error, TimeoutError) and isinstance(error, asyncio.TimeoutError)
    assert type(error) is coroexecutor.JobTimeoutError
    assert f"{type(error).__module__}.{type(error).__qualname__}" == "coroexecutor.JobTimeoutError"
    # The arguments are shortened by reprlib: the message stays one readable line.
    assert re.fullmatch(
        r"job fetch\('https://example\.com/x+\.\.\.x+', retries=3\) ran longer than"
        r" job_timeout=0\.05 s",
        str(error),
    ), str(error)
    assert len(str(error)) < 150
    assert isinstance(error.__cause__, asyncio.CancelledError)  # where the job was stuck


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (functools.partial(park), "job park() ran longer"),  # a partial shows the call it makes
        (park, "job park() ran longer"),
    ],
)
async def test_job_timeout_message_names_any_callable(fn: Any, expected: str) -> None:
    async with CoroutineExecutor(job_timeout=0.01, suppress_task_errors=True) as exe:
        task = await exe.submit(fn)
    assert str(task.exception()).startswith(expected)


async def test_job_timeout_leaves_a_jobs_own_timeout_error_alone(loop_kind: str) -> None:
    own = TimeoutError("the server said no")

    async def job() -> None:
        await asyncio.sleep(0)
        raise own

    with pytest.raises(TimeoutError) as info:
        async with CoroutineExecutor(job_timeout=5) as exe:
            await exe.submit(job)
    assert info.value is own


async def test_executor_timeout_error_is_public(loop_kind: str) -> None:
    with pytest.raises(ExecutorTimeoutError) as info:
        async with CoroutineExecutor(timeout=0.05) as exe:
            await exe.submit(park)
            await park()
    error = info.value
    assert isinstance(error, TimeoutError) and isinstance(error, asyncio.TimeoutError)
    assert not isinstance(error, JobTimeoutError)
    assert f"{type(error).__module__}.{type(error).__qualname__}" == (
        "coroexecutor.ExecutorTimeoutError"
    )
    assert "timed out after 0.05 seconds" in str(error)


#
# A job cancelled before its first step, under every option combination
#


def _hook(task: asyncio.Future[Any]) -> None:
    pass


def _init() -> None:
    pass


OPTION_SETS = [
    {name: value for name, value in zip(("job_timeout", "initializer", "on_job_done"), values)}
    for values in itertools.product((None, 5.0), (None, _init), (None, _hook))
]


@pytest.mark.parametrize(
    "options", OPTION_SETS, ids=lambda o: "+".join(k for k, v in o.items() if v) or "none"
)
@pytest.mark.parametrize(
    ("trigger", "suppress"), [("fail-fast", False), ("body-error", False), ("body-error", True)]
)
async def test_job_cancelled_before_its_first_step_leaves_no_unawaited_coroutine(
    loop_kind: str, options: dict[str, Any], suppress: bool, trigger: str
) -> None:
    """Issue 16, item 5. Fail-fast cancels a job that a finished job started from the
    backlog in the same turn of the loop; a body error cancels jobs just submitted. Either
    way the job's coroutine (and any wrapper around it) is closed, not left to warn
    "coroutine ... was never awaited" (warnings are errors; gc runs after the test)."""
    gate = asyncio.Event()
    started: list[str] = []

    async def ok() -> None:
        await gate.wait()

    async def boom() -> None:
        await gate.wait()
        raise ValueError("boom")

    async def fresh() -> None:
        started.append("fresh")

    exe = CoroutineExecutor(max_workers=2, suppress_task_errors=suppress, **options)
    if trigger == "fail-fast":
        with pytest.raises(ValueError, match="boom"):
            async with exe:
                exe.submit_nowait(ok)
                exe.submit_nowait(boom)
                late = exe.submit_nowait(fresh)  # queued: ok's end starts it, boom's cancels it
                gate.set()
                await park()
    else:
        with pytest.raises(KeyError):
            async with exe:
                late = exe.submit_nowait(fresh)
                also = await exe.submit(fresh)
                raise KeyError("body")
        assert also.cancelled() or loop_kind == "eager"
    if loop_kind != "eager":  # an eager task factory runs a job's first step at its start
        assert late.cancelled() and started == []
    gc.collect()


_EXIT_SCRIPT = """
import asyncio
from coroexecutor import CoroutineExecutor

kept = []  # finalised only at interpreter exit, where a warning used to print

async def fresh():
    pass

async def main():
    for options in ({"job_timeout": 5}, {"job_timeout": 5, "initializer": lambda: None}):
        try:
            async with CoroutineExecutor(**options) as exe:
                kept.append(exe.submit_nowait(fresh))
                raise KeyError("body")
        except KeyError:
            pass

asyncio.run(main())
"""


def test_interpreter_exit_after_jobs_cancelled_before_their_first_step_is_silent() -> None:
    """Issue 16, item 5: on 3.13 the unawaited wrapper was finalised at exit and printed
    "Exception ignored ... KeyError: '__import__'"; under -W error, any warning fails."""
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", _EXIT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


#
# Live resizing
#


async def test_growing_max_workers_starts_backlog_at_once(loop_kind: str) -> None:
    async with CoroutineExecutor(max_workers=1) as exe:
        handles = [exe.submit_nowait(park) for _ in range(4)]
        assert exe.stats.running == 1 and exe.stats.queued == 3
        exe.max_workers = 3
        assert exe.stats.running == 3 and exe.stats.queued == 1
        assert exe.max_workers == 3
        await exe.shutdown(wait=False)
    assert all(h.cancelled() for h in handles)


async def test_shrinking_max_workers_lets_running_finish_and_starts_none() -> None:
    gates = [asyncio.Event() for _ in range(4)]
    running = 0
    peak_after_shrink = 0
    shrunk = False

    async def job(i: int) -> None:
        nonlocal running, peak_after_shrink
        running += 1
        if shrunk:
            peak_after_shrink = max(peak_after_shrink, running)
        await gates[i].wait()
        running -= 1

    async with CoroutineExecutor(max_workers=3) as exe:
        for i in range(3):
            await exe.submit(job, i)
        queued = exe.submit_nowait(job, 3)
        exe.max_workers = 1
        shrunk = True
        assert exe.stats.running == 3  # nothing cancelled
        gates[0].set()
        gates[1].set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert exe.stats.running == 1 and exe.stats.queued == 1  # still at the old count
        gates[2].set()
        gates[3].set()
        await queued
    assert peak_after_shrink == 1


class StartLog:
    """Jobs that record, at the moment the executor starts them, how many jobs were running
    and the limit then. ``job`` is a plain function returning the job's coroutine, so it
    runs exactly where the executor decides to start a job (every start path calls fn
    there), not a turn later when the task takes its first step. A job counts as running
    from then until its body ends, which is before the executor frees its slot."""

    def __init__(self, exe: CoroutineExecutor) -> None:
        self.exe = exe
        self.active = 0
        self.starts: list[tuple[int, int]] = []  # (running, max_workers) at each start
        self.gates: list[asyncio.Future[None]] = []

    def job(self, *_: object) -> Any:
        self.starts.append((self.active, self.exe.max_workers))
        self.active += 1
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        return self._body(gate)

    async def _body(self, gate: asyncio.Future[None]) -> None:
        try:
            await gate
        finally:
            self.active -= 1

    def release_all(self) -> None:
        for gate in self.gates:
            if not gate.done():
                gate.set_result(None)


@pytest.mark.parametrize("how", ["submit", "map"])
async def test_a_slot_granted_before_a_shrink_is_not_used_above_the_new_limit(
    loop_kind: str, how: str
) -> None:
    """Regression (issue 16): a waiter granted a slot that had not resumed yet when
    max_workers shrank started its job anyway, above the new limit (running 2, limit 2)."""
    async with CoroutineExecutor(max_workers=2) as exe:
        log = StartLog(exe)
        await exe.submit(log.job)
        await exe.submit(log.job)
        if how == "submit":
            waiter = asyncio.ensure_future(exe.submit(log.job))
        else:  # a map whose window is empty waits for a slot in the same line
            waiter = asyncio.ensure_future(exe.map(log.job, [0]).__anext__())
        for _ in range(3):
            await asyncio.sleep(0)
        assert exe.stats.running == 2 and not waiter.done()
        exe.max_workers = 3  # grants the waiter a slot; it has not resumed yet
        exe.max_workers = 2
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(log.starts) == 2, "the waiter must wait again, first in line"
        assert exe.stats.running == 2
        log.gates[0].set_result(None)  # one job ends: now the waiter's job may start
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(log.starts) == 3
        log.release_all()
        await waiter
    assert log.starts == [(0, 2), (1, 2), (1, 2)]


async def test_waiters_that_hand_back_their_slots_keep_their_order(loop_kind: str) -> None:
    """Two waiters granted slots by a grow, then both sent back by a shrink before they
    resumed, wait again in their original order, ahead of a waiter never granted one."""
    order: list[str] = []
    gates: dict[str, asyncio.Event] = {}

    def job(name: str) -> Any:
        order.append(name)
        gates[name] = asyncio.Event()
        return gates[name].wait()

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(job, "running")
        waiters = [asyncio.ensure_future(exe.submit(job, name)) for name in ("w1", "w2")]
        for _ in range(3):
            await asyncio.sleep(0)
        exe.max_workers = 3  # grants w1 and w2 a slot each; neither has resumed
        later = asyncio.ensure_future(exe.submit(job, "later"))
        exe.max_workers = 1
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == ["running"]
        for i in range(3):
            gates[order[i]].set()  # each end lets the next in line start
            for _ in range(5):
                await asyncio.sleep(0)
            assert len(order) == i + 2
        assert order == ["running", "w1", "w2", "later"]
        gates["later"].set()
        await asyncio.gather(*waiters, later)


async def test_a_slot_freed_after_a_waiter_was_sent_back_goes_to_that_waiter_first(
    loop_kind: str,
) -> None:
    """w1 and w2 are granted slots by two grows, then a shrink sends w1 back as it
    resumes; a job ends before w2 resumes, so w2 finds room, but w1 is ahead of it."""
    order: list[str] = []
    gates: dict[str, asyncio.Event] = {}

    def job(name: str) -> Any:
        order.append(name)
        gates[name] = asyncio.Event()
        return gates[name].wait()

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(job, "a")
        waiters = [asyncio.ensure_future(exe.submit(job, name)) for name in ("w1", "w2")]
        for _ in range(3):
            await asyncio.sleep(0)
        # The wake-ups queue up in this order: w1 (granted), a (its job ends), w2 (granted).
        exe.max_workers = 2
        gates["a"].set()
        exe.max_workers = 3
        exe.max_workers = 1
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == ["a", "w1"]
        gates["w1"].set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == ["a", "w1", "w2"]
        gates["w2"].set()
        await asyncio.gather(*waiters)


@pytest.mark.timeout(90)  # a failing run shrinks its example: give it room to report
@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("submit"), st.just(0)),
            st.tuples(st.just("submit_nowait"), st.just(0)),
            st.tuples(st.just("map"), st.integers(1, 4)),
            st.tuples(st.just("finish"), st.integers(0, 20)),
            st.tuples(st.just("resize"), st.integers(1, 4)),
            st.tuples(st.just("yield"), st.integers(1, 3)),
        ),
        max_size=40,
    )
)
def test_no_job_starts_while_max_workers_or_more_run(
    loop_kind: str, steps: list[tuple[str, int]]
) -> None:
    """After ``exe.max_workers = n``, no job starts while n or more are running: across
    random interleavings of starts, job ends and resizes (with 0-3 loop turns between
    them, so a resize lands between a grant and the waiter's resumption too), every job
    starts with fewer running than the limit at that moment. Loop turns, not time, decide
    each interleaving, so an example is deterministic."""

    async def scenario() -> list[tuple[int, int]]:
        async with CoroutineExecutor(max_workers=2) as exe:
            log = StartLog(exe)
            producers: list[asyncio.Future[Any]] = []

            async def consume(k: int) -> None:
                async for _ in exe.map(log.job, range(k), buffersize=2):
                    pass

            for what, n in steps:
                if what == "submit":
                    producers.append(asyncio.ensure_future(exe.submit(log.job)))
                elif what == "submit_nowait":
                    producers.append(exe.submit_nowait(log.job))
                elif what == "map":
                    producers.append(asyncio.ensure_future(consume(n)))
                elif what == "finish":
                    live = [gate for gate in log.gates if not gate.done()]
                    if live:
                        live[n % len(live)].set_result(None)
                elif what == "resize":
                    exe.max_workers = n
                else:
                    for _ in range(n):
                        await asyncio.sleep(0)
            for _ in range(1000):  # let everything start and end; bounded, not timed
                if all(p.done() for p in producers) and not exe.stats.running:
                    break
                log.release_all()
                await asyncio.sleep(0)
            log.release_all()
        for producer in producers:
            producer.result()  # no job or producer failed
        return log.starts

    problems: list[object] = []
    loop = new_loop(loop_kind)
    loop.set_exception_handler(lambda _, context: problems.append(context))
    try:
        starts = loop.run_until_complete(asyncio.wait_for(scenario(), 10))
    finally:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:  # only when the example failed
            loop.run_until_complete(asyncio.wait(leftovers, timeout=5))
        loop.close()
    assert not problems
    above = [(running, limit) for running, limit in starts if running >= limit]
    assert not above, f"jobs started with (running, max_workers) = {above}"


async def test_max_workers_setter_validates() -> None:
    exe = CoroutineExecutor(max_workers=2)
    with pytest.raises(ValueError, match=re.escape("max_workers must be greater than 0")):
        exe.max_workers = 0
    with pytest.raises(TypeError, match=re.escape("max_workers must be an int (got 1.5)")):
        exe.max_workers = 1.5  # type: ignore[assignment]
    assert exe.max_workers == 2
    exe.max_workers = None  # the default, as in the constructor
    assert exe.max_workers == 1000


@pytest.mark.parametrize("value", ["no", 0, None])
def test_suppress_task_errors_takes_only_true_or_false(value: object) -> None:
    # "no" was taken as true: every job error absorbed (found by a docs-only tester).
    message = f"^suppress_task_errors must be True or False \\(got {value!r}\\)$"
    with pytest.raises(TypeError, match=message):
        CoroutineExecutor(suppress_task_errors=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["no", 0, None])
@pytest.mark.parametrize("method", ["map", "map_unordered"])
async def test_a_maps_return_exceptions_takes_only_true_or_false(
    method: str, value: object
) -> None:
    # "no" was taken as true: errors yielded as results (found while typing the maps).
    message = f"^return_exceptions must be True or False \\(got {value!r}\\)$"
    async with CoroutineExecutor() as exe:
        with pytest.raises(TypeError, match=message):
            getattr(exe, method)(asyncio.sleep, [0], return_exceptions=value)
    assert exe.stats.submitted == 0


def test_a_setter_on_another_loop_is_refused_once_the_executors_loop_has_finished() -> None:
    # "The executor's first call on another loop raises RuntimeError, whatever the call":
    # the setters were accepted there (found by a docs-only tester). With no loop running
    # they stay allowed.
    exe = CoroutineExecutor(max_workers=2, max_per_second=10.0)

    async def use() -> None:
        await (await exe.submit(asyncio.sleep, 0))

    async def set_all() -> None:
        for name, value in (("max_workers", 3), ("max_per_second", 5.0), ("burst", 2)):
            with pytest.raises(RuntimeError, match="cannot be used from another"):
                setattr(exe, name, value)

    asyncio.run(use())
    asyncio.run(set_all())
    assert (exe.max_workers, exe.max_per_second, exe.burst) == (2, 10.0, 1)
    exe.max_workers = 4  # no loop runs
    assert exe.max_workers == 4


#
# Counts and the completion hook
#


async def test_stats_and_hook_track_every_outcome(loop_kind: str) -> None:
    seen: list[asyncio.Future[Any]] = []

    async def ok() -> int:
        return 1

    async def bad() -> None:
        raise ValueError("x")

    exe = CoroutineExecutor(max_workers=2, suppress_task_errors=True, on_job_done=seen.append)
    assert exe.stats == ExecutorStats(0, 0, 0, 0, 0, 0)
    async with exe:
        await exe.submit(ok)
        await exe.submit(bad)
        blocked = exe.submit_nowait(park)
        dropped = exe.submit_nowait(park)
        snapshot = exe.stats
        assert snapshot.submitted == 4
        assert snapshot.queued + snapshot.running + snapshot.done == snapshot.submitted
        dropped.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        blocked.cancel()
    final = exe.stats
    assert final == ExecutorStats(
        submitted=4, queued=0, running=0, succeeded=1, failed=1, cancelled=2
    )
    assert final.done == 4
    # The hook sees every job once, with the future its submitter holds: the dropped one
    # (cancelled before it started) and the one cancelled while it ran included.
    assert len(seen) == 4
    assert dropped in seen and blocked in seen
    assert sum(f.cancelled() for f in seen) == 2


@pytest.mark.parametrize(
    "end", ["cancelled in the queue", "fail-fast", "shutdown", "fails to start", "started"]
)
@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "key="])
async def test_hook_is_called_once_with_a_queued_jobs_own_future(
    loop_kind: str, end: str, keyed: bool
) -> None:
    # Found by a docs-only tester: a queued job that never started never reached the
    # hook (a progress bar driven by it never reached its total), and one that started
    # reached it with its task, not the future submit_nowait() had returned.
    seen: list[asyncio.Future[Any]] = []
    counted: list[int] = []  # stats.done as the hook sees it
    gate = asyncio.Event()
    error = LookupError("job failed")

    async def hold() -> None:
        await gate.wait()

    async def fails() -> None:
        # Fails once the gate is open: under an eager task factory, failing in its first
        # step, inside submit_nowait(), would stop the executor there, and the next
        # submit_nowait() would be refused, not queued (tests/test_eager_settle.py).
        await gate.wait()
        raise error

    def hook(future: asyncio.Future[Any]) -> None:
        seen.append(future)
        counted.append(exe.stats.done)

    options: dict[str, Any] = {"key": lambda *a: "k", "max_per_key": 1} if keyed else {}
    exe = CoroutineExecutor(
        max_workers=1, on_job_done=hook,
        suppress_task_errors=end != "fail-fast", **options,
    )
    with pytest.raises(LookupError) if end == "fail-fast" else contextlib.nullcontext():
        async with exe:
            running = exe.submit_nowait(fails if end == "fail-fast" else hold)
            queued = exe.submit_nowait(len if end == "fails to start" else hold)  # type: ignore[arg-type]
            if end == "cancelled in the queue":
                queued.cancel()
            elif end == "shutdown":
                await exe.shutdown(wait=False)
            gate.set()
    assert queued.done()
    assert exe.stats.done == 2
    assert sorted(map(id, seen)) == sorted(map(id, [running, queued]))
    assert all(done >= calls for calls, done in enumerate(counted, 1))  # counted first


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "key="])
async def test_hook_for_a_started_queued_job_cancelled_through_its_future_waits_for_its_end(
    loop_kind: str, keyed: bool
) -> None:
    # Found by a docs-only tester: cancelling the future ends it at once, but the job
    # ends only when its task does (here after a clean-up); the hook must come then,
    # after stats counted it, not as the future is cancelled.
    seen: list[tuple[asyncio.Future[Any], str, int]] = []
    state: dict[str, str] = {}
    started, release, gate = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        await gate.wait()

    async def stubborn() -> None:
        state["job"] = "running"
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            state["job"] = "cleaning up"
            await release.wait()
            state["job"] = "ended"
            raise

    def hook(future: asyncio.Future[Any]) -> None:
        seen.append((future, state.get("job", "-"), exe.stats.cancelled))

    options: dict[str, Any] = {"key": lambda *a: "k", "max_per_key": 1} if keyed else {}
    exe = CoroutineExecutor(
        max_workers=1, suppress_task_errors=True, on_job_done=hook, **options
    )
    async with exe:
        exe.submit_nowait(first)
        queued = exe.submit_nowait(stubborn)
        gate.set()
        await started.wait()
        assert queued.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(seen) == 1 and seen[0][0] is not queued  # first's only
        release.set()
    assert len(seen) == 2
    assert seen[1] == (queued, "ended", 1)


async def test_hook_that_raises_is_reported_not_dropped() -> None:
    reports: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    try:

        def hook(_: asyncio.Future[Any]) -> None:
            raise RuntimeError("hook failed")

        async def ok() -> int:
            return 1

        async with CoroutineExecutor(on_job_done=hook) as exe:
            first = await exe.submit(ok)
            second = await exe.submit(ok)
    finally:
        loop.set_exception_handler(previous)
    assert first.result() == second.result() == 1  # the executor carried on
    assert len(reports) == 2
    assert isinstance(reports[0]["exception"], RuntimeError)


#
# Validation at construction
#


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_per_second": 0}, ValueError, "max_per_second must be greater than 0 (got 0)"),
        ({"max_per_second": -1.5}, ValueError, "max_per_second must be greater than 0 (got -1.5)"),
        ({"max_per_second": "5"}, TypeError, "max_per_second must be a number or None (got '5')"),
        ({"max_per_second": 5, "burst": 0}, ValueError, "burst must be an int greater than 0"),
        ({"max_per_second": 5, "burst": 1.5}, TypeError, "burst must be an int or None (got 1.5)"),
        ({"max_per_second": 5, "burst": "2"}, TypeError, "burst must be an int or None (got '2')"),
        ({"burst": "2"}, TypeError, "burst must be an int or None (got '2')"),
        (
            {"max_per_second": float("inf")},
            ValueError,
            "max_per_second must be a finite number (got inf)",
        ),
        (
            {"job_timeout": float("inf")},
            ValueError,
            "job_timeout must be a finite number (got inf)",
        ),
        ({"timeout": float("inf")}, ValueError, "timeout must be a finite number (got inf)"),
        # A positive rate whose spacing 1/rate overflows: the second submit() waited for
        # ever (brk20).
        (
            {"max_per_second": 1e-320},
            ValueError,
            "max_per_second must be large enough that 1/max_per_second is finite (got 1e-320)",
        ),
        ({"burst": 3}, ValueError, "burst requires max_per_second"),
        ({"job_timeout": 0}, ValueError, "job_timeout must be greater than 0 (got 0)"),
        ({"job_timeout": -1}, ValueError, "job_timeout must be greater than 0 (got -1)"),
        ({"job_timeout": "1"}, TypeError, "job_timeout must be a number of seconds or None"),
        ({"timeout": 0}, ValueError, "timeout must be greater than 0 (got 0)"),
        ({"timeout": float("nan")}, ValueError, "timeout must be greater than 0 (got nan)"),
        ({"on_job_done": 3}, TypeError, "on_job_done must be a callable or None (got 3)"),
        ({"initializer": 3}, TypeError, "initializer must be a callable or None (got 3)"),
        ({"max_workers": 0}, ValueError, "max_workers must be greater than 0"),
        ({"max_workers": True}, TypeError, "max_workers must be an int (got True)"),
    ],
)
def test_options_are_validated_at_construction(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        CoroutineExecutor(**kwargs)


class _AsyncHook:
    async def __call__(self, future: asyncio.Future[Any]) -> None:
        pass


async def _async_hook(future: asyncio.Future[Any]) -> None:
    pass


async def _async_generator_hook(future: asyncio.Future[Any]) -> AsyncIterator[None]:
    yield


@pytest.mark.parametrize(
    "hook",
    [_async_hook, functools.partial(_async_hook), _AsyncHook(), _async_generator_hook],
    ids=["async def", "partial", "async __call__", "async generator"],
)
def test_an_async_hook_is_refused_at_construction(hook: Any) -> None:
    # It is called, never awaited: accepted, its body never ran (a docs-only tester).
    with pytest.raises(TypeError, match="on_job_done must be a plain callable, not an async"):
        CoroutineExecutor(on_job_done=hook)


async def test_shutdown_grace_is_validated() -> None:
    exe = CoroutineExecutor()
    with pytest.raises(ValueError, match=re.escape("timeout must be greater than 0 (got -1)")):
        await exe.shutdown(timeout=-1)
    await exe.shutdown()
