"""A key= key whose ``__hash__`` starts raising while its job runs, on LoopExecutor (brk35).

The bridge holds the key lines of both kinds of job itself. The key's error used to be
raised out of the bridge's settling as the job ended: a coroutine job's went to the loop
as "Exception in callback Scheduler._settle()", a blocking job's killed its worker
thread ("Exception in thread ..._worker_0"), and what that settling does after giving
the key's room back was skipped. Now, as on CoroutineExecutor (tests/test_keyed_key_lost.py),
the job keeps its own outcome and the key's error is reported, under the bridge's policy
(one job's error fails only its own future) to the loop's exception handler; the key's
room stays taken, as documented; the jobs waiting in its line are cancelled at shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Callable

import pytest

from coroexecutor import ExecutorStats, LoopExecutor, Retry
from tests.conftest import new_loop
from tests.test_keyed_key_lost import (  # the same key, jobs and report
    MESSAGE,
    Host,
    breaks_its_key,
    breaks_its_key_and_fails,
    plain,
)

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0  # seconds: a bound on every wait, never reached when all is well


def breaks_its_key_blocking(host: Host) -> str:
    host.broken = True
    return "ok"


def breaks_its_key_and_fails_blocking(host: Host) -> str:
    host.broken = True
    raise OSError("the job's own error")


def plain_blocking(host: Host) -> str:
    return host.name


# A coroutine job; a blocking job on a worker thread, which gives its slot back there;
# and one that starts from the loop (job_timeout= routes blocking jobs through it).
KINDS = pytest.mark.parametrize(
    "kind",
    [
        pytest.param(("coroutine", {}), id="coroutine"),
        pytest.param(("blocking", {}), id="blocking"),
        pytest.param(("blocking", {"job_timeout": 60.0}), id="blocking-on-loop"),
    ],
)


def jobs(kind: str) -> tuple[Callable[[Host], Any], Callable[[Host], Any], Callable[[Host], Any]]:
    """The job that breaks its key, the one that breaks it and fails, and a plain one."""
    if kind == "coroutine":
        return breaks_its_key, breaks_its_key_and_fails, plain
    return breaks_its_key_blocking, breaks_its_key_and_fails_blocking, plain_blocking


class Reports:
    """The bridge's loop, made with an exception handler that keeps what it is given."""

    def __init__(self, loop_kind: str = "default") -> None:
        self.contexts: list[dict[str, Any]] = []
        self.loop_kind = loop_kind

    def loop(self) -> asyncio.AbstractEventLoop:
        loop = new_loop(self.loop_kind)
        loop.set_exception_handler(lambda _, context: self.contexts.append(context))
        return loop

    def seen(self) -> list[tuple[str, str]]:
        return [(c["message"], repr(c.get("exception"))) for c in self.contexts]


def counts(stats: ExecutorStats) -> tuple[int, ...]:
    return (
        stats.submitted, stats.queued, stats.running, stats.succeeded, stats.failed,
        stats.cancelled, stats.active_keys,
    )


@KINDS
def test_the_job_keeps_its_result_and_the_keys_error_is_reported(
    kind: tuple[str, dict[str, Any]], loop_kind: str
) -> None:
    name, options = kind
    breaks, _, ordinary = jobs(name)
    reports = Reports(loop_kind)
    with LoopExecutor(
        max_workers=1, key=lambda host: host, max_per_key=1, loop_factory=reports.loop,
        **options,
    ) as exe:
        assert exe.submit(breaks, Host("a")).result(WAIT) == "ok"
        # The one slot was given back, and the next job, of another key, gets it.
        assert exe.submit(ordinary, Host("b")).result(WAIT) == "b"
    assert reports.seen() == [(MESSAGE, repr(ValueError("hash broke")))]
    # The key's room stays taken (documented): it counts as active.
    assert counts(exe.stats) == (2, 0, 0, 2, 0, 0, 1)


@KINDS
def test_a_failed_jobs_own_error_stands_and_its_keys_error_is_reported(
    kind: tuple[str, dict[str, Any]], loop_kind: str
) -> None:
    name, options = kind
    _, fails, ordinary = jobs(name)
    reports = Reports(loop_kind)
    with LoopExecutor(
        max_workers=1, key=lambda host: host, max_per_key=1, loop_factory=reports.loop,
        **options,
    ) as exe:
        error = exe.submit(fails, Host("a")).exception(WAIT)
        assert isinstance(error, OSError) and str(error) == "the job's own error"
        assert exe.submit(ordinary, Host("b")).result(WAIT) == "b"
    assert reports.seen() == [(MESSAGE, repr(ValueError("hash broke")))]
    assert counts(exe.stats) == (2, 0, 0, 1, 1, 0, 1)


@pytest.mark.parametrize("name", ["coroutine", "blocking"])
def test_a_retried_job_whose_key_broke_in_a_failed_attempt(name: str) -> None:
    """The key breaks in the first attempt; the job keeps its room while it pauses (no
    hash), and loses it as its second attempt ends."""
    attempts: list[Host] = []

    def attempt(host: Host) -> str:
        attempts.append(host)
        if len(attempts) == 1:
            host.broken = True
            raise OSError("try again")
        return "ok"

    async def attempt_async(host: Host) -> str:
        return attempt(host)

    reports = Reports()
    with LoopExecutor(
        max_workers=1, key=lambda host: host, max_per_key=1, loop_factory=reports.loop,
        retry=Retry(attempts=2, backoff=0.001, jitter=False),
    ) as exe:
        fn = attempt_async if name == "coroutine" else attempt
        assert exe.submit(fn, Host("a")).result(WAIT) == "ok"
        assert exe.submit(plain_blocking, Host("b")).result(WAIT) == "b"
    assert len(attempts) == 2
    assert reports.seen() == [(MESSAGE, repr(ValueError("hash broke")))]
    assert counts(exe.stats) == (2, 0, 0, 2, 0, 0, 1)
    assert exe.stats.retried == 1


@pytest.mark.parametrize("name", ["coroutine", "blocking"])
def test_a_job_whose_key_broke_cancelled_in_its_pause(name: str) -> None:
    """Its room is given back as it is cancelled between two attempts (or, if the
    cancel comes first, as it is cancelled rather than paused): lost there."""
    asked = threading.Event()

    def policy(attempt: int, exc: BaseException) -> float:
        asked.set()
        return 60.0  # a pause the cancel ends

    def fails(host: Host) -> str:
        host.broken = True
        raise OSError("try again")

    async def fails_async(host: Host) -> str:
        return fails(host)

    reports = Reports()
    with LoopExecutor(
        max_workers=1, key=lambda host: host, max_per_key=1, loop_factory=reports.loop,
        retry=policy,
    ) as exe:
        future = exe.submit(fails_async if name == "coroutine" else fails, Host("a"))
        assert asked.wait(WAIT)
        # Read on the loop, after the step that asked the policy: a blocking job pauses
        # in that step (PENDING again, which cancel() needs); a coroutine job's cancel()
        # reaches it in any case, its room then given back as its task ends.
        exe.stats  # noqa: B018
        assert future.cancel()
        assert exe.submit(plain_blocking, Host("b")).result(WAIT) == "b"
    assert reports.seen() == [(MESSAGE, repr(ValueError("hash broke")))]
    assert counts(exe.stats) == (2, 0, 0, 1, 0, 1, 1)


@KINDS
def test_a_job_waiting_in_the_lost_keys_line_is_cancelled_at_the_exit(
    kind: tuple[str, dict[str, Any]], loop_kind: str
) -> None:
    name, options = kind
    breaks, _, ordinary = jobs(name)
    reports = Reports(loop_kind)
    with LoopExecutor(
        max_workers=4, key=lambda host: host, max_per_key=1, loop_factory=reports.loop,
        **options,
    ) as exe:
        first = exe.submit(breaks, Host("a"))  # takes the key's room as it is submitted
        waiting = exe.submit(ordinary, Host("a"))  # so this one waits in the key's line
        assert first.result(WAIT) == "ok"
        assert exe.submit(ordinary, Host("b")).result(WAIT) == "b"  # other keys run on
        assert not waiting.done()  # its key's room is never given back (documented)
    # (Before: the loop stopped without it, and failed it: "... stopped unexpectedly".)
    assert waiting.cancelled()
    assert reports.seen() == [(MESSAGE, repr(ValueError("hash broke")))]
    assert counts(exe.stats) == (3, 0, 0, 2, 0, 1, 1)


def test_shutdown_without_waiting_cancels_a_job_waiting_in_the_lost_keys_line() -> None:
    reports = Reports()
    exe = LoopExecutor(
        max_workers=4, key=lambda host: host, max_per_key=1, loop_factory=reports.loop
    )
    try:
        first = exe.submit(breaks_its_key_blocking, Host("a"))
        waiting = exe.submit(plain_blocking, Host("a"))
        assert first.result(WAIT) == "ok"
    finally:
        exe.shutdown(wait=False)
    with pytest.raises(concurrent.futures.CancelledError):
        waiting.result(WAIT)
    exe.shutdown(wait=True)
    assert reports.seen() == [(MESSAGE, repr(ValueError("hash broke")))]


@pytest.mark.timeout(15)  # (before: the read never returned, nor the block's exit)
def test_stats_read_as_a_blocking_job_ends_count_its_broken_key_as_active() -> None:
    """A done callback runs in the worker thread, after the job's future is set and
    before its slot and its key's room are given back: ``stats`` then hashed the key,
    and the read (posted to the loop, which raised) never returned."""
    reports = Reports()
    seen: list[ExecutorStats] = []
    let_go = threading.Event()

    def breaks_its_key_when_let_go(host: Host) -> str:
        assert let_go.wait(WAIT)
        host.broken = True
        return "ok"

    with LoopExecutor(
        max_workers=1, key=lambda host: host, max_per_key=1, loop_factory=reports.loop
    ) as exe:
        future = exe.submit(breaks_its_key_when_let_go, Host("a"))
        future.add_done_callback(lambda _: seen.append(exe.stats))
        let_go.set()
        assert future.result(WAIT) == "ok"
    (stats,) = seen
    # Over, as its future says; its key active, as it stays (its room is lost).
    assert counts(stats) == (1, 0, 0, 1, 0, 0, 1)
    assert reports.seen() == [(MESSAGE, repr(ValueError("hash broke")))]


def test_the_default_exception_handler_logs_the_keys_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="asyncio"), LoopExecutor(
        max_workers=1, key=lambda host: host, max_per_key=1
    ) as exe:
        assert exe.submit(breaks_its_key_blocking, Host("a")).result(WAIT) == "ok"
    (record,) = [r for r in caplog.records if r.name == "asyncio"]
    assert record.getMessage().startswith(MESSAGE)
    assert record.exc_info is not None and repr(record.exc_info[1]) == repr(
        ValueError("hash broke")
    )

