"""A retry policy's mistakes, as the executors meet them.

A policy that raises ``StopIteration`` (``lambda attempt, exc: next(schedule)`` once the
schedule runs out) fails the job with a ``RuntimeError`` made where the policy is called,
caused by the ``StopIteration``, its ``__context__`` the attempt's error: that error is
the job's everywhere (noted, held by the task or future, raised by the block, yielded
by a map), as a policy's ``LookupError`` would be. Left to PEP 479, the coroutine around
the policy turned it into a ``RuntimeError`` of its own on the way out, after the note
and fail-fast had taken the ``StopIteration`` (brk28 finding 1).

An async generator function given as a policy (or a partial of one, or an object whose
``async def __call__`` yields) is an ``async def`` policy like any other: refused at
once by the call that gave it. It was accepted, and failed every failing job with a
``TypeError`` about the async generator object it returned (brk28 finding 2).

The policies here answer at once (a pause of 0 s, or no answer): no test waits for time.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable
from typing import Any, Optional

import pytest

from coroexecutor import Adaptive, CoroutineExecutor, LoopExecutor

pytestmark = pytest.mark.timeout(15)

WAIT = 5  # seconds: the bound on every blocking wait
STOPPED = r"^retry policy .+ raised StopIteration(\n|$)"  # (pytest matches the notes too)


class Schedule:
    """A policy that takes its pauses from a list, as ``lambda attempt, exc: next(delays)``
    does: once the list runs out, next() raises StopIteration. Records the errors it is
    asked about."""

    def __init__(self, *delays: float) -> None:
        self.delays = iter(delays)
        self.asked: list[BaseException] = []

    def __call__(self, attempt: int, exc: BaseException) -> Optional[float]:
        self.asked.append(exc)
        return next(self.delays)


async def fails(n: int = 0) -> None:
    await asyncio.sleep(0)
    raise ConnectionResetError(f"server went away ({n})")


def fails_at_call(n: int = 0) -> Awaitable[None]:
    """A job whose call raises before it returns an awaitable (its first attempt)."""
    raise ConnectionResetError(f"refused ({n})")


def check_stopped(error: Optional[BaseException], policy: Schedule, note: Optional[str]) -> None:
    """``error`` is the RuntimeError for ``policy``'s StopIteration, noted with ``note``
    (None: no note), with the last error the policy was asked about as its context."""
    assert type(error) is RuntimeError, repr(error)
    assert re.match(STOPPED, str(error)), error
    assert type(error.__cause__) is StopIteration
    assert error.__context__ is policy.asked[-1]
    assert getattr(error, "__notes__", None) == (None if note is None else [note])


#
# CoroutineExecutor
#


@pytest.mark.parametrize(
    ("delays", "note"),
    [
        ((), "coroexecutor: job fails() failed"),
        ((0,), "coroexecutor: job fails() failed after 2 attempts"),
    ],
    ids=["at once", "after a retry"],
)
async def test_a_policy_raising_stop_iteration_fails_the_job_with_a_runtime_error(
    loop_kind: str, delays: tuple[float, ...], note: str
) -> None:
    policy = Schedule(*delays)
    async with CoroutineExecutor(retry=policy, suppress_task_errors=True) as exe:
        task = await exe.submit(fails)
        await asyncio.wait([task])
    check_stopped(task.exception(), policy, note)
    assert len(policy.asked) == len(delays) + 1
    assert (exe.stats.failed, exe.stats.retried) == (1, len(delays))


@pytest.mark.parametrize("delays", [(), (0,)], ids=["at once", "after a retry"])
async def test_fail_fast_raises_the_same_runtime_error_the_task_holds(
    loop_kind: str, delays: tuple[float, ...]
) -> None:
    policy = Schedule(*delays)
    tasks: list[asyncio.Future[None]] = []
    with pytest.raises(RuntimeError, match=STOPPED) as raised:
        async with CoroutineExecutor(retry=policy) as exe:
            tasks.append(exe.submit_nowait(fails))
            await asyncio.Event().wait()  # fail-fast interrupts the body here
    [task] = tasks
    assert raised.value is task.exception()
    note = "coroexecutor: job fails() failed" + (" after 2 attempts" if delays else "")
    check_stopped(raised.value, policy, note)


@pytest.mark.parametrize("how", ["submit", "submit_nowait"])
async def test_a_call_failing_in_submit_raises_the_runtime_error(loop_kind: str, how: str) -> None:
    # Where the call's own error would go without retry= (out of submit()), as a policy's
    # LookupError would: unnoted, as the call's own error is.
    policy = Schedule()
    async with CoroutineExecutor(retry=policy, suppress_task_errors=True) as exe:
        with pytest.raises(RuntimeError, match=STOPPED) as raised:
            if how == "submit":
                await exe.submit(fails_at_call)
            else:
                exe.submit_nowait(fails_at_call)
    check_stopped(raised.value, policy, None)
    assert type(raised.value.__context__) is ConnectionResetError


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("job", [fails, fails_at_call])
async def test_a_map_yields_or_raises_the_runtime_error_noted(
    loop_kind: str, ordered: bool, job: Any
) -> None:
    async with CoroutineExecutor(suppress_task_errors=True) as exe:
        policy = Schedule()
        results = exe.map(job, [0], retry=policy) if ordered else exe.map_unordered(
            job, [0], retry=policy
        )
        with pytest.raises(RuntimeError, match=STOPPED) as raised:
            async for _ in results:
                pass
        note = f"coroexecutor: job {job.__name__}(0) failed (map input #0)"
        check_stopped(raised.value, policy, note)

        policy = Schedule()
        options: dict[str, Any] = {"retry": policy, "return_exceptions": True}
        many = exe.map(job, [0, 1], **options) if ordered else exe.map_unordered(
            job, [0, 1], **options
        )
        errors = [error async for error in many]
    assert len(errors) == 2 and len(policy.asked) == 2
    for error in errors:
        assert type(error) is RuntimeError and re.match(STOPPED, str(error)), error
        assert type(error.__cause__) is StopIteration
        assert any(error.__context__ is asked for asked in policy.asked)
        n = int(re.findall(r"\((\d)\)$", str(error.__context__))[0])  # its input
        assert error.__notes__ == [f"coroexecutor: job {job.__name__}({n}) failed (map input #{n})"]


#
# LoopExecutor
#


def blocking_fails(n: int = 0) -> None:
    raise ConnectionResetError(f"server went away ({n})")


@pytest.mark.parametrize("job", [fails, blocking_fails])
def test_the_bridge_fails_the_future_with_the_runtime_error(job: Any) -> None:
    # The future held the StopIteration itself (noted), which asyncio.wrap_future cannot
    # take, and LoopExecutor.map's iterator raised it: list() took it for the end of the
    # results and returned them cut short, without an error.
    policy = Schedule()
    with LoopExecutor(max_workers=2, retry=policy) as exe:
        error = exe.submit(job, 1).exception(timeout=WAIT)
        check_stopped(error, policy, f"coroexecutor: job {job.__name__}(1) failed")
        mapped = Schedule()
        with pytest.raises(RuntimeError, match=STOPPED) as raised:
            list(exe.map(job, [2], retry=mapped, timeout=WAIT))
        note = f"coroexecutor: job {job.__name__}(2) failed (map input #0)"
        check_stopped(raised.value, mapped, note)
    assert exe.stats.failed == 2


#
# An async generator function as a policy
#


async def yields_a_delay(attempt: int, exc: BaseException) -> Any:
    yield 0.0  # the yield makes it an async generator function: still an async def


async def yields_its_base(base: float, attempt: int, exc: BaseException) -> Any:
    yield base


class YieldingCall:
    async def __call__(self, attempt: int, exc: BaseException) -> Any:
        yield 0.0


ASYNC_GENERATOR_POLICIES = {
    "function": yields_a_delay,
    "partial": functools.partial(yields_its_base, 0.0),
    "__call__": YieldingCall(),
}
ASYNC_POLICY = "retry must be a plain callable that returns a delay, not an async function"


@pytest.mark.parametrize("entry", ["CoroutineExecutor", "map", "map_unordered"])
@pytest.mark.parametrize("form", ASYNC_GENERATOR_POLICIES)
async def test_an_async_generator_policy_is_refused_at_once(form: str, entry: str) -> None:
    policy: Any = ASYNC_GENERATOR_POLICIES[form]
    if entry == "CoroutineExecutor":
        with pytest.raises(TypeError, match=ASYNC_POLICY):
            CoroutineExecutor(retry=policy)
        return
    async with CoroutineExecutor() as exe:
        with pytest.raises(TypeError, match=ASYNC_POLICY):
            getattr(exe, entry)(fails, [0], retry=policy)
    assert exe.stats.submitted == 0


@pytest.mark.parametrize("entry", ["LoopExecutor", "map"])
@pytest.mark.parametrize("form", ASYNC_GENERATOR_POLICIES)
def test_the_bridge_refuses_an_async_generator_policy_at_once(form: str, entry: str) -> None:
    policy: Any = ASYNC_GENERATOR_POLICIES[form]
    if entry == "LoopExecutor":
        with pytest.raises(TypeError, match=ASYNC_POLICY):
            LoopExecutor(retry=policy)
        return
    with LoopExecutor(max_workers=1) as exe, pytest.raises(TypeError, match=ASYNC_POLICY):
        exe.map(blocking_fails, [0], retry=policy)
    assert exe.stats.submitted == 0


async def yields_a_key(n: int) -> Any:
    yield n


async def yields_a_limit(key: object) -> Any:
    yield 1


async def yields_a_verdict(exc: BaseException) -> Any:
    yield True


async def test_every_plain_function_option_refuses_an_async_generator_function() -> None:
    # The same check as for a policy: key=, max_per_key= and Adaptive's overload= took
    # one, whose generator object would have been the key, the limit or the verdict.
    with pytest.raises(TypeError, match="key must be a plain function returning the key"):
        CoroutineExecutor(key=yields_a_key, max_per_key=1)
    with pytest.raises(TypeError, match="max_per_key must be a plain function of the key"):
        CoroutineExecutor(key=str, max_per_key=yields_a_limit)
    with pytest.raises(TypeError, match="overload must be a plain function, not an async one"):
        Adaptive(overload=yields_a_verdict)
    with pytest.raises(TypeError, match="on_job_done must be a plain callable"):
        CoroutineExecutor(on_job_done=yields_a_verdict)  # refused before as well
