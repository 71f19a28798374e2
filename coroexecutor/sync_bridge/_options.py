"""The options a bridge passes to its loop thread: its core's, and shutdown requests."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Hashable
from typing import Callable, NamedTuple, Optional

from .._adaptive import Adaptive
from .._keyed import MaxPerKey
from .._retry import RetryPolicy

__all__ = ["CoreOptions", "ExitReport", "ShutdownRequest"]


class ExitReport(NamedTuple):
    """What a request with a ``report`` (Ctrl-C at exit) cancelled, once the loop has
    applied it, and the blocking calls it could not cancel. ``ExitReport()``: nothing (the
    loop had finished every job)."""

    running: int = 0  # running coroutine jobs cancelled
    queued: int = 0  # queued jobs the loop cancelled (the caller counts its own)
    blocking: int = 0  # blocking calls still running: they cannot be cancelled
    initializer: bool = False  # an async initializer still running was cancelled


class ShutdownRequest(NamedTuple):
    """What one shutdown asked for: write it with keywords (``ShutdownRequest()`` is a
    plain ``shutdown(wait=False)``)."""

    cancel_queued: bool = False  # cancel the jobs that wait (stdlib cancel_futures)
    cancel_running: bool = False  # cancel running coroutine jobs too (exceptional exit)
    # shutdown(timeout=): then cancel what still runs. The shortest one asked for since
    # the loop last took the request (Mailbox.take): it starts each as it takes it.
    grace: Optional[float] = None
    # Ctrl-C at exit: the loop sets what it cancelled once it has applied the request.
    report: Optional[concurrent.futures.Future[ExitReport]] = None

    def joined(self, later: ShutdownRequest) -> ShutdownRequest:
        """This request, followed by a later one: which may only add cancellation, or a
        grace period that ends sooner."""
        return ShutdownRequest(
            cancel_queued=self.cancel_queued or later.cancel_queued or later.cancel_running,
            cancel_running=self.cancel_running or later.cancel_running,
            grace=_shortest(self.grace, later.grace),
            report=later.report,
        )

    def send_report(self, report: ExitReport) -> None:
        """Answer the report once: by the loop thread, or by anyone once it has stopped."""
        if self.report is not None and not self.report.done():
            self.report.set_result(report)


def _shortest(grace: Optional[float], other: Optional[float]) -> Optional[float]:
    if grace is None or (other is not None and other < grace):
        return other
    return grace


class CoreOptions(NamedTuple):
    """The options of a bridge that are its core's, passed through as they are."""

    max_workers: int
    max_per_second: Optional[float]
    burst: Optional[int]
    job_timeout: Optional[float]
    adaptive: Optional[Adaptive] = None  # max_workers=Adaptive: the bridge's Slots follow it
    retry: Optional[RetryPolicy] = None  # the bridge's own (see _retries), not the core's
    key: Optional[Callable[..., Hashable]] = None  # key=: the bridge's Slots hold the limits
    max_per_key: Optional[MaxPerKey] = None
