"""ThreadedLoopExecutor: a failing initializer is logged once, at CRITICAL, on the
``concurrent.futures`` logger, as ThreadPoolExecutor's workers log it
("Exception in initializer:", with the traceback). Before, it broke the executor without
a word: a program that submitted nothing more never learnt of it. An initializer that a
shutdown cancels has not failed and is not logged. (The same record from both executors:
test_bridge_contract.py.)
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from coroexecutor import BrokenLoopExecutor, LoopExecutor
from tests._parked import Parked

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure

pytestmark = pytest.mark.timeout(30)


def _initializer_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record for record in caplog.records
        if record.name == "concurrent.futures" and "initializer" in record.getMessage()
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_failing_initializer_is_logged_though_nothing_is_submitted(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    error = OSError("no config")

    def sync_init() -> None:
        raise error

    async def async_init() -> None:
        await asyncio.sleep(0)
        raise error

    exe = LoopExecutor(initializer=sync_init if kind == "sync" else async_init)
    exe.shutdown(wait=True)  # the loop thread has ended: its record is in
    [record] = _initializer_records(caplog)
    assert (record.levelno, record.getMessage()) == (logging.CRITICAL, "Exception in initializer:")
    assert record.exc_info is not None and record.exc_info[1] is error
    assert record.threadName != threading.current_thread().name  # the loop thread's


def test_the_failure_is_logged_once_however_many_jobs_it_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    def slow_bad_init() -> None:
        assert release.wait(WAIT)
        raise ValueError("bad")

    exe = LoopExecutor(initializer=slow_bad_init)
    pending = [exe.submit(asyncio.sleep, 0) for _ in range(3)]  # they wait for it
    release.set()
    for future in pending:
        with pytest.raises(BrokenLoopExecutor):
            future.result(timeout=WAIT)
    with pytest.raises(BrokenLoopExecutor):
        exe.submit(asyncio.sleep, 0)
    exe.shutdown(wait=True)
    assert len(_initializer_records(caplog)) == 1


@pytest.mark.parametrize("how", ["grace period", "with exit"])
def test_an_initializer_cancelled_by_a_shutdown_is_not_logged(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    init = Parked()
    if how == "grace period":
        exe = LoopExecutor(initializer=init)
        assert init.started.wait(WAIT)
        exe.shutdown(wait=False, timeout=0.01)
        assert init.cancelled.wait(WAIT)
        exe.shutdown()
    else:
        with pytest.raises(KeyboardInterrupt), LoopExecutor(initializer=init):
            assert init.started.wait(WAIT)
            raise KeyboardInterrupt  # as Ctrl-C would
        assert init.cancelled.is_set()
    assert _initializer_records(caplog) == []


def test_an_error_an_initializer_answers_its_cancel_with_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # That error breaks the executor (bridge.rst, "A failing initializer"): a failure.
    started = threading.Event()
    error = RuntimeError("could not close the half-open connection")

    async def init() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise error from None

    with pytest.raises(KeyError), LoopExecutor(initializer=init):
        assert started.wait(WAIT)
        raise KeyError("leaving by an exception cancels the initializer")
    [record] = _initializer_records(caplog)
    assert record.exc_info is not None and record.exc_info[1] is error
