"""Retries on LoopExecutor: blocking and coroutine jobs, slots, cancellation, map.

The bridge runs a real loop in its own thread, so these tests order events with
threading.Event handshakes, and use backoffs that are either 0 or far longer than the
test (60 s): a job whose backoff must end early is cancelled, one that must retry at
once gets 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
from typing import Any

import pytest

from coroexecutor import LoopExecutor, Retry

pytestmark = pytest.mark.timeout(15)

AT_ONCE = Retry(attempts=3, backoff=0, max_backoff=0, jitter=False)


class Flaky:
    """A callable that fails its first ``failures`` calls with OSError; records threads."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.threads: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, value: Any = "ok") -> Any:
        with self.lock:
            self.threads.append(threading.current_thread().name)
            attempt = len(self.threads)
        if attempt <= self.failures:
            raise OSError(f"attempt {attempt}")
        return value


class AsyncFlaky(Flaky):
    async def __call__(self, value: Any = "ok") -> Any:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().__call__(value)


class LongBackoff:
    """A policy: the first failure waits 60 s (the test ends it), later ones retry at once.
    Sets ``backing_off`` (a threading.Event) when it has chosen the long wait."""

    def __init__(self) -> None:
        self.backing_off = threading.Event()
        self.calls = 0

    def __call__(self, attempt: int, exc: BaseException) -> float | None:
        self.calls += 1
        if attempt == 1:
            self.backing_off.set()
            return 60.0
        return 0.0


def test_a_blocking_job_is_retried_on_a_worker_thread() -> None:
    flaky = Flaky(failures=2)
    with LoopExecutor(max_workers=2, thread_name_prefix="rt", retry=AT_ONCE) as exe:
        assert exe.submit(flaky, 7).result(timeout=5) == 7
        assert exe.stats.retried == 2
    assert len(flaky.threads) == 3
    assert all(re.fullmatch(r"rt_worker_\d+", name) for name in flaky.threads), flaky.threads


def test_a_coroutine_job_is_retried_on_the_loop() -> None:
    flaky = AsyncFlaky(failures=2)
    with LoopExecutor(max_workers=2, thread_name_prefix="rt", retry=AT_ONCE) as exe:
        assert exe.submit(flaky, 7).result(timeout=5) == 7
    assert flaky.threads == ["rt_loop"] * 3


@pytest.mark.parametrize("kind", [Flaky, AsyncFlaky], ids=["blocking", "coroutine"])
def test_giving_up_fails_the_future_with_the_last_error(kind: type[Flaky]) -> None:
    flaky = kind(failures=5)
    with LoopExecutor(max_workers=1, retry=AT_ONCE) as exe:
        error = exe.submit(flaky).exception(timeout=5)
    assert isinstance(error, OSError) and str(error) == "attempt 3"
    name = type(flaky).__qualname__
    assert error.__notes__ == [f"coroexecutor: job {name}() failed after 3 attempts"]


@pytest.mark.parametrize("kind", [Flaky, AsyncFlaky], ids=["blocking", "coroutine"])
def test_the_slot_is_free_during_a_backoff(kind: type[Flaky]) -> None:
    policy = LongBackoff()
    flaky = kind(failures=1)
    exe = LoopExecutor(max_workers=1, retry=policy)
    try:
        sleeping = exe.submit(flaky)
        assert policy.backing_off.wait(5)
        # The one slot is free: another job runs while the first one waits 60 s.
        assert exe.submit(Flaky(failures=0), "other").result(timeout=5) == "other"
        assert len(flaky.threads) == 1 and not sleeping.done()
        assert exe.stats.running == 0 and exe.stats.queued == 1
    finally:
        exe.shutdown(wait=True, cancel_futures=True)  # ends the backoff at once
    assert sleeping.cancelled() and len(flaky.threads) == 1


def test_cancelling_a_coroutine_jobs_future_ends_its_backoff() -> None:
    policy = LongBackoff()
    flaky = AsyncFlaky(failures=1)
    with LoopExecutor(max_workers=1, retry=policy) as exe:
        future = exe.submit(flaky)
        assert policy.backing_off.wait(5)
        assert future.cancel()
    assert future.cancelled() and len(flaky.threads) == 1


def test_leaving_the_with_block_by_an_error_ends_a_backoff() -> None:
    policy = LongBackoff()
    flaky = Flaky(failures=1)
    with pytest.raises(KeyError), LoopExecutor(max_workers=1, retry=policy) as exe:
        future = exe.submit(flaky)
        assert policy.backing_off.wait(5)
        raise KeyError("body")
    assert future.cancelled() and len(flaky.threads) == 1


@pytest.mark.parametrize("kind", [Flaky, AsyncFlaky], ids=["blocking", "coroutine"])
def test_map_yields_in_order_and_names_the_input_that_gave_up(kind: type[Flaky]) -> None:
    flakies = [kind(failures=n) for n in (0, 2, 1, 9, 0)]

    def call(index: int) -> Any:
        return flakies[index](index)

    async def acall(index: int) -> Any:
        return await flakies[index](index)  # type: ignore[misc]

    fn = call if kind is Flaky else acall
    with LoopExecutor(max_workers=2, retry=AT_ONCE) as exe:
        results = exe.map(fn, range(5), timeout=5)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(OSError) as info:
            next(results)
    assert str(info.value) == "attempt 3"
    assert info.value.__notes__ == [
        f"coroexecutor: job {fn.__name__}(3) failed after 3 attempts (map input #3)"
    ]


def test_the_bridge_refuses_a_bad_retry_at_once() -> None:
    with pytest.raises(TypeError, match="retry must be a Retry, a callable policy"):
        LoopExecutor(retry=3)  # type: ignore[arg-type]


def test_without_retry_a_blocking_error_is_not_retried() -> None:
    flaky = Flaky(failures=1)
    with LoopExecutor(max_workers=1) as exe:
        future = exe.submit(flaky)
        assert isinstance(future.exception(timeout=5), OSError)
        assert exe.stats.retried == 0
    assert len(flaky.threads) == 1
    concurrent.futures.wait([future])
