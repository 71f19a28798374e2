"""A job whose call failed as it was submitted, cancelled before its first step: the failed
call is an attempt that failed and was given another try (the policy said so as the job
started), so ``stats.retried`` counts it, as it counts a first attempt that failed inside
its task and was cancelled in the pause after it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor

OPTIONS = [
    {},
    {"on_job_done": lambda job: None},
    {"job_timeout": 600.0},
    {"key": lambda *args: "k", "max_per_key": 1},
]
OPTION_IDS = ["in-line", "hook", "job_timeout", "key"]


def refused() -> Awaitable[None]:
    """A plain function that raises before it returns an awaitable: the job's first
    attempt fails inside submit() (see _retrying.failed_call)."""
    raise ConnectionError("refused")


async def fails() -> None:
    raise ConnectionError("refused")


class Policy:
    """Retries every failure after 600 s (no second attempt runs in a test); ``asked``
    is set once it has answered for attempt 1."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    def __call__(self, attempt: int, exc: BaseException) -> float:
        self.asked.set()
        return 600.0


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("how", ["submit", "submit_nowait"])
async def test_a_failed_call_cancelled_before_its_first_step_counts_as_retried(
    how: str, options: dict[str, Any], loop_kind: str
) -> None:
    """Regression (left 4): the failed call's retry was counted only as the job's first
    step paused it, so a job cancelled before that step ended with ``retried == 0``,
    while the same failure inside the job's task, cancelled in its pause, adds 1."""
    policy = Policy()
    async with CoroutineExecutor(retry=policy, suppress_task_errors=True, **options) as exe:
        if how == "submit":
            job: asyncio.Future[None] = await exe.submit(refused)
        else:
            job = exe.submit_nowait(refused)
        assert policy.asked.is_set()  # the policy answered as the job started
        job.cancel()  # no await since: before its first step (unless an eager one ran it)
        await asyncio.wait([job])
    assert job.cancelled()
    stats = exe.stats
    assert (stats.retried, stats.cancelled, stats.failed) == (1, 1, 0)


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
async def test_a_first_attempt_failed_in_its_task_cancelled_in_its_pause_counts_as_retried(
    options: dict[str, Any], loop_kind: str
) -> None:
    """The rule the case above follows (semantics.rst: "one cancelled in the pause after
    its first attempt adds 1, though no second attempt ran")."""
    policy = Policy()
    async with CoroutineExecutor(retry=policy, suppress_task_errors=True, **options) as exe:
        job = await exe.submit(fails)
        await policy.asked.wait()
        job.cancel()
        await asyncio.wait([job])
    assert job.cancelled()
    stats = exe.stats
    assert (stats.retried, stats.cancelled, stats.failed) == (1, 1, 0)


async def test_a_failed_call_whose_task_asyncio_cancels_directly_counts_as_retried() -> None:
    """``asyncio.Task.cancel(job)``, past the job task's own cancel() (which primes its
    runner): the runner never runs a line, and the executor settles the job a turn later
    (see _shutdown._settle_unprimed). Its failed call still counts as retried."""
    policy = Policy()
    async with CoroutineExecutor(retry=policy, suppress_task_errors=True) as exe:
        job = exe.submit_nowait(refused)
        asyncio.Task.cancel(job)  # type: ignore[arg-type]  # an asyncio.Task: submit_nowait's in-line job
        await asyncio.wait([job])
    assert job.cancelled()
    stats = exe.stats
    assert (stats.retried, stats.cancelled, stats.failed) == (1, 1, 0)
