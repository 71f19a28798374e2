"""The attempts loop on its own (coroexecutor/_retrying.py), with a stand-in for the
executor's slots, on virtual time: when each attempt starts, what the slots were told,
what the job ends with. The executors' use of it is tested in test_core_retry.py and
test_bridge_retry.py.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest

from coroexecutor import JobTimeoutError, Retry
from coroexecutor._retrying import Call, run_attempts

pytestmark = [pytest.mark.timeout(15), pytest.mark.virtual_time]


def now() -> float:
    return asyncio.get_running_loop().time()


class FakeSlots:
    """One slot. Records each call as (what, virtual time); resume() waits for ``gate``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.held = True  # the job starts holding its slot
        self.gate: asyncio.Event | None = None
        self.timing_out: set[asyncio.Future[Any]] = set()  # (a job_timeout's record)

    def pause(self) -> None:
        assert self.held
        self.held = False
        self.calls.append(("pause", now()))

    async def resume(self) -> None:
        assert not self.held
        self.calls.append(("resume", now()))
        if self.gate is not None:
            await self.gate.wait()
        self.held = True

    def abandon(self) -> None:
        assert not self.held
        self.calls.append(("abandon", now()))

    def failed(self, error: BaseException) -> None:
        """The job's final error: only a map's slots (Pauses) act on it."""

    def stopping(self) -> bool:
        return False  # no executor that could cancel its jobs

    def cancelled(self, task: asyncio.Task[Any]) -> bool:
        return False  # (as above)


class Job:
    """fn for run_attempts: fails with the given errors in turn, then returns 'done'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.starts: list[float] = []

    async def __call__(self, value: str = "done") -> str:
        self.starts.append(now())
        await asyncio.sleep(0)
        if self.errors:
            raise self.errors.pop(0)
        return value


def run(
    slots: FakeSlots,
    policy: Callable[[int, BaseException], float | None],
    job: Job,
    *,
    job_timeout: float | None = None,
    annotate: bool = True,
    map_index: int | None = None,
) -> asyncio.Task[Any]:
    call = Call(job, (), {}, policy, annotate, job_timeout, map_index)
    return asyncio.ensure_future(run_attempts(slots, call, job()))


async def test_each_failed_attempt_pauses_without_the_slot_then_resumes() -> None:
    slots, job = FakeSlots(), Job(OSError(1), OSError(2))
    start = now()
    result = await run(slots, Retry(attempts=3, backoff=1, jitter=False), job)
    assert result == "done"
    assert [at - start for at in job.starts] == [0, 1, 3]  # pauses of 1, then 2
    assert [(what, at - start) for what, at in slots.calls] == [
        ("pause", 0),
        ("resume", 1),
        ("pause", 1),
        ("resume", 3),
    ]
    assert slots.held


async def test_the_next_attempt_waits_for_its_slot() -> None:
    slots, job = FakeSlots(), Job(OSError())
    slots.gate = asyncio.Event()
    task = run(slots, Retry(attempts=2, backoff=1, jitter=False), job)
    start = now()
    await asyncio.sleep(50)  # the pause ended at 1; no slot yet
    assert len(job.starts) == 1 and not task.done()
    slots.gate.set()
    assert await task == "done"
    assert job.starts[1] - start == 50


async def test_a_zero_delay_still_gives_the_slot_back() -> None:
    slots, job = FakeSlots(), Job(OSError())
    assert await run(slots, lambda attempt, exc: 0, job) == "done"
    assert [what for what, _ in slots.calls] == ["pause", "resume"]


async def test_giving_up_raises_the_last_error_noted_with_the_attempts() -> None:
    errors = [OSError("one"), OSError("two"), OSError("three")]
    slots, job = FakeSlots(), Job(*errors)
    with pytest.raises(OSError) as info:
        await run(slots, Retry(attempts=3, backoff=0), job, map_index=4)
    assert info.value is errors[2]
    assert info.value.__notes__ == [
        "coroexecutor: job Job() failed after 3 attempts (map input #4)"
    ]
    assert [getattr(e, "__notes__", None) for e in errors[:2]] == [None, None]
    assert slots.held  # the job ends in its last attempt's slot


async def test_without_annotate_there_is_no_note() -> None:
    error = OSError()
    with pytest.raises(OSError):
        await run(FakeSlots(), Retry(attempts=1), Job(error), annotate=False)
    assert not hasattr(error, "__notes__")


async def test_an_error_the_policy_declines_ends_the_job_at_once() -> None:
    slots, job = FakeSlots(), Job(ValueError("bug"))
    with pytest.raises(ValueError, match="bug") as info:
        await run(slots, Retry(), job)
    assert info.value.__notes__ == ["coroexecutor: job Job() failed"]
    assert slots.calls == [] and len(job.starts) == 1


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)], ids=repr)
def test_base_exceptions_are_never_retried(error: BaseException) -> None:
    # Driven by hand: in a task, asyncio would re-raise them out of the event loop.
    def policy(attempt: int, exc: BaseException) -> float | None:
        raise AssertionError("asked")

    async def job() -> None:
        raise error

    slots = FakeSlots()
    attempts = run_attempts(slots, Call(job, (), {}, policy, True), job())
    with pytest.raises(type(error)) as info:
        attempts.send(None)
    assert info.value is error and slots.calls == []
    assert error.__notes__ == ["coroexecutor: job job() failed"]


async def test_a_failing_policy_fails_the_job_with_its_error() -> None:
    attempt_error = OSError("attempt")
    policy_error = LookupError("no Retry-After")

    def policy(attempt: int, exc: BaseException) -> float | None:
        raise policy_error

    with pytest.raises(LookupError) as info:
        await run(FakeSlots(), policy, Job(attempt_error))
    assert info.value is policy_error and info.value.__context__ is attempt_error
    assert info.value.__notes__ == ["coroexecutor: job Job() failed"]


async def test_a_bad_delay_fails_the_job_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"returned a negative delay \(got -2\)") as info:
        await run(FakeSlots(), lambda attempt, exc: -2, Job(OSError()))
    assert isinstance(info.value.__context__, OSError)


async def test_cancelling_in_the_pause_ends_it_at_once() -> None:
    slots, job = FakeSlots(), Job(OSError())
    task = run(slots, Retry(attempts=2, backoff=100, max_backoff=100, jitter=False), job)
    start = now()
    while not slots.calls:
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()
    assert [what for what, _ in slots.calls] == ["pause", "abandon"]
    assert now() - start < 100 and len(job.starts) == 1


async def test_cancelling_while_waiting_for_the_slot_abandons() -> None:
    slots, job = FakeSlots(), Job(OSError())
    slots.gate = asyncio.Event()
    task = run(slots, Retry(attempts=2, backoff=1, jitter=False), job)
    await asyncio.sleep(10)  # paused, then waiting for the gate
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled() and len(job.starts) == 1
    assert [what for what, _ in slots.calls] == ["pause", "resume", "abandon"]


async def test_job_timeout_applies_to_each_attempt() -> None:
    class Parked(Job):
        async def __call__(self, value: str = "done") -> str:
            self.starts.append(now())
            if len(self.starts) == 1:
                await asyncio.Event().wait()
            return value

    slots, job = FakeSlots(), Parked()
    start = now()
    retry = Retry(attempts=2, backoff=1, jitter=False)
    assert await run(slots, retry, job, job_timeout=5) == "done"
    assert [at - start for at in job.starts] == [0, 6]

    job = Parked()
    with pytest.raises(JobTimeoutError):  # not retried when the policy does not say so
        await run(FakeSlots(), Retry(on=ConnectionError), job, job_timeout=5)
    assert len(job.starts) == 1


async def test_each_attempt_is_a_fresh_call_with_the_same_arguments() -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fn(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return job(*args, **kwargs)

    job = Job(OSError())
    first = fn("x")
    call = Call(fn, ("x",), {}, Retry(backoff=0), True)
    result = await run_attempts(FakeSlots(), call, first)
    assert result == "x" and calls == [(("x",), {}), (("x",), {})]


async def test_a_retry_attempt_whose_call_fails_is_an_attempt_failure() -> None:
    calls = 0

    def fn() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return Job(OSError("first attempt"))()
        if calls == 2:
            raise ConnectionResetError("second attempt, before any await")
        return Job()()

    call = Call(fn, (), {}, Retry(attempts=3, backoff=0), True)
    result = await run_attempts(FakeSlots(), call, fn())
    assert result == "done" and calls == 3
