"""ThreadedLoopExecutor.submit() cut short by a KeyboardInterrupt (Ctrl-C): the job is
handed off whole or not at all, and the executor goes on working and shuts down.

The main thread gets the KeyboardInterrupt wherever the interpreter next checks for
signals: on entering a Python function, and after a C call returns (Python 3.10 on; 3.9
checks between most bytecodes). ``_interrupting`` raises one at exactly such a point, the
n-th of a submit(), for every n, through ``sys.setprofile``: its "call" and "c_return"
events are those points. (A storm of real SIGINTs in a child process was not reliable
enough to keep: see the commit that removed it.)
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Optional

import pytest

from coroexecutor import ThreadedLoopExecutor

pytestmark = pytest.mark.timeout(60)

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure

Profile = Callable[[FrameType, str, Any], object]


def _interrupting(n: int, caller: FrameType) -> Profile:
    """A profile function raising KeyboardInterrupt at the n-th point where a signal's
    handler could run, below ``caller`` (whose own C calls do not count)."""
    seen = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal seen
        if (event == "call" or event == "c_return") and frame is not caller:
            seen += 1
            if seen == n:
                raise KeyboardInterrupt

    return profile


def _submit_cut_at(
    n: int, exe: ThreadedLoopExecutor, fn: Callable[..., Any], *args: Any
) -> Optional[concurrent.futures.Future[Any]]:
    """exe.submit(fn, *args), interrupted at its n-th interrupt point: None if it was (the
    submit raised KeyboardInterrupt), else the future (the submit has fewer points)."""
    sys.setprofile(_interrupting(n, sys._getframe()))
    try:
        return exe.submit(fn, *args)
    except KeyboardInterrupt:
        return None
    finally:
        sys.setprofile(None)


async def _coroutine_job(ran: list[int]) -> None:
    ran.append(1)


def _blocking_job(ran: list[int]) -> None:
    ran.append(1)


def _shut_down(exe: ThreadedLoopExecutor) -> None:
    """shutdown(wait=True), from another thread, so that a hang fails here at once."""
    thread = threading.Thread(target=exe.shutdown, kwargs={"wait": True})
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "shutdown(wait=True) hangs"


@pytest.mark.parametrize(
    ("fn", "options"),
    [
        pytest.param(_coroutine_job, {}, id="coroutine"),
        pytest.param(_blocking_job, {}, id="blocking"),
        # job_timeout: blocking jobs start from the loop too (the mailbox, then a worker)
        pytest.param(_blocking_job, {"job_timeout": 60}, id="blocking-via-loop"),
    ],
)
def test_submit_interrupted_at_any_point_hands_off_the_job_whole_or_not_at_all(
    fn: Callable[..., Any], options: dict[str, Any]
) -> None:
    ran: list[int] = []  # one entry per job that ran
    # One slot: a slot that a cut-short submit kept would block every later job.
    exe = ThreadedLoopExecutor(max_workers=1, **options)
    n = interrupted = 0
    while True:
        n += 1
        future = _submit_cut_at(n, exe, fn, ran)
        if future is not None:  # fewer than n points: every one has been tried
            break
        interrupted += 1
        # Later submits work: a wake-up of the loop (or of a worker) lost, or a slot kept,
        # would leave this one pending.
        exe.submit(fn, ran).result(timeout=WAIT)
    assert interrupted > 10  # the interrupts reached into the hand-off
    future.result(timeout=WAIT)
    _shut_down(exe)
    stats = exe.stats
    # Every job counted as submitted ran, and no other: a job whose submit was cut short
    # ran whole or was never counted.
    assert (stats.submitted, stats.succeeded) == (len(ran), len(ran))
    assert (stats.queued, stats.running, stats.failed, stats.cancelled) == (0, 0, 0, 0)


def test_submit_interrupted_while_jobs_wait_for_a_slot() -> None:
    ran: list[int] = []
    exe = ThreadedLoopExecutor(max_workers=1)
    gate = threading.Event()
    holder = exe.submit(gate.wait, WAIT)  # holds the one slot: later jobs queue
    n = interrupted = 0
    futures = []
    while True:
        n += 1
        future = _submit_cut_at(n, exe, _coroutine_job, ran)
        if future is not None:
            break
        interrupted += 1
        futures.append(exe.submit(_coroutine_job, ran))
    assert interrupted > 3
    gate.set()
    assert holder.result(timeout=WAIT)
    for queued in [*futures, future]:
        queued.result(timeout=WAIT)
    _shut_down(exe)
    stats = exe.stats
    assert (stats.submitted, stats.succeeded) == (len(ran) + 1, len(ran) + 1)
    assert (stats.queued, stats.running, stats.cancelled) == (0, 0, 0)
