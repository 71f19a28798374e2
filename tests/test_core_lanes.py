"""submit()'s plain lane and the general path run the same scenarios (internals.rst, "The
plain lane").

The plain lane is the one hot path written out twice: submit() starts a job with nothing
but an optional retry policy itself, and run_job() settles a success in its last step
when nothing waits (tests/test_core_lanes_map.py: map's jobs). Every other job starts
through start_job(), and every other outcome settles in settle(). Each scenario here
runs in both: ``lane`` is "plain lane" (the executor as it is) or "general path" (the
executor's plain lane switched off), and the outcome must be the same.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any, Callable

import pytest

import coroexecutor._executor as executor_module
from coroexecutor import CoroutineExecutor, Retry

pytestmark = pytest.mark.timeout(10)

LANES = ["plain lane", "general path"]


@pytest.fixture(params=LANES)
def lane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which path submit() takes; the general path's start_job() calls are counted, so
    each scenario also checks that its jobs took the path it names."""
    calls: list[object] = []
    start_job = executor_module.start_job

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return start_job(*args, **kwargs)

    monkeypatch.setattr(executor_module, "start_job", counted)
    request.node.start_job_calls = calls
    return str(request.param)


def make(lane: str, **options: Any) -> CoroutineExecutor:
    exe = CoroutineExecutor(**options)
    if lane == "general path":
        exe._plain = False  # type: ignore[attr-defined]  # the switch tests turn off
    return exe


def general_starts(request: pytest.FixtureRequest) -> int:
    return len(request.node.start_job_calls)


async def double(n: int) -> int:
    await asyncio.sleep(0)
    return 2 * n


class Flaky:
    """Fails with OSError ``failures`` times (in the job, or as it is called with
    ``at_call``), then returns its argument."""

    def __init__(self, failures: int, *, at_call: bool = False) -> None:
        self.failures = failures
        self.at_call = at_call
        self.calls = 0

    def __call__(self, n: int) -> Awaitable[int]:
        self.calls += 1
        if self.at_call and self.calls <= self.failures:
            raise OSError(f"refused at call {self.calls}")
        return self._run(n, self.calls)

    async def _run(self, n: int, call: int) -> int:
        await asyncio.sleep(0)
        if not self.at_call and call <= self.failures:
            raise OSError(f"failed attempt {call}")
        return n


async def test_results_and_counts(lane: str, request: pytest.FixtureRequest) -> None:
    async with make(lane, max_workers=3) as exe:
        tasks = [await exe.submit(double, n) for n in range(10)]
    assert [t.result() for t in tasks] == [2 * n for n in range(10)]
    assert exe.stats.succeeded == 10 and exe.stats.running == 0
    # In the plain lane only the submits that waited for a slot start in the general path.
    if lane == "general path":
        assert general_starts(request) == 10
    else:
        assert general_starts(request) < 10


async def test_the_first_job_error_is_raised_by_the_block_with_its_note(lane: str) -> None:
    error = ValueError("boom")

    async def fail() -> None:
        await asyncio.sleep(0)
        raise error

    started = asyncio.Event()

    async def wait() -> None:
        started.set()
        await asyncio.sleep(60)

    with pytest.raises(ValueError) as raised:
        async with make(lane, max_workers=4) as exe:
            waiting = await exe.submit(wait)
            await started.wait()
            await exe.submit(fail)
            await asyncio.sleep(60)
    assert raised.value is error
    assert any("fail()" in note for note in getattr(error, "__notes__", []))
    assert waiting.cancelled()
    assert exe.stats.failed == 1 and exe.stats.cancelled == 1


async def test_suppressed_errors_stay_in_their_task(lane: str) -> None:
    async def fail() -> None:
        raise KeyError("k")

    async with make(lane, suppress_task_errors=True) as exe:
        task = await exe.submit(fail)
        ok = await exe.submit(double, 1)
    assert isinstance(task.exception(), KeyError) and ok.result() == 2
    assert exe.stats.failed == 1 and exe.stats.succeeded == 1


@pytest.mark.parametrize(
    "bad", ["raises", "no awaitable", "coroutine object"], ids=lambda bad: bad
)
async def test_a_start_that_fails_gives_the_slot_back(lane: str, bad: str) -> None:
    def raises() -> Awaitable[None]:
        raise LookupError("at call")

    def no_awaitable() -> Any:
        return 42

    async with make(lane, max_workers=1) as exe:
        if bad == "raises":
            with pytest.raises(LookupError):
                await exe.submit(raises)
        elif bad == "no awaitable":
            with pytest.raises(TypeError, match="awaitable"):
                await exe.submit(no_awaitable)
        else:
            coro = double(1)
            with pytest.raises(TypeError, match="coroutine object") as raised:
                await exe.submit(coro)  # type: ignore[arg-type]  # the mistake under test
            coro.close()
            # As when the mistake is found before the call (brk14): no "During handling
            # of the above exception" with the failed call's "not callable" error.
            assert raised.value.__suppress_context__ or raised.value.__context__ is None
        # The one slot came back: the next job starts at once.
        task = await exe.submit(double, 2)
    assert task.result() == 4
    assert exe.stats.running == 0 and exe.stats.succeeded == 1


async def test_a_job_cancelled_before_its_first_step(lane: str) -> None:
    ran: list[int] = []

    async def job() -> None:
        ran.append(1)

    # (A job cancelled from outside is a job error: suppressed here, so the block goes on.)
    async with make(lane, max_workers=1, suppress_task_errors=True) as exe:
        task = await exe.submit(job)
        task.cancel()
        after = await exe.submit(double, 3)  # waits for the cancelled job's slot
    assert task.cancelled() and ran == [] and after.result() == 6
    assert exe.stats.cancelled == 1 and exe.stats.succeeded == 1


@pytest.mark.parametrize("at_call", [False, True], ids=["in the job", "at the call"])
async def test_retries_then_success(lane: str, at_call: bool) -> None:
    flaky = Flaky(2, at_call=at_call)
    async with make(lane, retry=Retry(attempts=3, backoff=0, jitter=False)) as exe:
        task = await exe.submit(flaky, 7)
    assert task.result() == 7 and flaky.calls == 3
    assert exe.stats.retried == 2 and exe.stats.succeeded == 1


async def test_retries_given_up_raise_the_last_error_with_its_note(lane: str) -> None:
    flaky = Flaky(5)
    with pytest.raises(OSError, match="failed attempt 2") as raised:
        async with make(lane, retry=Retry(attempts=2, backoff=0, jitter=False)) as exe:
            await exe.submit(flaky, 1)
    assert any("after 2 attempts" in note for note in raised.value.__notes__)
    assert exe.stats.retried == 1 and exe.stats.failed == 1


async def test_queued_jobs_start_as_a_lane_job_ends(lane: str) -> None:
    release = asyncio.Event()

    async def first() -> str:
        await release.wait()
        return "first"

    async with make(lane, max_workers=1) as exe:
        head = await exe.submit(first)
        queued = [exe.submit_nowait(double, n) for n in range(3)]
        await asyncio.sleep(0)
        assert not any(q.done() for q in queued)
        release.set()
        assert await asyncio.gather(*queued) == [0, 2, 4]
    assert head.result() == "first" and exe.stats.succeeded == 4


async def test_shutdown_inside_a_lane_job_does_not_wait_for_it(lane: str) -> None:
    async def stopper(exe: CoroutineExecutor) -> str:
        await exe.shutdown()  # inside its own job: returns without waiting (who waits)
        return "returned"

    async with make(lane) as exe:
        task = await exe.submit(stopper, exe)
        assert await task == "returned"


async def test_a_lane_job_is_cancelled_by_the_block_and_its_cleanup_runs(lane: str) -> None:
    started = asyncio.Event()
    cleaned: list[str] = []

    async def job() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0)
            cleaned.append("done")

    with pytest.raises(RuntimeError, match="body"):
        async with make(lane) as exe:
            task = await exe.submit(job)
            await started.wait()
            raise RuntimeError("body")
    assert task.cancelled() and cleaned == ["done"]


async def test_the_lane_is_left_when_a_task_factory_is_set(
    lane: str, request: pytest.FixtureRequest
) -> None:
    made: list[asyncio.Task[Any]] = []
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    loop.set_task_factory(factory)
    try:
        async with make(lane) as exe:
            task = await exe.submit(double, 4)
    finally:
        loop.set_task_factory(None)
    assert task.result() == 8 and task in made
    assert general_starts(request) == 1


@pytest.mark.parametrize(
    "options",
    [
        {"key": lambda n: n % 2, "max_per_key": 1},
        {"job_timeout": 30.0},
        {"on_job_done": lambda job: None},
        {"max_per_second": 1e6},
    ],
    ids=["key=", "job_timeout=", "on_job_done=", "max_per_second="],
)
async def test_other_jobs_take_the_general_path(
    lane: str, request: pytest.FixtureRequest, options: dict[str, Any]
) -> None:
    submit: Callable[..., Any]
    async with make(lane, **options) as exe:
        submit = exe.submit
        task = await submit(double, 5)
    assert task.result() == 10
    if "key" not in options:  # (keyed jobs start through their own start_keyed)
        assert general_starts(request) == 1


@pytest.mark.parametrize(
    "options",
    [{}, {"on_job_done": lambda job: None}, {"job_timeout": 30.0}],
    ids=["in-line", "on_job_done=", "job_timeout="],
)
@pytest.mark.parametrize("when", ["before its first step", "while it runs"])
async def test_whoever_awaits_a_cancelled_job_gets_the_cancel_message(
    options: dict[str, Any], when: str
) -> None:
    """Regression (brk14): a job settled from its done callback (a hook, a job_timeout)
    had its CancelledError taken there first, and asyncio keeps the message cancel()
    carried in that one error only: the task's awaiter got CancelledError() with none,
    where a plain task's and an in-line job's awaiter get the message. (Python 3.9 and
    3.10 give a plain task's awaiter no message either: the job's gets what it gets.)"""
    started = asyncio.Event()

    async def job() -> None:
        started.set()
        await asyncio.sleep(60)

    plain = asyncio.ensure_future(job())
    await started.wait()
    started.clear()
    plain.cancel("stop: user request")
    with pytest.raises(asyncio.CancelledError) as as_plain:
        await plain

    async with CoroutineExecutor(suppress_task_errors=True, **options) as exe:
        task = await exe.submit(job)
        if when == "while it runs":
            await started.wait()
        task.cancel("stop: user request")
        with pytest.raises(asyncio.CancelledError) as raised:
            await task
    assert raised.value.args == as_plain.value.args
    if sys.version_info >= (3, 11):
        assert raised.value.args == ("stop: user request",)
    assert exe.stats.cancelled == 1
