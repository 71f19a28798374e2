"""Errors name their job by its kind alone (semantics.rst): a coroutine job of
CoroutineExecutor from its coroutine, a job with a retry policy and a function's
awaitable that is no coroutine from its call, whatever else the executor is set to.

brk20 finding 2: job_timeout= (submit and map), on_job_done= and an Adaptive limit (map)
sent the job through the attempts loop, which named it from its call: ``fetch('u')``
instead of ``fetch('u?page=2')``, and ``via_wrapper('u')`` for a plain function that
returned the coroutine.

brk22 finding 3: under the eager task factory, on_job_done= and an Adaptive limit named a
job that failed in its first step twice, and its error got two notes if an argument's
repr had changed in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any

import pytest

from coroexecutor import Adaptive, CoroutineExecutor, JobTimeoutError, Retry

pytestmark = pytest.mark.timeout(15)


def notes(exc: BaseException | None) -> list[str]:
    return list(getattr(exc, "__notes__", []))


async def fetch(url: str) -> None:
    await asyncio.sleep(0)
    url += "?page=2"  # the value the parameter holds when the job fails
    raise ConnectionError(url)


async def fetch_at_once(url: str) -> None:
    url += "?page=2"  # fails in its first step: an eager task factory runs it in submit()
    raise ConnectionError(url)


def via_wrapper(url: str) -> Coroutine[Any, Any, None]:
    return fetch(url)  # a plain function that returns a coroutine: that coroutine names it


def _key(*args: Any, **kwargs: Any) -> str:
    return "one key"


OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "on_job_done": {"on_job_done": lambda future: None},
    "job_timeout": {"job_timeout": 60},
    "adaptive": {"max_workers": Adaptive(min=1, max=4)},
    "key": {"key": _key, "max_per_key": 2},
    "key_job_timeout": {"key": _key, "max_per_key": 2, "job_timeout": 60},
    "on_job_done_job_timeout": {"on_job_done": lambda future: None, "job_timeout": 60},
}
FUNCTIONS = {"coroutine function": fetch, "plain wrapper": via_wrapper}


@pytest.mark.parametrize("fn", list(FUNCTIONS.values()), ids=list(FUNCTIONS))
@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
async def test_a_coroutine_job_is_named_from_its_frame_whatever_the_options(
    loop_kind: str, options: dict[str, Any], fn: Any
) -> None:
    async with CoroutineExecutor(suppress_task_errors=True, **options) as exe:
        task = await exe.submit(fn, "u")
        future = exe.submit_nowait(fn, "u")
        await asyncio.wait([task, future])
        mapped = [r async for r in exe.map(fn, ["u"], return_exceptions=True)]
        unordered = [r async for r in exe.map_unordered(fn, ["u"], return_exceptions=True)]
    job = "coroexecutor: job fetch('u?page=2') failed"
    assert notes(task.exception()) == [job]
    assert notes(future.exception()) == [job]
    assert notes(mapped[0]) == [f"{job} (map input #0)"]
    assert notes(unordered[0]) == [f"{job} (map input #0)"]


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
async def test_a_queued_job_and_a_failing_map_are_named_so_too(
    loop_kind: str, options: dict[str, Any]
) -> None:
    release = asyncio.Event()
    settings = {"max_workers": 1, "suppress_task_errors": True, **options}
    async with CoroutineExecutor(**settings) as exe:
        exe.submit_nowait(release.wait)
        queued = exe.submit_nowait(fetch_at_once, "u")  # waits for the slot
        release.set()
        await asyncio.wait([queued])
    assert notes(queued.exception()) == ["coroexecutor: job fetch_at_once('u?page=2') failed"]
    with pytest.raises(ConnectionError) as info:
        async with CoroutineExecutor(**options) as exe:
            async for _ in exe.map(fetch_at_once, ["u"]):
                pass
    assert notes(info.value) == [
        "coroexecutor: job fetch_at_once('u?page=2') failed (map input #0)"
    ]


async def test_a_maps_retry_none_names_its_jobs_from_their_coroutines(loop_kind: str) -> None:
    # A map that turns off the executor's retry policy runs coroutine jobs, named so.
    async with CoroutineExecutor(retry=Retry(attempts=2, backoff=0)) as exe:
        mapped = [r async for r in exe.map(fetch, ["u"], return_exceptions=True, retry=None)]
        retried = [r async for r in exe.map(fetch, ["u"], return_exceptions=True)]
    assert notes(mapped[0]) == ["coroexecutor: job fetch('u?page=2') failed (map input #0)"]
    assert notes(retried[0]) == [  # a job with a retry policy: from its call
        "coroexecutor: job fetch('u') failed after 2 attempts (map input #0)"
    ]


async def _parked(url: str) -> None:
    url += "!"  # the value the parameter holds when the deadline cancels the job
    await asyncio.Event().wait()


def _parked_future(url: str) -> Awaitable[None]:
    return asyncio.get_running_loop().create_future()  # no coroutine: named from its call


@pytest.mark.parametrize("options", [{}, {"on_job_done": lambda future: None}], ids=["", "hook"])
async def test_a_timed_out_coroutine_job_is_named_from_its_frame(
    loop_kind: str, options: dict[str, Any]
) -> None:
    # The JobTimeoutError did not leave the coroutine: its cause, the CancelledError
    # that stopped the job, did, and its traceback holds the frame.
    async with CoroutineExecutor(suppress_task_errors=True, job_timeout=0.01, **options) as exe:
        task = await exe.submit(_parked, "u")
        future = await exe.submit(_parked_future, "u")
        mapped = [r async for r in exe.map(_parked, ["u"], return_exceptions=True)]
        await asyncio.wait([task, future])
    for error in (task.exception(), future.exception(), mapped[0]):
        assert isinstance(error, JobTimeoutError)
    assert str(task.exception()) == "job _parked('u') ran longer than job_timeout=0.01 s"
    assert notes(task.exception()) == ["coroexecutor: job _parked('u!') failed"]
    assert notes(mapped[0]) == ["coroexecutor: job _parked('u!') failed (map input #0)"]
    assert notes(future.exception()) == ["coroexecutor: job _parked_future('u') failed"]


#
# Named once: a job that fails in its first step
#


class Changing:
    """An argument whose repr differs at each call (as the executor's own does, passed to
    a job that submits jobs), and that counts its calls."""

    def __init__(self) -> None:
        self.reprs = 0

    def __repr__(self) -> str:
        self.reprs += 1
        return f"Changing#{self.reprs}"


async def fails_at_once(arg: object) -> None:
    raise LookupError("failed")  # in its first step: inside create_task, under eager


async def awaits_a_child(exe: CoroutineExecutor) -> None:
    child = await exe.submit(fails_at_once, "child")
    await child  # (under eager, the child has failed inside submit(): so does this job)


# brk22 finding 3: under the eager task factory, a job settling from its done callback (an
# on_job_done hook, an Adaptive limit) that failed in its first step was named twice: as
# its start returned, and again by the callback a turn later; with an argument whose repr
# had changed in between, its error got two notes.


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
async def test_a_job_failing_in_its_first_step_is_named_once(
    loop_kind: str, options: dict[str, Any]
) -> None:
    submitted, nowait = Changing(), Changing()
    async with CoroutineExecutor(suppress_task_errors=True, **options) as exe:
        task = await exe.submit(fails_at_once, submitted)
        future = exe.submit_nowait(fails_at_once, nowait)
        await asyncio.wait([task, future])
    for error in (task.exception(), future.exception()):
        assert notes(error) == ["coroexecutor: job fails_at_once(Changing#1) failed"]
    assert (submitted.reprs, nowait.reprs) == (1, 1)  # the note was built once


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
async def test_a_queued_job_failing_in_its_first_step_is_named_once(
    loop_kind: str, options: dict[str, Any]
) -> None:
    # It starts when the slot frees, from the settling of the job that held it.
    arg, release = Changing(), asyncio.Event()
    settings = {"max_workers": 1, "suppress_task_errors": True, **options}
    async with CoroutineExecutor(**settings) as exe:
        exe.submit_nowait(release.wait)
        queued = exe.submit_nowait(fails_at_once, arg)  # waits for the slot
        release.set()
        await asyncio.wait([queued])
    assert notes(queued.exception()) == ["coroexecutor: job fails_at_once(Changing#1) failed"]
    assert arg.reprs == 1


@pytest.mark.parametrize("how", ["submit", "submit_nowait"])
@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
async def test_a_job_failing_in_its_first_step_is_named_once_under_fail_fast(
    loop_kind: str, options: dict[str, Any], how: str
) -> None:
    arg = Changing()
    with pytest.raises(LookupError) as info:
        async with CoroutineExecutor(**options) as exe:
            if how == "submit":
                await exe.submit(fails_at_once, arg)
            else:
                exe.submit_nowait(fails_at_once, arg)
    assert notes(info.value) == ["coroexecutor: job fails_at_once(Changing#1) failed"]
    assert arg.reprs == 1


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
async def test_a_job_given_the_executor_is_named_once(
    loop_kind: str, options: dict[str, Any]
) -> None:
    # The documented way to submit from a job: pass it the executor, whose repr (its
    # counts) changes as its jobs start and end.
    async with CoroutineExecutor(suppress_task_errors=True, **options) as exe:
        alone = await exe.submit(fails_at_once, exe)
        parent = await exe.submit(awaits_a_child, exe)
        await asyncio.wait([alone, parent])
    [note] = notes(alone.exception())
    assert note.startswith("coroexecutor: job fails_at_once(<CoroutineExecutor ")
    child_note, parent_note = notes(parent.exception())  # one per job: the child first
    assert child_note == "coroexecutor: job fails_at_once('child') failed"
    assert parent_note.startswith("coroexecutor: job awaits_a_child(<CoroutineExecutor ")
