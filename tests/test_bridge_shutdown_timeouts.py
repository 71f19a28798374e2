"""ThreadedLoopExecutor: every shutdown(timeout=) call's grace period counts, the earliest
end wins (found by a tester, brk23 finding F1).

Only the first shutdown request started a grace period: a later ``shutdown(timeout=...)``
(after ``shutdown(wait=False)``, while a ``with`` block's exit waited, or while a longer
``shutdown(timeout=...)`` waited in another thread) was joined to it with the first one's
grace, often none, so it waited for the running coroutine jobs (and an async
initializer, the jobs queued behind it starting after it) to end on their own. The core
honours it (``_shutdown._start_grace``). Now each call's grace period starts as the loop
learns of it, and the earliest end among them cancels what still runs.

Each job here parks until cancelled: only the end of a grace period ends it before the
WAIT hang guard, which makes it fail (not cancelled) instead of hanging the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from coroexecutor import LoopExecutor
from coroexecutor.sync_bridge._mailbox import Mailbox
from coroexecutor.sync_bridge._options import ShutdownRequest
from tests._parked import Parked
from tests.conftest import new_loop

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure
SHORT = 0.01  # a grace period that ends while the parked job runs
LONG = 60  # one that never ends in a test

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def waiting_logged() -> Iterator[threading.Event]:
    """Set once a shutdown(wait=True) or a with block's exit has recorded its request and
    waits (it logs "waiting for the jobs of ..." at DEBUG level then)."""
    logged = threading.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("waiting for the jobs of"):
                logged.set()

    logger, handler = logging.getLogger("coroexecutor"), Handler(logging.DEBUG)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield logged
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _executor(loop_kind: str, **options: Any) -> LoopExecutor:
    return LoopExecutor(loop_factory=lambda: new_loop(loop_kind), **options)


def test_a_timeout_after_a_shutdown_without_wait_cancels_the_running_jobs(
    loop_kind: str,
) -> None:
    job = Parked()
    exe = _executor(loop_kind)
    future = exe.submit(job)
    assert job.started.wait(WAIT)
    exe.shutdown(wait=False)  # no grace period: the jobs may run on
    exe.shutdown(timeout=SHORT)  # ... until this one's ends
    assert job.cancelled.is_set()
    assert future.cancelled()


def test_a_timeout_while_a_with_blocks_exit_waits_cancels_the_running_jobs(
    loop_kind: str, waiting_logged: threading.Event
) -> None:
    job = Parked()
    helper = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with _executor(loop_kind) as exe:
            future = exe.submit(job)
            assert job.started.wait(WAIT)

            def shorten() -> None:
                assert waiting_logged.wait(WAIT)  # the exit's shutdown() came first
                exe.shutdown(timeout=SHORT)

            shortened = helper.submit(shorten)
        shortened.result(timeout=WAIT)
    finally:
        helper.shutdown()
    assert job.cancelled.is_set()
    assert future.cancelled()


def test_a_shorter_timeout_from_another_thread_ends_a_longer_ones_grace_period(
    loop_kind: str, waiting_logged: threading.Event
) -> None:
    job = Parked()
    exe = _executor(loop_kind)
    future = exe.submit(job)
    assert job.started.wait(WAIT)
    helper = concurrent.futures.ThreadPoolExecutor(1)
    try:
        longer = helper.submit(exe.shutdown, timeout=LONG)
        assert waiting_logged.wait(WAIT)  # its grace period runs
        exe.shutdown(timeout=SHORT)
        assert longer.result(timeout=WAIT) is None  # both returned
    finally:
        helper.shutdown()
    assert job.cancelled.is_set()
    assert future.cancelled()


def test_a_longer_timeout_never_extends_a_shorter_ones_grace_period(loop_kind: str) -> None:
    job = Parked()
    exe = _executor(loop_kind)
    future = exe.submit(job)
    assert job.started.wait(WAIT)
    exe.shutdown(wait=False, timeout=SHORT)
    exe.shutdown(timeout=LONG)
    assert job.cancelled.is_set()
    assert future.cancelled()


def test_a_timeout_after_a_shutdown_without_wait_cancels_an_async_initializer(
    loop_kind: str,
) -> None:
    init = Parked()
    ran = threading.Event()

    async def job() -> None:
        ran.set()

    exe = _executor(loop_kind, initializer=init)
    assert init.started.wait(WAIT)
    queued = exe.submit(job)  # waits for the initializer
    exe.shutdown(wait=False)
    exe.shutdown(timeout=SHORT)
    assert init.cancelled.is_set()
    assert queued.cancelled()
    assert not ran.is_set()  # never started after the initializer


def test_a_timeout_after_the_loop_has_stopped_changes_nothing(loop_kind: str) -> None:
    exe = _executor(loop_kind)
    assert exe.submit(asyncio.sleep, 0, "done").result(timeout=WAIT) == "done"
    exe.shutdown()
    stats = exe.stats
    exe.shutdown(timeout=SHORT)
    exe.shutdown(wait=False, timeout=SHORT)
    assert exe.stats == stats


#
# The parts: how requests join, and what the loop takes
#


def test_joined_requests_keep_the_shortest_grace_period() -> None:
    assert ShutdownRequest().joined(ShutdownRequest(grace=1.0)).grace == 1.0
    assert ShutdownRequest(grace=1.0).joined(ShutdownRequest(grace=2.0)).grace == 1.0
    assert ShutdownRequest(grace=2.0).joined(ShutdownRequest(grace=1.0)).grace == 1.0
    assert ShutdownRequest(grace=1.0).joined(ShutdownRequest()).grace == 1.0


def test_the_loop_takes_each_grace_period_once() -> None:
    mailbox = Mailbox()
    mailbox.request_shutdown(ShutdownRequest(grace=2.0))
    assert mailbox.take().shutdown == ShutdownRequest(grace=2.0)
    # Taken, it has started: a later request (the end of that grace period's cancel
    # included) does not start it again, only its own.
    cancel_all = ShutdownRequest(cancel_queued=True, cancel_running=True)
    assert mailbox.request_shutdown(cancel_all) == cancel_all
    mailbox.request_shutdown(ShutdownRequest(grace=5.0))
    assert mailbox.take().shutdown == cancel_all._replace(grace=5.0)
    assert mailbox.take().shutdown is None  # nothing new
