"""A bridge job whose future ends cancelled counts as cancelled in ``stats``, whatever its
core task ended with (ExecutorStats: "cancelled counts jobs cancelled before or while
running, whoever cancelled them"; bridge.rst: cancel() of a running job; brk21 finding 1).

The core counts a job by how its task ended; the bridge's future may say otherwise when a
cancel() won it and the task ended with the core's JobTimeoutError, which reaches the
future only after the task's end: the caller's cancel() whose clean-up the deadline cut
short, or a cancel() (the grace period's end) in the loop turn between a timed-out
task's end and its done callback."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

import pytest

from coroexecutor import LoopExecutor
from coroexecutor.sync_bridge._options import ShutdownRequest
from tests.conftest import new_loop

pytestmark = pytest.mark.timeout(20)

# What the end of a shutdown(timeout=...) grace period asks of the loop (_loop_thread).
_GRACE_OVER = ShutdownRequest(cancel_queued=True, cancel_running=True)


def _counts(exe: LoopExecutor) -> tuple[int, int, int]:
    stats = exe.stats
    return stats.cancelled, stats.failed, stats.succeeded


def test_a_cancel_whose_clean_up_the_deadline_cuts_short_counts_as_cancelled(
    loop_kind: str,
) -> None:
    """The caller's cancel() is no executor's own, so the job_timeout that passes during
    its clean-up cuts it short (the core's task fails with JobTimeoutError), but the
    future that cancel() returned True for is cancelled: stats count the job cancelled."""
    mine: list[Future[Any]] = []
    cut_short = threading.Event()

    async def job() -> None:
        # The caller's cancel(), made in the job's first step: before the deadline, always.
        assert mine[0].cancel()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:  # the caller's cancel: a clean-up that waits ...
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:  # ... until the deadline's cancel cuts it short
                cut_short.set()
                raise

    exe = LoopExecutor(job_timeout=0.01, loop_factory=lambda: new_loop(loop_kind))
    mine.append(exe.submit(job))
    exe.shutdown()
    assert cut_short.is_set()
    assert mine[0].cancelled()
    assert _counts(exe) == (1, 0, 0), exe.stats


def test_a_grace_periods_end_that_wins_a_timed_out_jobs_future_counts_it_cancelled(
    loop_kind: str,
) -> None:
    """The interleaving forced: a job's deadline clean-up ends (its task fails with
    JobTimeoutError), and in the same loop turn, before the task's done callback copies
    that error into the future, the grace period's end cancels the still pending future.
    The future is cancelled: stats count the job cancelled, not failed."""
    handoffs: list[Any] = []

    async def job() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:  # the deadline's cancel
            # Posted now, it runs before the task's done callbacks, which its end queues.
            handoffs[0].request_shutdown_threadsafe(_GRACE_OVER)
            raise

    exe = LoopExecutor(job_timeout=0.01, loop_factory=lambda: new_loop(loop_kind))
    handoffs.append(exe._handoff)
    future = exe.submit(job)
    exe.shutdown()
    assert future.cancelled()
    assert _counts(exe) == (1, 0, 0), exe.stats
