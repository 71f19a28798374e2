"""ThreadedLoopExecutor under ``retry=``: the deadlock guard of a buffered map's wait for
its jobs to pause, and a stop (shutdown, a map's close, cancel()) that comes while the
policy decides about a failed attempt."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable

import pytest

from coroexecutor import LoopExecutor, Retry

pytestmark = pytest.mark.timeout(15)

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure


#
# The deadlock guard: a buffered map under retry= waits for a job to pause too
#


async def _child(n: int) -> int:
    await asyncio.sleep(0)
    return n


@pytest.mark.parametrize("where", ["constructor", "map"])
def test_a_buffered_retried_map_refuses_to_wait_on_the_loop_thread(where: str) -> None:
    # next() of a buffered map under retry= waits for its head's result or for one of its
    # jobs to pause: on the loop thread, which its jobs need, that wait would never end,
    # and must be refused as result() is.
    policy = Retry(attempts=2, backoff=0, jitter=False)
    exe = LoopExecutor(max_workers=1, retry=policy if where == "constructor" else None)
    map_retry: dict[str, Any] = {} if where == "constructor" else {"retry": policy}

    async def parent() -> list[int]:
        # The only slot is this job's: the map's jobs wait in the backlog.
        return list(exe.map(_child, [1, 2], buffersize=1, **map_retry))

    outer = exe.submit(parent)
    try:
        error = outer.exception(timeout=WAIT)
    except concurrent.futures.TimeoutError:
        # The loop thread is stuck in next(): cancelling the map's queued jobs wakes it
        # (the head's cancel notifies its waiters), so the test fails rather than hangs.
        exe.shutdown(wait=True, cancel_futures=True)
        raise AssertionError("next() waited on the loop thread instead of refusing") from None
    exe.shutdown(wait=True)
    assert isinstance(error, RuntimeError)
    assert str(error).startswith("result() cannot wait on the event loop thread of ")
    # The map's two jobs (the window's, and the one next() submits), cancelled as it closed.
    assert (exe.stats.cancelled, exe.stats.failed) == (2, 1)


#
# A stop while the policy decides: the policy's answer stands, as in the core
#


async def _fails_async(value: str) -> None:
    raise ConnectionError(value)


def _fails(value: str) -> None:
    raise ConnectionError(value)


class _Decides:
    """A policy that tells the test it is deciding (``deciding``), then waits for the
    test's stop (``stopped``) before it answers ``answer``."""

    def __init__(self, answer: float | None) -> None:
        self.answer = answer
        self.deciding, self.stopped = threading.Event(), threading.Event()
        self.calls: list[int] = []

    def __call__(self, attempt: int, exc: BaseException) -> float | None:
        self.calls.append(attempt)
        self.deciding.set()
        if not self.stopped.wait(WAIT):
            raise AssertionError("the test never stopped the job")
        return self.answer


_STOPS = [
    ("blocking", "shutdown"), ("blocking", "close"),
    ("coroutine", "shutdown"), ("coroutine", "close"), ("coroutine", "cancel"),
]


def _stop_while_deciding(kind: str, stop: str, policy: _Decides) -> tuple[LoopExecutor, Any]:
    """Run one failing job under ``policy``, stopped by ``stop`` while the policy decides
    about its first attempt; return the executor, shut down, and the job's outcome: its
    error, "cancelled", or (``close``) what the closed map yields."""
    fn: Callable[[str], Any] = _fails if kind == "blocking" else _fails_async
    exe = LoopExecutor(max_workers=1, retry=policy)
    try:
        if stop == "close":
            results = exe.map(fn, ["x"])
            assert policy.deciding.wait(WAIT)
            results.close()  # type: ignore[attr-defined]
            policy.stopped.set()
            outcome: Any = list(results)  # closed: nothing more
        else:
            future = exe.submit(fn, "x")
            assert policy.deciding.wait(WAIT)
            if stop == "shutdown":
                exe.shutdown(wait=False, cancel_futures=True)
            else:
                assert future.cancel()
            policy.stopped.set()
            try:
                outcome = future.exception(timeout=WAIT)
            except concurrent.futures.CancelledError:
                outcome = "cancelled"
    finally:
        policy.stopped.set()
        exe.shutdown(wait=True, cancel_futures=True)  # ends a pause the stop missed
    return exe, outcome


@pytest.mark.parametrize(("kind", "stop"), _STOPS)
def test_a_stop_while_the_policy_retries_counts_the_retry_and_cancels_the_job(
    kind: str, stop: str
) -> None:
    # The policy gave the failed attempt another try: the stop then finds the job in its
    # pause, as in the core (where no stop comes between the policy's answer and the
    # pause). The retry counts, and the job ends cancelled, as one cancelled in its pause;
    # no further attempt starts.
    policy = _Decides(answer=60.0)  # a pause only a cancel ends
    exe, outcome = _stop_while_deciding(kind, stop, policy)
    assert outcome == ([] if stop == "close" else "cancelled")
    assert policy.calls == [1]
    stats = exe.stats
    assert (stats.retried, stats.cancelled, stats.failed, stats.queued, stats.running) == (
        1, 1, 0, 0, 0,
    )


@pytest.mark.parametrize(("kind", "stop"), _STOPS)
def test_a_stop_while_the_policy_gives_up_ends_the_job_as_the_policy_says(
    kind: str, stop: str
) -> None:
    # The same stop, when the policy gives up: no retry; the job ends with the attempt's
    # error, or cancelled if cancel() (or a map's close, which cancels its coroutine
    # jobs) won first.
    policy = _Decides(answer=None)
    exe, outcome = _stop_while_deciding(kind, stop, policy)
    stats = exe.stats
    if stop == "cancel" or (stop == "close" and kind == "coroutine"):
        assert (stats.retried, stats.cancelled, stats.failed) == (0, 1, 0)
    else:
        assert (stats.retried, stats.cancelled, stats.failed) == (0, 0, 1)
    if stop == "shutdown":
        assert isinstance(outcome, ConnectionError) and str(outcome) == "x"
    assert policy.calls == [1]
