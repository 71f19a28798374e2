"""Per-key limits on LoopExecutor (``key=``, ``max_per_key=``), for both kinds of job.

The bridge holds the slots of coroutine jobs (on its loop) and blocking jobs (on worker
threads) itself, so the per-key limits must hold across both kinds. Jobs park on events
the test sets; every wait is bounded; nothing depends on time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Hashable
from typing import Any

import pytest

from coroexecutor import LoopExecutor, Retry

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # seconds: a bound on every wait, never reached when all is well


class Park:
    """Jobs of both kinds that wait for the test, counting what runs per key."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.running: dict[Hashable, int] = {}
        self.peak: dict[Hashable, int] = {}
        self.total = self.peak_total = 0
        self.started: list[Any] = []
        self.gates: dict[Any, concurrent.futures.Future[None]] = {}

    def gate(self, name: Any) -> concurrent.futures.Future[None]:
        with self.lock:
            return self.gates.setdefault(name, concurrent.futures.Future())

    def enter(self, key: Hashable, name: Any) -> None:
        with self.lock:
            self.running[key] = self.running.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.running[key])
            self.total += 1
            self.peak_total = max(self.peak_total, self.total)
            self.started.append(name)
            self.lock.notify_all()

    def leave(self, key: Hashable) -> None:
        with self.lock:
            self.running[key] -= 1
            self.total -= 1

    def blocking(self, key: Hashable, name: Any) -> Any:
        self.enter(key, name)
        try:
            self.gate(name).result(WAIT)
        finally:
            self.leave(key)
        return name

    async def coroutine(self, key: Hashable, name: Any) -> Any:
        self.enter(key, name)
        try:
            await asyncio.wrap_future(self.gate(name))
        finally:
            self.leave(key)
        return name

    def wait_started(self, count: int) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.started) >= count, WAIT), self.started

    def finish(self, name: Any) -> None:
        gate = self.gate(name)
        try:
            gate.set_result(None)
        except concurrent.futures.InvalidStateError:
            pass  # its job was cancelled, which cancelled the gate it waited on


def first(key: Hashable, name: Any = None) -> Hashable:
    return key


def assert_no_key_state(exe: LoopExecutor) -> None:
    slots: Any = exe._handoff._slots
    assert slots.keys == {} and slots.tickets == {}
    line = slots.line
    assert (line._running, line._lines, line._limits) == ({}, {}, {})


def test_key_and_max_per_key_go_together_on_the_bridge() -> None:
    with pytest.raises(TypeError, match="key= needs max_per_key="):
        LoopExecutor(key=first)
    with pytest.raises(TypeError, match="max_per_key needs key="):
        LoopExecutor(max_per_key=1)
    with pytest.raises(ValueError, match="max_per_key must be greater than 0"):
        LoopExecutor(key=first, max_per_key=0)


def test_the_limits_hold_across_coroutine_and_blocking_jobs() -> None:
    park = Park()
    names = [(k, i) for i in range(6) for k in "abc"]
    with LoopExecutor(5, key=first, max_per_key=2) as exe:
        futures = []
        for n, (k, i) in enumerate(names):
            fn = park.blocking if n % 2 else park.coroutine
            futures.append(exe.submit(fn, k, (k, i)))
        park.wait_started(5)
        with park.lock:
            assert park.total == 5 and all(n <= 2 for n in park.running.values())
        stats = exe.stats
        assert stats.running == 5 and stats.queued == 13 and stats.active_keys == 3
        done = 0
        while done < len(names):
            with park.lock:
                started = list(park.started)
            for name in started:
                park.finish(name)
            done = len(started)
            if done < len(names):
                park.wait_started(done + 1)
        assert [f.result(WAIT) for f in futures] == names
    assert max(park.peak.values()) == 2 and park.peak_total == 5
    assert_no_key_state(exe)


def test_a_full_key_does_not_hold_back_another_key_on_the_bridge() -> None:
    park = Park()
    with LoopExecutor(4, key=first, max_per_key=1) as exe:
        a = [exe.submit(park.blocking, "a", ("a", i)) for i in range(3)]
        park.wait_started(1)
        b = exe.submit(park.coroutine, "b", ("b", 0))
        park.wait_started(2)  # started while two jobs of "a" wait
        assert park.started == [("a", 0), ("b", 0)]
        assert exe.stats.busiest_key == ("a", 2)
        for i in range(3):
            park.finish(("a", i))
            if i < 2:
                park.wait_started(3 + i)
        park.finish(("b", 0))
        concurrent.futures.wait([*a, b], WAIT)
    assert park.started[2:] == [("a", 1), ("a", 2)]  # FIFO within "a"
    assert_no_key_state(exe)


def test_a_job_cancelled_while_it_waits_for_its_key_leaves_no_state() -> None:
    park = Park()
    with LoopExecutor(4, key=first, max_per_key=1) as exe:
        a0 = exe.submit(park.blocking, "a", "a0")
        a1 = exe.submit(park.coroutine, "a", "a1")
        park.wait_started(1)
        assert a1.cancel()
        stats = exe.stats
        assert stats.cancelled == 1 and stats.queued == 0 and stats.busiest_key is None
        park.finish("a0")
        assert a0.result(WAIT) == "a0"
    assert park.started == ["a0"]
    assert_no_key_state(exe)


def test_shutdown_cancel_futures_cancels_the_jobs_waiting_in_key_lines() -> None:
    park = Park()
    exe = LoopExecutor(4, key=first, max_per_key=1)
    a0 = exe.submit(park.blocking, "a", "a0")
    waiting = [exe.submit(park.coroutine, "a", f"a{i}") for i in range(1, 4)]
    park.wait_started(1)
    exe.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in waiting)
    park.finish("a0")
    exe.shutdown(wait=True)
    assert a0.result(0) == "a0" and park.started == ["a0"]
    assert_no_key_state(exe)


class KeyProblem(Exception):
    pass


def test_errors_of_key_and_max_per_key_go_to_the_caller_of_submit() -> None:
    def key(k: Any, name: Any = None) -> Any:
        if k == "bad":
            raise KeyProblem
        return k

    def limit(k: Hashable) -> Any:
        if k == "boom":
            raise KeyProblem
        return {"zero": 0, "text": "2"}.get(str(k), 1)

    park = Park()
    with LoopExecutor(4, key=key, max_per_key=limit) as exe:
        with pytest.raises(KeyProblem):
            exe.submit(park.blocking, "bad")
        with pytest.raises(TypeError, match="key\\(\\) must return a hashable"):
            exe.submit(park.blocking, ["a", "list"])
        with pytest.raises(ValueError, match="greater than 0"):
            exe.submit(park.blocking, "zero")
        with pytest.raises(TypeError, match="must return an int"):
            exe.submit(park.blocking, "text")
        with pytest.raises(KeyProblem):
            exe.submit(park.blocking, "boom")
        ok = exe.submit(park.blocking, "ok", "ok")
        park.finish("ok")
        assert ok.result(WAIT) == "ok"
        assert exe.stats.submitted == 1
    assert_no_key_state(exe)


def test_key_and_max_per_key_may_use_the_executor_they_run_outside_its_lock() -> None:
    # docs/bridge.rst, "Keys and the bridge's lock": key() and a callable max_per_key run
    # before the job touches any count, holding no lock of the bridge, so they may read
    # stats and submit jobs (what the key they return may not do in its __hash__).
    seen: list[tuple[str, int]] = []
    inner: list[concurrent.futures.Future[Any]] = []

    def key(k: str, name: Any = None) -> str:
        seen.append(("key", exe.stats.submitted))
        if k == "outer":
            inner.append(exe.submit(park.blocking, "inner", "from key()"))
        return k

    def limit(k: Hashable) -> int:
        seen.append(("max_per_key", exe.stats.submitted))
        return 1

    park = Park()
    with LoopExecutor(4, key=key, max_per_key=limit) as exe:
        outer = exe.submit(park.blocking, "outer", "outer")
        for name in ("from key()", "outer"):
            park.finish(name)
        assert outer.result(WAIT) == "outer" and inner[0].result(WAIT) == "from key()"
    # The inner job, submitted from the outer one's key(), was accepted first.
    assert seen == [("key", 0), ("key", 0), ("max_per_key", 0), ("max_per_key", 1)]
    assert_no_key_state(exe)


def test_many_threads_submitting_keep_every_key_within_its_limit() -> None:
    def job(n: int) -> int:
        park.enter(n % 5, n)
        park.leave(n % 5)
        return n

    park = Park()
    with LoopExecutor(8, key=lambda k: k % 5, max_per_key=2) as exe:

        def producer(start: int) -> list[concurrent.futures.Future[int]]:
            return [exe.submit(job, start + i) for i in range(200)]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            batches = list(pool.map(producer, range(0, 800, 200)))
        results = sorted(f.result(WAIT) for batch in batches for f in batch)
    assert results == list(range(800))
    assert max(park.peak.values()) <= 2 and park.peak_total <= 8
    assert exe.stats.succeeded == 800 and exe.stats.active_keys == 0
    assert_no_key_state(exe)


#
# key= with retry= (found by a docs-only tester: retried jobs stalled, and a job cancelled
# in its pause kept its key full for ever)
#


class FailOnce:
    """Each input fails its first attempt, then returns itself; counts running per key."""

    def __init__(self, keys: int) -> None:
        self.keys = keys
        self.lock = threading.Lock()
        self.tries: dict[int, int] = {}
        self.running: dict[int, int] = {}
        self.peak = 0

    def attempt(self, i: int) -> int:
        with self.lock:
            self.tries[i] = self.tries.get(i, 0) + 1
            first = self.tries[i] == 1
            key = i % self.keys
            self.running[key] = self.running.get(key, 0) + 1
            self.peak = max(self.peak, self.running[key])
        try:
            if first:
                raise ConnectionResetError(i)
            return i
        finally:
            with self.lock:
                self.running[i % self.keys] -= 1

    async def coroutine(self, i: int) -> int:
        await asyncio.sleep(0)
        return self.attempt(i)


@pytest.mark.parametrize("kind", ["coroutine", "blocking"])
@pytest.mark.parametrize(("n", "keys", "workers"), [(4, 2, 1), (60, 4, 3)])
def test_retried_keyed_jobs_all_finish(kind: str, n: int, keys: int, workers: int) -> None:
    # A retried job waits for a slot after its pause in the plain backlog (it holds its
    # key's room already): the keyed slots never served that backlog, so it stalled with
    # a slot free, and every later job of its key with it.
    jobs = FailOnce(keys)
    fn = jobs.coroutine if kind == "coroutine" else jobs.attempt
    with LoopExecutor(
        max_workers=workers, key=lambda i: i % keys, max_per_key=1,
        retry=Retry(attempts=2, backoff=0.001, jitter=False),
    ) as exe:
        futures = [exe.submit(fn, i) for i in range(n)]
        pending = concurrent.futures.wait(futures, timeout=WAIT).not_done
        assert not pending, exe.stats
    assert [f.result() for f in futures] == list(range(n))
    assert jobs.peak == 1  # max_per_key held across attempts
    stats = exe.stats
    assert (stats.succeeded, stats.retried, stats.active_keys) == (n, n, 0)


@pytest.mark.parametrize("how", ["future.cancel()", "shutdown(cancel_futures=True)"])
def test_a_job_cancelled_in_its_pause_gives_its_key_room_back(how: str) -> None:
    paused = threading.Event()

    def an_hour(attempt: int, exc: BaseException) -> float:
        paused.set()  # asked on the loop thread just before the pause starts
        return 3600.0

    async def flaky() -> None:
        raise ConnectionResetError("transient")

    async def ok(i: int) -> int:
        return i

    exe = LoopExecutor(max_workers=4, key=lambda *args: "host", max_per_key=1, retry=an_hour)
    try:
        future = exe.submit(flaky)
        assert paused.wait(WAIT)
        for _ in range(int(WAIT / 0.01)):  # the pause starts just after the policy's answer
            if exe.stats.retried == 1:
                break
            threading.Event().wait(0.01)
        if how == "future.cancel()":
            assert future.cancel()
            assert exe.submit(ok, 1).result(WAIT) == 1  # the key's room came back
            assert exe.stats.active_keys == 0
        else:
            exe.shutdown(wait=True, cancel_futures=True)
            assert future.cancelled()
            assert exe.stats.active_keys == 0
    finally:
        exe.shutdown(wait=True, cancel_futures=True)
    assert exe.stats.cancelled == 1


def test_a_retry_cancelled_while_it_waits_for_a_slot_gives_its_key_room_back() -> None:
    # One slot: input "a" fails, pauses briefly, then waits for the slot that "b" holds.
    # Cancelled there, its key's room must come back for the next job of key "a".
    release_b = threading.Event()
    tries: list[str] = []

    async def job(name: str) -> str:
        tries.append(name)
        if name == "b":
            await asyncio.get_running_loop().run_in_executor(None, release_b.wait, WAIT)
        elif tries.count(name) == 1 and name == "a":
            raise ConnectionResetError(name)
        return name

    with LoopExecutor(
        max_workers=1, key=lambda name: name[0], max_per_key=1,
        retry=Retry(attempts=2, backoff=0.001, jitter=False),
    ) as exe:
        first = exe.submit(job, "a")
        b = exe.submit(job, "b")
        # No event says when "a" waits for the slot "b" holds after its pause (retried=1,
        # queued=1): poll the counts, a bounded number of times.
        for _ in range(int(WAIT / 0.01)):
            if exe.stats.retried == 1 and exe.stats.queued == 1:
                break
            threading.Event().wait(0.01)
        else:
            raise AssertionError(f"never waited for the slot: {exe.stats}")
        assert first.cancel()
        again = exe.submit(job, "a2")  # key "a": waits for the slot only
        release_b.set()
        assert b.result(WAIT) == "b" and again.result(WAIT) == "a2"
    assert exe.stats.active_keys == 0


@pytest.mark.parametrize("kind", ["coroutine", "blocking"])
def test_closing_a_keyed_map_in_a_pause_starts_nothing(kind: str) -> None:
    # Input 0 fails and pauses, holding its key's room; input 1 waits for that room.
    # Closing the map cancelled input 0 first, whose room went at once to input 1, which
    # started (a blocking call cannot be cancelled once running) before its own cancel.
    paused = threading.Event()
    starts: list[int] = []

    def an_hour(attempt: int, exc: BaseException) -> float:
        paused.set()
        return 3600.0

    def blocking(n: int) -> int:
        starts.append(n)
        raise ConnectionResetError(n)

    async def coroutine(n: int) -> int:
        return blocking(n)

    fn = coroutine if kind == "coroutine" else blocking
    with LoopExecutor(max_workers=2, key=lambda n: "host", max_per_key=1, retry=an_hour) as exe:
        results = exe.map(fn, [0, 1])
        assert paused.wait(WAIT)
        results.close()  # type: ignore[attr-defined]  # (a generator's close, documented)
    assert starts == [0]
    stats = exe.stats
    assert (stats.cancelled, stats.active_keys) == (2, 0)
