"""ThreadedLoopExecutor lifecycle: async with, forgotten executors, exit, fork, leaks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import subprocess
import sys
import textwrap
import threading
import warnings
import weakref

import pytest

from coroexecutor import ThreadedLoopExecutor

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ThreadedLoopExecutor-")]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONDEVMODE="1")
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def test_async_with_does_not_block_the_callers_loop() -> None:
    release = threading.Event()
    ticks = 0

    def blocking_job() -> str:
        assert release.wait(WAIT)
        return "done"

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            if ticks == 5:
                release.set()  # only a running caller loop can get here
            await asyncio.sleep(0.001)

    tick_task = asyncio.create_task(ticker())
    async with ThreadedLoopExecutor(max_workers=2) as exe:
        future = exe.submit(blocking_job)
        assert await asyncio.wrap_future(exe.submit(double, 4)) == 8
    tick_task.cancel()
    await asyncio.gather(tick_task, return_exceptions=True)
    assert future.result(timeout=0) == "done"
    assert ticks >= 5


async def test_async_with_cancels_jobs_when_the_block_raises() -> None:
    started = threading.Event()
    futures: list[concurrent.futures.Future[None]] = []

    async def park() -> None:
        started.set()
        await asyncio.Event().wait()

    async def failing_block() -> None:
        async with ThreadedLoopExecutor() as exe:
            futures.append(exe.submit(park))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, WAIT)
            raise ValueError("body")

    with pytest.raises(ValueError, match="body"):
        await failing_block()
    assert futures[0].cancelled()


async def test_run_in_executor_from_another_loop() -> None:
    loop = asyncio.get_running_loop()
    with ThreadedLoopExecutor(max_workers=2) as exe:
        assert await loop.run_in_executor(exe, pow, 2, 10) == 1024
        results = await asyncio.gather(*(loop.run_in_executor(exe, abs, -i) for i in range(10)))
    assert results == list(range(10))


async def test_wrap_future_on_its_futures() -> None:
    with ThreadedLoopExecutor() as exe:
        assert await asyncio.wrap_future(exe.submit(double, 21)) == 42
        started = threading.Event()

        async def park() -> None:
            started.set()
            await asyncio.Event().wait()

        future = exe.submit(park)
        waiter = asyncio.wrap_future(future)
        await asyncio.get_running_loop().run_in_executor(None, started.wait, WAIT)
        waiter.cancel()  # cancelling the asyncio side cancels the job
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # asyncio cancels the job's future from a callback, a loop turn later: keep the
        # caller's loop running while waiting for that.
        await asyncio.get_running_loop().run_in_executor(
            None, concurrent.futures.wait, [future], WAIT
        )
        assert future.cancelled()


def test_wait_and_as_completed_on_mixed_jobs() -> None:
    with ThreadedLoopExecutor(max_workers=4) as exe:
        futures = [exe.submit(double, i) for i in range(10)] + [
            exe.submit(abs, -i) for i in range(10)
        ]
        _done, not_done = concurrent.futures.wait(futures, timeout=WAIT)
        assert not not_done
        first = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
        assert first.done
        assert sorted(
            f.result() for f in concurrent.futures.as_completed(futures, timeout=WAIT)
        ) == sorted([2 * i for i in range(10)] + list(range(10)))


def test_cancel_futures_notifies_waiters_in_wait() -> None:
    started = threading.Event()
    release = threading.Event()

    async def park() -> None:
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.001)

    exe = ThreadedLoopExecutor(max_workers=1)
    running = exe.submit(park)
    assert started.wait(WAIT)
    queued = [exe.submit(double, i) for i in range(5)]
    waiting = concurrent.futures.ThreadPoolExecutor(1)
    try:
        # A thread already blocked in wait() must be woken by the cancellations.
        all_done = waiting.submit(concurrent.futures.wait, queued, WAIT)
        exe.shutdown(wait=False, cancel_futures=True)
        done, not_done = all_done.result(timeout=WAIT)
        assert not not_done
        assert all(f.cancelled() for f in done)
    finally:
        release.set()
        exe.shutdown(wait=True)
        waiting.shutdown()
    assert running.result(timeout=0) is None


def test_garbage_collected_executor_stops_its_thread() -> None:
    exe = ThreadedLoopExecutor()
    assert exe.submit(double, 1).result(timeout=WAIT) == 2
    ref = weakref.ref(exe)
    threads = bridge_threads()
    assert threads
    del exe
    gc.collect()
    assert ref() is None
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


def test_forgotten_future_does_not_keep_the_executor() -> None:
    exe = ThreadedLoopExecutor()
    future = exe.submit(double, 3)
    ref = weakref.ref(exe)
    results = exe.map(double, range(3), buffersize=1)
    del exe
    gc.collect()
    assert ref() is None
    assert future.result(timeout=WAIT) == 6
    del results


def test_interpreter_exit_finishes_jobs_of_a_forgotten_executor() -> None:
    proc = run_python(
        """
        import asyncio, os, time
        from coroexecutor import ThreadedLoopExecutor

        def say(line):
            os.write(1, line.encode() + b"\\n")  # one write: threads do not interleave

        async def slow(x):
            await asyncio.sleep(0.05)
            say(f"coroutine {x}")

        def blocking(x):
            time.sleep(0.05)
            say(f"blocking {x}")

        exe = ThreadedLoopExecutor(max_workers=2)
        exe.submit(slow, 1)
        exe.submit(blocking, 2)
        exe.submit(slow, 3)
        say("main done")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "main done"
    assert sorted(proc.stdout.splitlines()[1:]) == ["blocking 2", "coroutine 1", "coroutine 3"]
    assert proc.stderr == ""  # no "Task was destroyed", no "never awaited"


def test_interpreter_exit_with_jobs_still_waiting_does_not_hang() -> None:
    # With an initializer, every job still waits when the main thread ends; and with
    # one slot, the blocking job needs a thread only once the coroutine job is done.
    # Python 3.12+ refuses to start threads by then: that job fails, nothing hangs.
    proc = run_python(
        """
        import asyncio, os
        from coroexecutor import ThreadedLoopExecutor

        def say(line):
            os.write(1, line.encode() + b"\\n")

        async def init():
            await asyncio.sleep(0.05)

        async def slow(x):
            await asyncio.sleep(0.01)
            say(f"coroutine {x}")

        exe = ThreadedLoopExecutor(max_workers=1, initializer=init)
        exe.submit(slow, 1)
        exe.submit(say, "blocking 2")
        exe.submit(slow, 3)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines in (["coroutine 1", "blocking 2", "coroutine 3"], ["coroutine 1", "coroutine 3"])


def test_submit_during_interpreter_exit_is_refused_cleanly() -> None:
    proc = run_python(
        """
        import atexit
        from coroexecutor import ThreadedLoopExecutor

        exe = ThreadedLoopExecutor()
        def late():
            try:
                exe.submit(abs, -1)
            except RuntimeError as exc:
                print(exc, flush=True)
        atexit.register(late)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == "cannot schedule new futures after interpreter shutdown\n"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
def test_fork_child_gets_a_clear_error_not_a_hang() -> None:
    with ThreadedLoopExecutor() as exe:
        assert exe.submit(double, 1).result(timeout=WAIT) == 2
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            # 3.12+: "This process is multi-threaded, use of fork() may lead to deadlocks"
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report and leave at once, whatever happens
            message = b"no error"
            try:
                exe.submit(double, 2)
            except RuntimeError as exc:
                message = str(exc).encode()
            except BaseException as exc:  # pragma: no cover - reported to the parent
                message = repr(exc).encode()
            try:
                exe.shutdown(wait=True)  # must not hang on the parent's thread
            except BaseException as exc:  # pragma: no cover - reported to the parent
                message = repr(exc).encode()
            os.write(write_end, message)
            os._exit(0)
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as reader:
            report = reader.read().decode()
        assert os.WIFEXITED(status)
        assert os.WEXITSTATUS(status) == 0
        assert "after os.fork()" in report
        assert "create a new executor in the child" in report
        assert exe.submit(double, 3).result(timeout=WAIT) == 6  # the parent is unaffected


def test_hundreds_of_cycles_leak_no_threads_or_fds() -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0

    before_threads = threading.active_count()
    for _ in range(20):  # warm-up: lazily created module state
        with ThreadedLoopExecutor(max_workers=2) as exe:
            exe.submit(double, 1).result(WAIT)
            exe.submit(abs, -1).result(WAIT)
    before_fds = open_fds()
    for i in range(300):
        exe = ThreadedLoopExecutor(max_workers=2)
        exe.submit(double, i).result(WAIT)
        exe.submit(abs, -i).result(WAIT)
        exe.shutdown(wait=True)
    gc.collect()
    assert threading.active_count() == before_threads
    assert open_fds() <= before_fds
