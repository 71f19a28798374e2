"""ThreadedLoopExecutor edge cases between threads: the deadlock guard, references held
by map, cancel racing a job's start, and stats racing the loop's stop."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Optional

import pytest

from coroexecutor import ThreadedLoopExecutor

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure


def _in_new_thread(fn: Callable[[], Any]) -> tuple[int, Optional[BaseException]]:
    """Run fn() in a new thread; return that thread's ident and what fn raised."""
    outcome: list[Any] = [None, None]

    def body() -> None:
        outcome[0] = threading.get_ident()
        try:
            fn()
        except BaseException as exc:  # reported to the caller, which asserts on it
            outcome[1] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    return outcome[0], outcome[1]


#
# The deadlock guard
#


async def _ident() -> int:
    return threading.get_ident()


def test_guard_ignores_a_new_thread_with_the_ended_loop_threads_ident() -> None:
    exe = ThreadedLoopExecutor()
    loop_ident = exe.submit(_ident).result(timeout=WAIT)
    exe.submit(abs, -1).result(timeout=WAIT)  # a worker thread exists, and ends, too
    exe.shutdown(wait=True)
    refused: list[BaseException] = []
    reused = 0
    for _ in range(1000):
        ident, error = _in_new_thread(lambda: exe.shutdown(wait=True))
        reused += ident == loop_ident
        if error is not None:
            refused.append(error)
    assert refused == []
    if not reused:  # pragma: no cover - depends on the platform's thread library
        pytest.skip("no new thread was given the ended loop thread's ident")


def test_guard_ignores_a_new_thread_with_an_ended_workers_ident() -> None:
    with ThreadedLoopExecutor(max_workers=1) as exe:
        worker_ident = exe.submit(threading.get_ident).result(timeout=WAIT)
        # End the only worker while the pool still lists it, with the pool's own stop
        # signal: a stale entry, as a worker that died would leave.
        pool = exe._bridge._pool
        (worker,) = pool._threads
        pool._jobs.put(None)
        worker.join(WAIT)
        assert not worker.is_alive()
        for _ in range(1000):
            ident, error = _in_new_thread(
                lambda: threading.get_ident() == worker_ident and exe.shutdown(wait=True)
            )
            if ident == worker_ident:
                assert error is None
                break
        else:  # pragma: no cover - depends on the platform's thread library
            pytest.skip("no new thread was given the ended worker's ident")


#
# map holds no result the consumer has dropped
#


class _Payload:
    """A result that can be weakly referenced."""


@pytest.mark.parametrize("buffersize", [None, 2])
@pytest.mark.parametrize("kind", ["coroutine", "blocking"])
def test_map_keeps_no_reference_to_a_result_the_consumer_dropped(
    kind: str, buffersize: Optional[int]
) -> None:
    next_job_started, release = threading.Event(), threading.Event()

    def make(i: int) -> _Payload:
        if i == 1:
            # With one slot, this job starts only after the executor is done with job 0.
            next_job_started.set()
            assert release.wait(WAIT)  # blocks this thread (the loop's, for "coroutine")
        return _Payload()

    async def make_async(i: int) -> _Payload:
        return make(i)

    fn: Callable[[int], Any] = make_async if kind == "coroutine" else make
    with ThreadedLoopExecutor(max_workers=1) as exe:
        results = exe.map(fn, range(3), buffersize=buffersize)
        first = next(results)
        assert type(first) is _Payload
        dropped = weakref.ref(first)
        del first
        assert next_job_started.wait(WAIT)
        alive = dropped() is not None  # by reference counts alone: no gc.collect()
        release.set()
        assert [type(r) for r in results] == [_Payload, _Payload]
    assert not alive
