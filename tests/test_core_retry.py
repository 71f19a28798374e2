"""Retries on CoroutineExecutor: slots during backoff, give-up, cancellation, counts.

Every test runs on virtual time (tests/virtual_clock.py): a backoff of 10 s takes no
real time and ends exactly 10 s later on the loop's clock, so the tests can say *when*
each attempt started without any wall-clock threshold. Orderings that do not follow
from the clock are pinned with events.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import sys
import weakref
from collections.abc import Awaitable
from typing import Any, Callable

import pytest

from coroexecutor import CoroutineExecutor, JobTimeoutError, Retry

pytestmark = [pytest.mark.timeout(15), pytest.mark.virtual_time]


def now() -> float:
    return asyncio.get_running_loop().time()


async def park() -> None:
    await asyncio.Event().wait()


class Log:
    """Records attempt starts (name, virtual time) and how many attempts ran at once."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, float]] = []
        self.running = 0
        self.peak = 0

    @contextlib.contextmanager
    def attempt(self, name: str) -> Any:
        self.starts.append((name, now()))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            yield
        finally:
            self.running -= 1


def flaky(
    log: Log, name: str, failures: int, work: float = 0, exc: type[Exception] = OSError
) -> Callable[[], Awaitable[str]]:
    """A job that fails its first ``failures`` attempts, each after ``work`` seconds."""
    calls = 0

    async def job() -> str:
        nonlocal calls
        calls += 1
        with log.attempt(name):
            await asyncio.sleep(work)
            if calls <= failures:
                raise exc(f"{name} attempt {calls}")
            return name

    job.__qualname__ = name
    return job


#
# Slots
#


async def test_the_slot_is_free_during_a_backoff_and_max_workers_holds() -> None:
    log = Log()
    retry = Retry(attempts=2, backoff=10, jitter=False)
    async with CoroutineExecutor(max_workers=1, retry=retry) as exe:
        start = now()
        first = await exe.submit(flaky(log, "a", failures=1))
        # Waits for the one slot: a's failure at once gives it up for its 10 s backoff.
        second = await exe.submit(flaky(log, "b", failures=0, work=3))
    assert first.result() == "a" and second.result() == "b"
    assert [(name, at - start) for name, at in log.starts] == [("a", 0), ("b", 0), ("a", 10)]
    assert log.peak == 1
    assert exe.stats.retried == 1 and exe.stats.succeeded == 2


async def test_sleepers_do_not_count_against_max_workers() -> None:
    log = Log()
    retry = Retry(attempts=3, backoff=5, jitter=False)
    async with CoroutineExecutor(max_workers=3, retry=retry) as exe:
        start = now()
        for n in range(6):
            exe.submit_nowait(flaky(log, f"f{n}", failures=2, work=1))
        for n in range(6):
            exe.submit_nowait(flaky(log, f"s{n}", failures=0, work=1))
    assert log.peak == 3  # never more attempts at once than max_workers
    # While the first three flaky jobs sleep, their slots run the next three: all six
    # flaky jobs had their first attempt by t=1, whatever the backoffs.
    firsts: dict[str, float] = {}
    for name, at in log.starts:
        firsts.setdefault(name, at - start)
    firsts = {name: at for name, at in firsts.items() if name.startswith("f")}
    assert max(firsts.values()) == 1
    assert exe.stats.retried == 12 and exe.stats.succeeded == 12


async def test_a_retry_takes_the_next_slot_before_jobs_that_have_not_started() -> None:
    log = Log()
    retry = Retry(attempts=2, backoff=1, jitter=False)
    async with CoroutineExecutor(max_workers=1, retry=retry) as exe:
        start = now()
        exe.submit_nowait(flaky(log, "a", failures=1))
        for name in "bcd":
            exe.submit_nowait(flaky(log, name, failures=0, work=2))
    # a fails at 0 and sleeps until 1; b holds the slot from 0 to 2; then a, not c.
    assert [(name, at - start) for name, at in log.starts] == [
        ("a", 0),
        ("b", 0),
        ("a", 2),
        ("c", 2),
        ("d", 4),
    ]


#
# Giving up
#


async def test_giving_up_raises_the_last_error_with_the_attempt_count() -> None:
    log = Log()
    errors: list[OSError] = []
    stopped = asyncio.Event()

    async def refused() -> None:
        with log.attempt("refused"):
            await asyncio.sleep(0)
            errors.append(ConnectionRefusedError(f"attempt {len(errors) + 1}"))
            raise errors[-1]

    async def bystander() -> None:
        try:
            await park()
        finally:
            stopped.set()

    with pytest.raises(ConnectionRefusedError) as info:
        async with CoroutineExecutor(retry=Retry(attempts=3, backoff=1)) as exe:
            await exe.submit(bystander)
            await exe.submit(refused)
    assert len(errors) == 3
    assert info.value is errors[-1]  # the same object, the third attempt's
    assert info.value.__notes__ == ["coroexecutor: job refused() failed after 3 attempts"]
    assert stopped.is_set()  # fail-fast cancelled the rest
    assert exe.stats.retried == 2 and exe.stats.failed == 1 and exe.stats.cancelled == 1


async def test_with_suppress_task_errors_giving_up_touches_nothing_else() -> None:
    log = Log()
    async with CoroutineExecutor(
        retry=Retry(attempts=2, backoff=1), suppress_task_errors=True
    ) as exe:
        bad = await exe.submit(flaky(log, "bad", failures=5))
        good = await exe.submit(flaky(log, "good", failures=0, work=5))
    error = bad.exception()
    assert isinstance(error, OSError) and str(error) == "bad attempt 2"
    assert error.__notes__ == ["coroexecutor: job bad() failed after 2 attempts"]
    assert good.result() == "good"


async def test_an_error_the_policy_does_not_name_is_not_retried() -> None:
    log = Log()
    async with CoroutineExecutor(retry=Retry(), suppress_task_errors=True) as exe:
        task = await exe.submit(flaky(log, "v", failures=1, exc=ValueError))
    assert isinstance(task.exception(), ValueError)
    assert task.exception().__notes__ == ["coroexecutor: job v() failed"]  # type: ignore[union-attr]
    assert len(log.starts) == 1 and exe.stats.retried == 0


#
# Cancellation during a backoff
#


class Sleeper:
    """A job that fails once with a 100 s backoff; says when its backoff began."""

    def __init__(self) -> None:
        self.calls = 0
        self.failed = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1:
            asyncio.get_running_loop().call_soon(self.failed.set)
            raise OSError("once")


RETRY_LATER = Retry(attempts=2, backoff=100, max_backoff=100, jitter=False)


async def test_a_failing_body_ends_a_backoff_at_once() -> None:
    sleeper = Sleeper()
    start = now()
    with pytest.raises(KeyError):
        async with CoroutineExecutor(retry=RETRY_LATER) as exe:
            task = await exe.submit(sleeper)
            await sleeper.failed.wait()
            raise KeyError("body")
    assert task.cancelled() and sleeper.calls == 1
    assert now() - start < 100


async def test_cancelling_the_block_ends_a_backoff_at_once() -> None:
    sleeper = Sleeper()
    start = now()

    async def owner() -> None:
        async with CoroutineExecutor(retry=RETRY_LATER) as exe:
            await exe.submit(sleeper)
            await park()

    owner_task = asyncio.ensure_future(owner())
    await sleeper.failed.wait()
    owner_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner_task
    assert sleeper.calls == 1 and now() - start < 100


async def test_fail_fast_ends_a_backoff_at_once() -> None:
    sleeper = Sleeper()
    start = now()

    async def fails_later() -> None:
        await sleeper.failed.wait()
        raise ValueError("other job")

    with pytest.raises(ValueError, match="other job"):
        async with CoroutineExecutor(retry=RETRY_LATER) as exe:
            task = await exe.submit(sleeper)
            await exe.submit(fails_later)
    assert task.cancelled() and sleeper.calls == 1
    assert now() - start < 100


@pytest.mark.parametrize("hook", [None, lambda future: None], ids=["in-line", "hook"])
@pytest.mark.parametrize("failing", ["submit", "map"])
async def test_fail_fast_cancels_a_job_waiting_for_its_slot_after_a_pause(
    failing: str, hook: Any
) -> None:
    """Regression (found by a docs-only tester): a job whose pause was over, waiting for a
    slot, when another job failed (in its last step) ended with the RuntimeError meant
    for new jobs ("cannot schedule new futures after shutdown") and counted as failed.
    It ends cancelled, as in its pause."""
    go = asyncio.Event()
    took_slot = asyncio.Event()
    attempts = 0

    async def retried() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionResetError("again")

    async def fails(_: object = None) -> None:
        took_slot.set()  # the retried job's slot, given back for its pause
        await go.wait()
        raise ValueError("other job")

    async def consume() -> None:
        async for _ in exe.map(fails, [0]):
            pass

    with pytest.raises(ValueError, match="other job"):
        async with CoroutineExecutor(
            max_workers=1, on_job_done=hook,
            retry=Retry(attempts=5, on=(ConnectionResetError,), backoff=1.0, jitter=False),
        ) as exe:
            job = await exe.submit(retried)
            if failing == "submit":
                other = asyncio.ensure_future(exe.submit(fails))
            else:
                other = asyncio.ensure_future(consume())
            await took_slot.wait()
            await asyncio.sleep(2)  # the pause (1 s) is over: the job waits for its slot
            assert attempts == 1 and not job.done()
            go.set()
            await other
    assert job.cancelled(), job
    assert attempts == 1
    assert (exe.stats.failed, exe.stats.cancelled, exe.stats.retried) == (1, 1, 1)


async def test_shutdown_without_waiting_ends_a_backoff_at_once() -> None:
    sleeper = Sleeper()
    start = now()
    async with CoroutineExecutor(retry=RETRY_LATER) as exe:
        task = await exe.submit(sleeper)
        await sleeper.failed.wait()
        await exe.shutdown(wait=False)
    assert task.cancelled() and sleeper.calls == 1
    assert now() - start < 100
    assert exe.stats.cancelled == 1


async def test_leaving_a_map_early_ends_its_backoffs_at_once() -> None:
    sleeper = Sleeper()
    start = now()

    async def job(n: int) -> int:
        if n == 1:
            await sleeper()
        return n

    async with CoroutineExecutor(retry=RETRY_LATER) as exe:
        results = exe.map(job, [0, 1, 2])
        assert await results.__anext__() == 0
        await sleeper.failed.wait()
        await results.aclose()
    assert sleeper.calls == 1 and now() - start < 100


async def test_cancelling_the_jobs_task_ends_its_backoff() -> None:
    sleeper = Sleeper()
    start = now()
    # (Under fail-fast a job cancelled from outside counts as an error: see semantics.)
    async with CoroutineExecutor(retry=RETRY_LATER, suppress_task_errors=True) as exe:
        task = await exe.submit(sleeper)
        await sleeper.failed.wait()
        task.cancel()
    assert task.cancelled() and sleeper.calls == 1 and now() - start < 100


class TurnsCancelIntoError:
    """A job that, cancelled while it runs, raises a ConnectionError instead (as a
    client library closing its connection may); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.running = asyncio.Event()

    async def __call__(self, n: int = 1) -> int:
        if n == 0:
            return n
        self.calls += 1
        self.running.set()
        try:
            await park()
        except asyncio.CancelledError:
            raise ConnectionError("connection dropped while cancelled") from None
        return n


@pytest.mark.parametrize("leave", ["break", "aclose", "drop"])
async def test_a_map_left_early_retries_no_attempt_that_turned_its_cancel_into_an_error(
    leave: str,
) -> None:
    # Found by a docs-only tester: the attempt raised ConnectionError after the map had
    # cancelled it, the policy asked for another attempt, and the block waited for it.
    # Now the job ends with its error, as it would without retry= (a job error: the
    # block raises it under fail-fast).
    job = TurnsCancelIntoError()
    with pytest.raises(ConnectionError):
        async with CoroutineExecutor(retry=Retry(attempts=3, backoff=0)) as exe:
            results = exe.map_unordered(job, [1, 0])  # input 1 runs, 0 is yielded
            if leave == "break":
                async for _ in results:
                    break
            else:
                assert await results.__anext__() == 0
                if leave == "aclose":
                    await results.aclose()
            assert job.running.is_set()
            del results
            await asyncio.sleep(0)  # the cancelled attempt raises its error
    assert job.calls == 1
    assert exe.stats.retried == 0 and exe.stats.failed == 1


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="before 3.11 a task does not count the cancels asked of it (Task.cancelling)",
)
async def test_cancelling_the_jobs_task_retries_no_attempt_that_turned_it_into_an_error() -> (
    None
):
    # Found by a docs-only tester: task.cancel() returned True, the attempt raised
    # ConnectionError, and a second attempt then returned a result.
    job = TurnsCancelIntoError()
    async with CoroutineExecutor(
        retry=Retry(attempts=3, backoff=0), suppress_task_errors=True
    ) as exe:
        task = await exe.submit(job)
        await job.running.wait()
        assert task.cancel()
        await asyncio.wait([task])
    assert job.calls == 1 and exe.stats.retried == 0
    assert isinstance(task.exception(), ConnectionError)  # as a plain task would end


@pytest.mark.parametrize("how", ["shutdown(wait=False)", "fail-fast"])
async def test_the_executors_own_cancel_retries_no_attempt_that_turned_it_into_an_error(
    how: str,
) -> None:
    # Python 3.9 and 3.10, where a task does not count its cancels: the policy was asked,
    # the next attempt was refused its slot, and the job ended with that RuntimeError
    # ("cannot schedule new futures after shutdown"), which the block then raised after
    # shutdown(wait=False). Now the job ends with its error on every Python.
    job = TurnsCancelIntoError()
    first = ValueError("the first job error")

    async def fails() -> None:
        raise first

    expected = ConnectionError if how == "shutdown(wait=False)" else ValueError
    with pytest.raises(expected):
        async with CoroutineExecutor(retry=Retry(attempts=3, backoff=0)) as exe:
            task = await exe.submit(job)
            await job.running.wait()
            if how == "shutdown(wait=False)":
                await exe.shutdown(wait=False)
            else:
                await exe.submit(fails)
            await park()  # interrupted by the job's error
    assert job.calls == 1 and exe.stats.retried == 0
    assert isinstance(task.exception(), ConnectionError)


async def test_the_job_that_called_shutdown_is_not_retried_after_it() -> None:
    # shutdown(wait=False) does not cancel the job that calls it: its failing attempt was
    # retried, and refused its slot (the executor cancels its jobs); the block raised
    # that RuntimeError. No attempt starts after shutdown(wait=False): the job ends with
    # its own error, the block's error under fail-fast.
    calls = 0

    async def stopper() -> None:
        nonlocal calls
        calls += 1
        await exe.shutdown(wait=False)
        raise ConnectionError("lost the connection")

    with pytest.raises(ConnectionError, match="lost the connection"):
        async with CoroutineExecutor(retry=Retry(attempts=3, backoff=0)) as exe:
            await exe.submit(stopper)
    assert calls == 1 and exe.stats.retried == 0


async def test_a_graceful_shutdown_lets_a_job_finish_its_retries() -> None:
    sleeper = Sleeper()
    start = now()
    async with CoroutineExecutor(retry=RETRY_LATER) as exe:
        task = await exe.submit(sleeper)
        await sleeper.failed.wait()
        await exe.shutdown()
    assert task.result() is None and sleeper.calls == 2
    assert now() - start == 100


#
# Deadlines, rate limit, counts and hook
#


async def test_job_timeout_applies_to_each_attempt() -> None:
    attempts: list[float] = []

    async def slow_then_quick() -> str:
        attempts.append(now())
        if len(attempts) == 1:
            await park()
        return "quick"

    start = now()
    async with CoroutineExecutor(job_timeout=5, retry=Retry(backoff=1, jitter=False)) as exe:
        task = await exe.submit(slow_then_quick)
    assert task.result() == "quick"
    assert [at - start for at in attempts] == [0, 6]  # 5 s deadline, then 1 s backoff


async def test_a_job_timeout_is_retried_only_if_the_policy_says_so() -> None:
    async with CoroutineExecutor(
        job_timeout=5, retry=Retry(on=ConnectionError), suppress_task_errors=True
    ) as exe:
        task = await exe.submit(park)
    assert isinstance(task.exception(), JobTimeoutError)
    assert exe.stats.retried == 0


async def test_the_rate_limit_counts_every_attempt() -> None:
    log = Log()
    retry = Retry(attempts=3, backoff=0, max_backoff=0, jitter=False)
    async with CoroutineExecutor(max_per_second=1, retry=retry) as exe:
        start = now()
        await exe.submit(flaky(log, "r", failures=2))
    assert [at - start for _, at in log.starts] == pytest.approx([0, 1, 2], abs=1e-6)


async def test_stats_count_retried_attempts_and_the_hook_fires_once_per_job() -> None:
    log = Log()
    done: list[object] = []
    async with CoroutineExecutor(
        retry=Retry(attempts=4, backoff=1), on_job_done=done.append
    ) as exe:
        tasks = [await exe.submit(flaky(log, f"j{n}", failures=n)) for n in range(4)]
        await asyncio.sleep(0)
    assert [task.result() for task in tasks] == ["j0", "j1", "j2", "j3"]
    assert len(done) == 4
    stats = exe.stats
    assert stats.retried == 0 + 1 + 2 + 3
    assert stats.submitted == 4 and stats.succeeded == 4 and stats.failed == 0


async def test_a_job_between_attempts_is_counted_as_queued() -> None:
    sleeper = Sleeper()
    async with CoroutineExecutor(retry=RETRY_LATER) as exe:
        await exe.submit(sleeper)
        await sleeper.failed.wait()
        stats = exe.stats
        assert (stats.running, stats.queued, stats.retried) == (0, 1, 1)
        assert stats.submitted == stats.queued + stats.running + stats.done


#
# map
#


async def test_an_ordered_map_yields_in_input_order_with_retries() -> None:
    async def job(n: int) -> int:
        calls[n] += 1
        if calls[n] <= n % 3:
            raise OSError(n)
        return n

    calls = [0] * 12
    async with CoroutineExecutor(max_workers=4, retry=Retry(backoff=1)) as exe:
        assert [r async for r in exe.map(job, range(12))] == list(range(12))
    assert exe.stats.retried == sum(n % 3 for n in range(12))


async def test_return_exceptions_yields_only_the_final_error() -> None:
    errors: list[OSError] = []

    async def job(n: int) -> int:
        if n == 1:
            errors.append(OSError(f"attempt {len(errors) + 1}"))
            raise errors[-1]
        return n

    async with CoroutineExecutor(retry=Retry(attempts=2, backoff=1)) as exe:
        results = [r async for r in exe.map(job, range(3), return_exceptions=True)]
    assert results[0] == 0 and results[2] == 2
    assert results[1] is errors[-1] and len(errors) == 2
    assert results[1].__notes__ == [
        "coroexecutor: job job(1) failed after 2 attempts (map input #1)"
    ]


async def test_a_map_may_set_or_turn_off_the_executors_retry() -> None:
    def always_failing() -> Callable[[int], Awaitable[int]]:
        async def job(n: int) -> int:
            raise OSError(n)

        return job

    async with CoroutineExecutor(retry=Retry(attempts=3, backoff=1)) as exe:
        off = [
            r async for r in exe.map(always_failing(), range(2), retry=None, return_exceptions=True)
        ]
        assert exe.stats.retried == 0
        two = Retry(attempts=2, backoff=1)
        mine = [
            r
            async for r in exe.map_unordered(
                always_failing(), range(2), retry=two, return_exceptions=True
            )
        ]
        assert exe.stats.retried == 2
    assert all(isinstance(r, OSError) for r in off + mine)


async def test_map_refuses_a_bad_retry_at_once() -> None:
    async def job(n: int) -> int:
        return n

    async with CoroutineExecutor() as exe:
        with pytest.raises(TypeError, match="retry must be a Retry"):
            exe.map(job, range(3), retry=3)  # type: ignore[call-overload]


#
# Policies of your own
#


async def test_a_callable_policy_gets_the_attempt_and_the_error() -> None:
    seen: list[tuple[int, str]] = []

    def policy(attempt: int, exc: BaseException) -> float | None:
        seen.append((attempt, str(exc)))
        return 2.0 if attempt < 3 else None

    log = Log()
    async with CoroutineExecutor(retry=policy, suppress_task_errors=True) as exe:
        start = now()
        task = await exe.submit(flaky(log, "p", failures=9))
    assert seen == [(1, "p attempt 1"), (2, "p attempt 2"), (3, "p attempt 3")]
    assert [at - start for _, at in log.starts] == [0, 2, 4]
    assert str(task.exception()) == "p attempt 3"


async def test_a_policy_that_fails_fails_the_job_with_its_error() -> None:
    def policy(attempt: int, exc: BaseException) -> float | None:
        raise LookupError("no Retry-After")

    def bad_delay(attempt: int, exc: BaseException) -> Any:
        return -1

    log = Log()
    async with CoroutineExecutor(retry=policy, suppress_task_errors=True) as exe:
        raised = await exe.submit(flaky(log, "x", failures=1))
    async with CoroutineExecutor(retry=bad_delay, suppress_task_errors=True) as exe:
        negative = await exe.submit(flaky(log, "y", failures=1))
    error = raised.exception()
    assert isinstance(error, LookupError) and isinstance(error.__context__, OSError)
    error = negative.exception()
    assert isinstance(error, ValueError) and "returned a negative delay (got -1)" in str(error)
    assert isinstance(error.__context__, OSError)


class Unreprable:
    """A user's object whose ``__repr__`` raises."""

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ of the user's object")


class UnreprablePolicy(Unreprable):
    """A policy whose own ``__repr__`` raises: 0 s after attempt 1, then a delay that
    is no number (an object whose ``__repr__`` raises too)."""

    def __call__(self, attempt: int, exc: BaseException) -> Any:
        return 0 if attempt == 1 else Unreprable()


async def test_a_bad_delay_whose_repr_raises_fails_the_job_with_the_rule() -> None:
    # The message called repr() on the policy and its answer: the job failed with the
    # __repr__'s RuntimeError, and a start failure's raised it out of submit().
    log = Log()
    rule = r"^retry policy <UnreprablePolicy instance at 0x\w+> must return a number of seconds"
    async with CoroutineExecutor(retry=UnreprablePolicy(), suppress_task_errors=True) as exe:
        task = await exe.submit(flaky(log, "u", failures=9))
        await asyncio.wait([task])
    error = task.exception()
    assert isinstance(error, TypeError) and isinstance(error.__context__, OSError)
    assert re.match(rule, str(error)), error
    assert (exe.stats.failed, exe.stats.retried) == (1, 1)

    def refused() -> Awaitable[None]:  # fails as it is submitted: the policy's first answer
        raise ConnectionError("refused")  # is kept for its first attempt (see failed_call)

    async with CoroutineExecutor(retry=UnreprablePolicy(), suppress_task_errors=True) as exe:
        task = await exe.submit(refused)
        await asyncio.wait([task])
    error = task.exception()
    assert isinstance(error, TypeError) and isinstance(error.__context__, ConnectionError)
    assert re.match(rule, str(error)), error


async def test_a_policy_raising_cancelled_error_ends_the_job_cancelled() -> None:
    # As a job raising it: a task that ends with CancelledError is cancelled, whoever
    # raised it. LoopExecutor follows this for both kinds of job (test_bridge_retry.py).
    def policy(attempt: int, exc: BaseException) -> float | None:
        raise asyncio.CancelledError("the policy's")

    log = Log()
    async with CoroutineExecutor(retry=policy, suppress_task_errors=True) as exe:
        task = await exe.submit(flaky(log, "c", failures=1))
    assert task.cancelled()
    stats = exe.stats
    assert (stats.cancelled, stats.failed, stats.succeeded, stats.retried) == (1, 0, 0, 0)
    with pytest.raises(asyncio.CancelledError, match="the policy's"):  # fail-fast: the first error
        async with CoroutineExecutor(retry=policy) as exe:
            await exe.submit(flaky(log, "d", failures=1))
    assert exe.stats.cancelled == 1 and exe.stats.failed == 0


@pytest.mark.parametrize("retry", [3, "Retry()", (OSError,)], ids=["int", "str", "tuple"])
async def test_a_bad_retry_is_refused_by_the_constructor(retry: object) -> None:
    with pytest.raises(TypeError, match="retry must be a Retry, a callable policy"):
        CoroutineExecutor(retry=retry)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [{}, {"job_timeout": 60.0}], ids=["in-line", "job_timeout"])
async def test_every_attempt_gets_the_same_keyword_arguments(options: dict[str, Any]) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    async def job(name: str, **kwargs: Any) -> str:
        calls.append((name, kwargs))
        if sum(call[0] == name for call in calls) < 3:
            raise ConnectionError(name)
        return name

    policy = Retry(attempts=3, on=ConnectionError, backoff=1, jitter=False)
    async with CoroutineExecutor(retry=policy, **options) as exe:
        with_keywords = await exe.submit(job, "a", sep="-", n=1)
        without = await exe.submit(job, "b")
        queued = exe.submit_nowait(job, "c", flag=True)
    assert [with_keywords.result(), without.result(), queued.result()] == ["a", "b", "c"]
    assert [kw for name, kw in calls if name == "a"] == [{"sep": "-", "n": 1}] * 3
    assert [kw for name, kw in calls if name == "b"] == [{}] * 3
    assert [kw for name, kw in calls if name == "c"] == [{"flag": True}] * 3


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"on_job_done": lambda job: None},
        {"job_timeout": 600.0},
        {"key": lambda n, *_: n, "max_per_key": 1},
        {"on_job_done": lambda job: None, "key": lambda n, *_: n, "max_per_key": 1},
    ],
    ids=["in-line", "hook", "job_timeout", "key", "hook-key"],
)
async def test_jobs_cancelled_in_their_pause_never_count_as_running(
    options: dict[str, Any],
) -> None:
    # A job cancelled while it pauses between attempts holds no slot: until its end is
    # settled (a turn later for jobs settled from a done callback) it still counts as
    # queued, never as running, so stats.running stays within max_workers.
    paused = asyncio.Event()
    failures = 0

    def policy(attempt: int, exc: BaseException) -> float:
        nonlocal failures
        failures += 1
        if failures == 3:
            paused.set()
        return 600.0

    async def fails(n: int) -> None:
        raise OSError(n)

    snapshots = []
    async with CoroutineExecutor(
        max_workers=1, retry=policy, suppress_task_errors=True, **options
    ) as exe:
        tasks = [await exe.submit(fails, n) for n in range(3)]
        await paused.wait()
        assert (exe.stats.running, exe.stats.queued) == (0, 3)
        for task in tasks:
            task.cancel()
        for _ in range(4):
            await asyncio.sleep(0)
            snapshots.append(exe.stats)
        runner = await exe.submit(asyncio.sleep, 0, "ran")
    assert runner.result() == "ran"
    assert all(task.cancelled() for task in tasks)
    for stats in snapshots:
        assert stats.running <= 1, stats
        assert stats.submitted == stats.queued + stats.running + stats.done, stats
    assert snapshots[-1].cancelled == 3 and snapshots[-1].queued == 0


#
# A call of fn that raises as its job starts
#


def refused_once(log: Log, name: str) -> Callable[[], Awaitable[str]]:
    """A plain function that raises ConnectionError on its first call, before it returns
    the job's coroutine (a flaky job that succeeds at once) on the next."""
    calls = 0

    def call() -> Awaitable[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            log.starts.append((name, now()))  # the attempt that failed
            raise ConnectionError(f"{name} refused")
        return flaky(log, name, failures=0)()

    call.__qualname__ = name
    return call


@pytest.mark.parametrize("settled", ["in-line", "hook"])
@pytest.mark.parametrize("how", ["submit", "submit_nowait", "submit_nowait, queued"])
async def test_a_call_that_raises_as_its_job_starts_is_retried_without_its_slot(
    how: str, settled: str
) -> None:
    """Under retry=, fn() raising before it returns an awaitable is the job's first
    attempt failing, as for an ``async def``: the policy retries it, the job gives its
    slot back for the pause (b runs meanwhile), the retry is counted and the hook called
    once. submit() and submit_nowait() raised it to their caller, and a queued job's
    future failed with it, with no retry (found by a docs-only tester)."""
    log = Log()
    hooked: list[asyncio.Future[Any]] = []
    hook = {"on_job_done": hooked.append} if settled == "hook" else {}
    retry = Retry(attempts=2, backoff=10, jitter=False)
    queued = how == "submit_nowait, queued"
    async with CoroutineExecutor(max_workers=1, retry=retry, **hook) as exe:  # type: ignore[arg-type]
        start = now()
        if queued:  # holds the one slot for 1 s: the job waits in line and starts then
            exe.submit_nowait(flaky(log, "first", failures=0, work=1))
        if how == "submit":
            job: asyncio.Future[str] = await exe.submit(refused_once(log, "a"))
        else:
            job = exe.submit_nowait(refused_once(log, "a"))
        other = await exe.submit(flaky(log, "b", failures=0, work=3))
    assert job.result() == "a" and other.result() == "b"
    began = 1 if queued else 0
    assert [(name, at - start) for name, at in log.starts] == [
        *([("first", 0)] if queued else []), ("a", began), ("b", began), ("a", began + 10)
    ]
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.retried) == (2 + queued, 0, 1)
    if hook:
        assert len(hooked) == 2 + queued  # once per job


async def test_a_start_failure_the_policy_declines_is_raised_as_without_retry() -> None:
    """An error the policy does not retry, a TypeError from the wrong arguments with
    Retry's default ``on`` or the last attempt allowed, stays where it is without
    retries: raised by submit() and submit_nowait(); and the policy's own error in its
    place, with the call's error as its ``__context__``."""

    async def takes_one(x: int) -> None:
        pass

    def refused() -> Awaitable[None]:
        raise ConnectionError("refused")

    def fails(attempt: int, exc: BaseException) -> float | None:
        raise LookupError("no Retry-After")

    async with CoroutineExecutor(retry=Retry()) as exe:
        with pytest.raises(TypeError):
            await exe.submit(takes_one)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            exe.submit_nowait(takes_one)  # type: ignore[call-arg]
    async with CoroutineExecutor(retry=Retry(attempts=1)) as exe:
        with pytest.raises(ConnectionError):
            await exe.submit(refused)
    async with CoroutineExecutor(retry=fails) as exe:
        with pytest.raises(LookupError) as info:
            await exe.submit(refused)
        assert isinstance(info.value.__context__, ConnectionError)
        assert await (await exe.submit(asyncio.sleep, 0, "still works")) == "still works"
    assert (exe.stats.failed, exe.stats.retried) == (0, 0)


async def test_the_policy_sees_a_start_failure_as_attempt_one() -> None:
    seen: list[tuple[int, str]] = []

    def policy(attempt: int, exc: BaseException) -> float | None:
        seen.append((attempt, str(exc)))
        return 2.0 if attempt < 3 else None

    calls = 0

    def refused() -> Awaitable[None]:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"call {calls}")

    async with CoroutineExecutor(retry=policy, suppress_task_errors=True) as exe:
        task = await exe.submit(refused)
        await asyncio.wait([task])
    assert seen == [(1, "call 1"), (2, "call 2"), (3, "call 3")]
    error = task.exception()
    assert str(error) == "call 3"
    assert error.__notes__ == ["coroexecutor: job refused() failed after 3 attempts"]  # type: ignore[union-attr]
    assert (exe.stats.failed, exe.stats.retried) == (1, 2)


#
# What a finished job's task keeps
#


class Payload:
    """An argument whose life a test watches through a weak reference."""


ENDINGS = [
    "succeeds", "gives up", "the policy fails", "cancelled in its first attempt",
    "cancelled in a pause", "cancelled in a later attempt",
]


@pytest.mark.parametrize("options", [{}, {"job_timeout": 30.0}], ids=["in-line", "job_timeout"])
@pytest.mark.parametrize("ending", ENDINGS)
async def test_a_retried_jobs_task_keeps_no_argument_once_done(
    ending: str, options: dict[str, Any]
) -> None:
    # The bridge's future of a retried job kept its arguments (found by a docs-only
    # tester); here the task of one that failed or was cancelled kept them, through our
    # frames in the traceback of its error (or of its CancelledError).
    attempts = 0

    async def upload(body: Payload, *, meta: Payload) -> str:
        nonlocal attempts
        del body, meta  # its own frame, in its error's traceback, is the caller's
        attempts += 1
        if ending == "cancelled in its first attempt" or (
            ending == "cancelled in a later attempt" and attempts == 2
        ):
            await park()
        if ending == "succeeds" and attempts == 2:
            return "ok"
        raise ConnectionError(f"attempt {attempts}")

    def policy(attempt: int, exc: BaseException) -> float | None:
        if ending == "the policy fails" and attempt == 2:
            raise LookupError("policy")
        return 100.0 if ending == "cancelled in a pause" else (1.0 if attempt < 3 else None)

    body, meta = Payload(), Payload()
    alive = [weakref.ref(body), weakref.ref(meta)]
    async with CoroutineExecutor(retry=policy, suppress_task_errors=True, **options) as exe:
        task = await exe.submit(upload, body, meta=meta)
        del body, meta
        if ending.startswith("cancelled"):
            await asyncio.sleep(10)  # in the pause, or the attempt parked at 0 or at 1
            task.cancel()
    gc.collect()
    assert [ref() for ref in alive] == [None, None]
    if ending.startswith("cancelled"):
        assert task.cancelled()
    elif ending == "succeeds":
        assert task.result() == "ok"
    else:
        error = task.exception()  # kept, with its traceback
        assert isinstance(error, LookupError if ending == "the policy fails" else OSError)
        assert error.__traceback__ is not None


@pytest.mark.parametrize("ending", ["gives up", "the policy fails"])
async def test_a_job_that_timed_out_keeps_no_argument(ending: str) -> None:
    # A JobTimeoutError's traceback kept job_timeout's wrapper's frame, and its call.
    async def parked(body: Payload) -> None:
        del body
        await park()  # until job_timeout cancels it

    def policy(attempt: int, exc: BaseException) -> float | None:
        if ending == "the policy fails" and attempt == 2:
            raise LookupError("policy")
        return 1.0 if attempt < 3 else None

    body = Payload()
    alive = weakref.ref(body)
    async with CoroutineExecutor(job_timeout=5, retry=policy, suppress_task_errors=True) as exe:
        task = await exe.submit(parked, body)
        del body
    gc.collect()
    assert alive() is None
    error = task.exception()
    if ending == "gives up":
        assert isinstance(error, JobTimeoutError) and exe.stats.retried == 2
    else:
        assert isinstance(error, LookupError) and isinstance(error.__context__, JobTimeoutError)
