"""How chunks run on a DaskExecutor's worker and come back, on one in-process worker.

One worker, run in this process (``processes=False``), with ``per_worker=1``: one job runs
at a time and the others of every chunk wait for its slot in the worker's executor, so
a job that starts when it should not is seen. The jobs are functions of this module and
record what they do in its globals, which the worker shares with the test; every wait
on them is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any, Callable

import pytest

distributed = pytest.importorskip(
    "distributed", reason='dask.distributed is not installed (pip install "coroexecutor[dask]")'
)

import dask  # noqa: E402

from coroexecutor import Retry  # noqa: E402
from coroexecutor.distributed import DaskExecutor, _executor, _wire, _worker  # noqa: E402

_WAIT = 20.0  # seconds: the bound on every wait


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One in-process worker with one dask thread, for the module."""
    config = dask.config.set({"distributed.admin.low-level-log-length": 10})
    config.__enter__()
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
    )
    client = distributed.Client(cluster)
    # Start dask's helper threads (and the worker's task threads, which secede) now,
    # before any test's thread-leak check takes its snapshot.
    with DaskExecutor(client=client, per_worker=1) as exe:
        assert exe.submit(_record, 0).result(_WAIT) == 0
        assert list(exe.map(_record, range(3), chunksize=1)) == [0, 1, 2]
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        config.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """conftest's check, except for the worker's task threads: a chunk's task secedes
    from the worker's thread pool, which starts a thread in its place."""
    before = set(threading.enumerate())
    yield
    survivors = []
    for thread in threading.enumerate():
        if thread not in before and "-Dask-Default-Threads-" not in thread.name:
            thread.join(5)
            if thread.is_alive():
                survivors.append(thread)
    if survivors:
        pytest.fail(f"test left threads running: {survivors!r}")


@pytest.fixture(autouse=True)
def _clear_records() -> Iterator[None]:
    _started.clear()
    _released.clear()
    yield
    _released.set()  # (an input 0 left waiting by a failed test fails now)
    _may_end.set()  # (and a clean-up left waiting ends)


# Jobs (they run on the worker's loop, in this process)

_started: list[int] = []  # the inputs whose code ran, in order
_released = threading.Event()  # set by the test's thread: input 0 of _fail_on_0 may fail


async def _record(x: int) -> int:
    _started.append(x)
    return x


async def _park(x: int) -> int:
    _started.append(x)
    await asyncio.Event().wait()  # until cancelled
    return x


async def _until_released() -> None:
    """Wait until the test's thread says the inputs behind this one wait for its slot."""
    assert await asyncio.to_thread(_released.wait, _WAIT), f"not released in {_WAIT} s"


_may_end = threading.Event()  # set by the test: _slow_to_cancel's clean-up may end


async def _slow_to_cancel(x: int) -> int:
    _started.append(x)
    try:
        await asyncio.Event().wait()  # until cancelled
    except asyncio.CancelledError:
        await asyncio.to_thread(_may_end.wait, _WAIT)  # its clean-up
        raise
    return x


async def _fail_on_0(x: int) -> int:
    """Input 0 fails once the test says the inputs behind it wait for its slot."""
    _started.append(x)
    if x == 0:
        await _until_released()
        raise ValueError("boom")
    return x


async def _hold_0_and_1(x: int) -> int:
    """Inputs 0 and 1 end once the test says the inputs behind them wait for slots."""
    _started.append(x)
    if x < 2:
        await _until_released()
    return x


async def _fail_0_once(x: int) -> int:
    """Input 0's first attempt fails once the test says the inputs behind it wait."""
    _started.append(x)
    if x == 0 and _started.count(0) == 1:
        await _until_released()
        raise ValueError("once")
    return x


async def _fail_now(x: int) -> int:
    raise ValueError(f"job {x} failed")


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _WAIT
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not in {_WAIT} s (started: {_started})"
        time.sleep(0.001)


def _after_input_0_starts() -> Iterator[int]:
    """0, 1, 2, 3: the map sends input 1's chunk once input 0 has started (dask may run
    the chunks in flight in any order)."""
    yield 0
    _wait_for(lambda: _started == [0], "input 0 started")
    yield from range(1, 4)


def _chunk_by_chunk(
    exe: DaskExecutor, chunks: list[list[int]], first_started: list[int]
) -> Iterator[int]:
    """The inputs of ``chunks``, each chunk sent once the one before it is on the worker
    (and the first one's ``first_started`` inputs have started): dask may run the chunks
    in flight in any order, and the worker's loop gets them in the order they came."""
    yield from chunks[0]
    _wait_for(lambda: _started == first_started, f"inputs {first_started} started")
    for on_worker, chunk in enumerate(chunks[1:], start=2):
        yield from chunk
        if on_worker < len(chunks):
            _wait_for(lambda n=on_worker: _chunks_on_worker(exe) == n, f"{on_worker} chunks")


def _chunks_on_worker(exe: DaskExecutor) -> int:
    """How many chunks of ``exe`` run (or wait for slots) on the worker's loop now."""
    process_loop = _worker._LOOPS.get(exe._id)  # (the worker runs in this process)
    runs = {} if process_loop is None else dict(process_loop._runs)
    return sum(len(chunks) for chunks in runs.values())


#
# Cancelled jobs never start (brk15 F2)
#


@pytest.mark.timeout(60)
def test_shutdown_cancel_futures_starts_no_job_waiting_in_any_chunk(client: Any) -> None:
    # Found by a docs-only tester: shutdown(cancel_futures=True) said the waiting jobs'
    # futures were cancelled, yet their code ran. The workers heard of the cancel a map
    # (or a chunk of submitted jobs) at a time: cancelling input 0 freed the only slot,
    # and a job of the next chunk started before its own cancel came.
    exe = DaskExecutor(client=client, per_worker=1)
    first = exe.map(_park, [0, 1])
    _wait_for(lambda: _started == [0], "input 0 started")  # (dask may run chunks in any order)
    second = exe.map(_park, [10, 11])
    submitted = [exe.submit(_park, x) for x in (20, 21)]
    _wait_for(lambda: _chunks_on_worker(exe) == 3, "three chunks queued")
    exe.shutdown(wait=True, cancel_futures=True)
    assert _started == [0]
    assert all(future.cancelled() for future in submitted)
    for results in (first, second):
        with pytest.raises(concurrent.futures.CancelledError):
            next(results)


def test_a_ctrl_c_while_shutdown_cancels_the_tasks_of_submitted_jobs_leaves_no_future_pending(
    client: Any,
) -> None:
    # Found while fixing dclose F4: a second Ctrl-C that landed while the with block's
    # exit cancelled the dask tasks of submitted jobs (client.cancel waits for the
    # scheduler) left their futures pending for ever: their chunks were out of the
    # batcher's in-flight set already, and the closing found nothing more to cancel.
    # The Ctrl-C is stood in for by a KeyboardInterrupt from that cancel.
    # The job's clean-up ends after the interrupted shutdown: its outcome comes later.
    def interrupted(tasks: list[Any]) -> None:
        raise KeyboardInterrupt

    _may_end.clear()
    exe = DaskExecutor(client=client, per_worker=1)
    future = exe.submit(_slow_to_cancel, 0)
    _wait_for(lambda: _started == [0], "the job started")
    exe._batcher._cancel_tasks = interrupted  # type: ignore[method-assign]  # the Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        exe.shutdown(cancel_futures=True)
    _may_end.set()
    exe.shutdown()  # waits for the closing that the first one began
    assert future.cancelled()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["error", "retry declines", "job_timeout"])
def test_fail_fast_starts_no_later_job_waiting_for_the_failed_job_s_slot(
    client: Any, how: str
) -> None:
    # Found by a docs-only tester: "the first error cancels every later job of the map
    # at once, queued or running", yet input 1, queued behind input 0 in another chunk,
    # started as input 0 failed. The core hands the slot a job frees to the next job in
    # line in the job's own last step; the worker cancelled the map's later jobs only
    # in the failed job's done callback, after that.
    options: dict[str, Any] = {}
    if how == "retry declines":
        options["retry"] = Retry(attempts=2, on=KeyError)  # not for a ValueError
    fn = _fail_on_0
    if how == "job_timeout":
        options["job_timeout"] = 1.0  # (from its start: long enough for input 1 to queue)
        fn = _park
    with DaskExecutor(client=client, per_worker=1, **options) as exe:
        results = exe.map(fn, _after_input_0_starts(), chunksize=1)
        _wait_for(lambda: _chunks_on_worker(exe) == 2, "two chunks queued")
        _released.set()
        with pytest.raises(TimeoutError if how == "job_timeout" else ValueError):
            next(results)
    assert _started == [0]


#
# The jobs of a process's chunks start chunk by chunk, in the order the chunks came (brk31 F5)
#


@pytest.mark.timeout(60)
def test_a_process_starts_every_job_of_a_chunk_before_those_of_the_next(client: Any) -> None:
    # Found by a docs-only tester: "a worker process runs several chunks at once, one
    # after the other in its executor's FIFO order", yet the chunks in flight in a
    # process shared its slots: each chunk fed its jobs to the executor on its own,
    # per_worker at a time, so the jobs of chunks 1 and 2 waited in the executor's
    # backlog ahead of chunk 0's last job, and started first (0, 1, 3, 4, 6, 7, 2, 5, 8):
    # map's first results came back chunks late.
    with DaskExecutor(client=client, per_worker=2) as exe:
        chunks = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
        inputs = _chunk_by_chunk(exe, chunks, first_started=[0, 1])
        results = exe.map(_hold_0_and_1, inputs, chunksize=3, buffersize=9)
        _wait_for(lambda: _chunks_on_worker(exe) == 3, "three chunks queued")
        _released.set()
        assert list(results) == list(range(9))
    assert _started == list(range(9))


@pytest.mark.timeout(60)
def test_a_retried_job_starts_before_the_jobs_of_a_later_chunk(client: Any) -> None:
    # A job that pauses between attempts gives its slot back (to the next job of its own
    # chunk), and its next attempt goes ahead of the jobs never started: those of a
    # later chunk wait for both.
    with DaskExecutor(client=client, per_worker=1, retry=Retry(attempts=2, on=ValueError,
                      backoff=0, max_backoff=0, jitter=False)) as exe:
        inputs = _chunk_by_chunk(exe, [[0, 1], [2, 3]], first_started=[0])
        results = exe.map(_fail_0_once, inputs, chunksize=2)
        _wait_for(lambda: _chunks_on_worker(exe) == 2, "two chunks queued")
        _released.set()
        assert list(results) == [0, 1, 2, 3]
    assert sorted(_started[:3]) == [0, 0, 1] and _started[3:] == [2, 3]


@pytest.mark.timeout(60)
def test_a_cancelled_map_s_chunk_waiting_behind_another_map_s_comes_back_at_once(
    client: Any
) -> None:
    # The other side of chunk by chunk: a chunk none of whose jobs has started yet waits
    # behind the chunks that came before it; when its map is closed, its jobs are
    # reported cancelled there and then, not once the chunks ahead of it have started all
    # of theirs.
    with DaskExecutor(client=client, per_worker=1) as exe:
        ahead = exe.map(_park, [0, 1])
        _wait_for(lambda: _started == [0], "input 0 started")
        behind = exe.map(_park, [10, 11])
        _wait_for(lambda: _chunks_on_worker(exe) == 2, "two chunks queued")
        behind.close()
        _wait_for(lambda: _chunks_on_worker(exe) == 1, "the closed map's chunk back")
        ahead.close()
    assert _started == [0]


#
# A submitted job that cannot be pickled fails alone (brk25 F1)
#


def _unsent_message(*args: str) -> str:
    return (f"cannot send job _record({', '.join(args)}) to the workers: TypeError:"
            " cannot pickle '_thread.lock' object")


@pytest.mark.timeout(60)
def test_a_submitted_job_that_cannot_be_pickled_fails_alone_the_others_of_its_chunk_run(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # brk25 F1: jobs submitted within a few ms travel as one chunk, and one unpicklable
    # argument failed every job of it ("cannot send the jobs of inputs 0..3"), those of
    # other threads too, where "a job's error fails only its future" (distributed.rst).
    # One chunk of four: it leaves when the fourth job is submitted, never on the delay.
    monkeypatch.setattr(_executor, "_SUBMIT_DELAY", _WAIT)
    lock = threading.Lock()
    shown = repr(lock)
    with DaskExecutor(client=client, per_worker=1, chunksize=4) as exe:
        first, bad = exe.submit(_record, 1), exe.submit(_record, lock)  # type: ignore[arg-type]
        third = exe.submit(_record, 3)
        other = concurrent.futures.Future[concurrent.futures.Future[int]]()
        submitter = threading.Thread(target=lambda: other.set_result(exe.submit(_record, 4)))
        submitter.start()
        submitter.join(_WAIT)
        fourth = other.result(_WAIT)
        assert [f.result(_WAIT) for f in (first, third, fourth)] == [1, 3, 4]
        error = bad.exception(_WAIT)
        assert isinstance(error, TypeError)
        assert str(error) == _unsent_message(shown)
        assert isinstance(error.__cause__, TypeError)  # cloudpickle's own, for that job
        # A chunk of only such jobs: each fails with its own error, nothing is sent.
        bad_ones = [exe.submit(_record, lock, x) for x in range(4)]  # type: ignore[call-arg]
        for x, future in enumerate(bad_ones):
            assert str(future.exception(_WAIT)) == _unsent_message(shown, str(x))
    assert sorted(_started) == [1, 3, 4]


class _FailsFirstPickle:
    """Cannot be pickled the first time only: with the others of its chunk, not alone."""

    def __init__(self) -> None:
        self.pickled = 0

    def __reduce__(self) -> Any:
        self.pickled += 1
        if self.pickled == 1:
            raise TypeError("not this time")
        return (int, (0,))


def test_jobs_that_pickle_alone_but_not_together_all_get_the_chunk_s_error() -> None:
    # The rare way out of sendable_chunk: no job is at fault alone, so none can be sent
    # without the others, and every one fails with the chunk's error (as before brk25 F1).
    calls = [(_record, (1,), {}), (_record, (_FailsFirstPickle(),), {})]
    chunk, unsent = _wire.sendable_chunk(_wire.ChunkSpec("e", "m", 0, None, calls, True, False))
    assert chunk is None and sorted(unsent) == [0, 1]
    assert str(unsent[0]) == ("cannot send 2 jobs submitted together to the workers:"
                              " TypeError: not this time")
    assert unsent[1] is unsent[0]


#
# Submitted jobs come back as they end (brk15 F3)
#


@pytest.mark.timeout(60)
@pytest.mark.parametrize("quick", [_record, _fail_now])
def test_a_submitted_job_s_future_is_done_when_its_job_ends_not_when_its_chunk_does(
    client: Any, monkeypatch: pytest.MonkeyPatch, quick: Any
) -> None:
    # Found by a docs-only tester: of two jobs submitted back to back, the quick one's
    # future was done only once the slow one ended (they travel as one chunk, one dask
    # task, which comes back once), where a LoopExecutor's is done at once. Here the
    # slow one runs until it is cancelled: the quick one's outcome must come back alone.
    monkeypatch.setattr(_executor, "_SUBMIT_DELAY", _WAIT)  # one chunk, sent at 2 jobs
    with DaskExecutor(client=client, per_worker=2, chunksize=2) as exe:
        slow = exe.submit(_park, 1)
        fast = exe.submit(quick, 2)
        try:
            if quick is _record:
                assert fast.result(_WAIT) == 2
            else:
                error = fast.exception(_WAIT)
                assert isinstance(error, ValueError) and str(error) == "job 2 failed"
                if sys.version_info >= (3, 11):  # noted once, on the worker
                    assert error.__notes__ == [
                        "raised by a job submitted to a DaskExecutor: _fail_now(2)"
                    ]
            assert not slow.done()
            assert _chunks_on_worker(exe) == 1  # (the two jobs' chunk, running on)
        finally:
            slow.cancel()
    assert slow.cancelled()


#
# A job the executor cancelled cleans up past its job_timeout (brk17 F1)
#

_TIMEOUT = 2.0  # job_timeout: long enough for the test's cancel to reach the job first
_clean_ups: dict[int, tuple[bool, int]] = {}  # input -> (cancelled late?, cancels after)


async def _clean_up_past_the_deadline(x: int) -> int:
    """Parks until cancelled, then cleans up until just past its job_timeout, counting
    the cancels that interrupt that clean-up. The deadline (set as the job's call began,
    at most ``start``) comes due before the clean-up's last sleep does, so it has come
    (and sent nothing, or its cancel) before the job takes its next step."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    _started.append(x)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        late, extra = loop.time() >= start + _TIMEOUT, 0
        end = start + _TIMEOUT + 0.01
        while (left := end - loop.time()) > 0:
            try:
                await asyncio.sleep(left)
            except asyncio.CancelledError:
                extra += 1
        _clean_ups[x] = (late, extra)
        raise
    return x


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["future.cancel()", "map closed", "block left by an error"])
def test_a_job_the_executor_cancelled_cleans_up_past_its_job_timeout(
    client: Any, how: str
) -> None:
    # Found by a docs-only tester (brk17 F1): semantics.rst, job_timeout=: "A deadline
    # that comes while the job is being cancelled already by the executor ... sends
    # nothing: the job is cleaning up, and that clean-up runs to its end"; and
    # distributed.rst: "Each job gets one cancel". On the worker the executor's cancel
    # was a plain cancel() of the job's task, which the worker's core executor took for
    # an outside one: its deadline cancelled the clean-up a second time.
    _clean_ups.clear()
    future = results = None
    leaving: Any = pytest.raises(KeyError) if how == "block left by an error" else nullcontext()
    with leaving, DaskExecutor(client=client, per_worker=1, job_timeout=_TIMEOUT) as exe:
        if how == "map closed":
            results = exe.map(_clean_up_past_the_deadline, [0], chunksize=1)
        else:
            future = exe.submit(_clean_up_past_the_deadline, 0)
        _wait_for(lambda: _started == [0], "input 0 started")
        if results is not None:
            results.close()
        elif how == "future.cancel()":
            assert future is not None and future.cancel()
        else:
            raise KeyError("leaves the block")
    # The block's exit waited for the clean-up (distributed.rst, Cancellation).
    assert _clean_ups == {0: (False, 0)}
    if future is not None:
        assert future.cancelled()


#
# A done-callback that waits for another future is refused, not hung (brk17 F2)
#


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunks", ["one chunk", "own chunk"])
def test_a_done_callback_that_waits_for_another_future_gets_a_runtime_error(
    client: Any, monkeypatch: pytest.MonkeyPatch, chunks: str
) -> None:
    # Found by a docs-only tester: a done-callback calling other.result() hung until
    # shutdown(), and meanwhile no other future was resolved: it runs on the thread that
    # resolves them (the flusher, for an outcome that comes back before its chunk; dask's
    # callback thread, for a chunk's return). The bridge refuses such a wait at once.
    if chunks == "one chunk":  # the quick job's outcome comes back early, alone
        monkeypatch.setattr(_executor, "_SUBMIT_DELAY", _WAIT)
    seen: list[BaseException] = []
    returned = threading.Event()

    def wait_for_parked(_: concurrent.futures.Future[int]) -> None:
        try:
            parked.result()
        except BaseException as error:  # (before the fix: CancelledError, at shutdown)
            seen.append(error)
        returned.set()

    with DaskExecutor(client=client, per_worker=2, chunksize=2) as exe:
        parked = exe.submit(_park, 1)
        try:
            if chunks == "own chunk":
                _wait_for(lambda: _started == [1], "the parked job started")
            exe.submit(_record, 2).add_done_callback(wait_for_parked)
            assert returned.wait(_WAIT)
            assert len(seen) == 1 and isinstance(seen[0], RuntimeError), seen
            assert "would deadlock" in str(seen[0])
            more = [exe.submit(_record, x) for x in (3, 4)]  # (a chunk of 2: sent at once)
            assert [f.result(_WAIT) for f in more] == [3, 4]  # the thread is free again
        finally:
            parked.cancel()
    assert parked.cancelled()


#
# shutdown(wait=True) returns after the done-callbacks of the futures it saw resolved
#


@pytest.mark.timeout(60)
def test_shutdown_waits_for_a_done_callback_running_on_the_thread_that_resolves(
    client: Any,
) -> None:
    # Seen in CI (py312, test_shutdown_from_a_done_callback_of_a_future_it_cancels_returns):
    # a chunk resolved on dask's callback thread (its futures done, their done-callbacks
    # still running) left shutdown(wait=True) free to return before those callbacks had
    # run. A ThreadPoolExecutor's shutdown(wait=True) returns after them.
    in_callback = threading.Event()
    release = threading.Event()
    shut = threading.Event()
    shut_before_the_callback_returned: list[bool] = []

    def slow_callback(_: concurrent.futures.Future[int]) -> None:
        in_callback.set()
        release.wait(_WAIT)
        shut_before_the_callback_returned.append(shut.is_set())

    exe = DaskExecutor(client=client, per_worker=2)
    exe.submit(_record, 1).add_done_callback(slow_callback)
    assert in_callback.wait(_WAIT)

    def shut_down() -> None:
        exe.shutdown(wait=True)
        shut.set()

    closer = threading.Thread(target=shut_down)
    closer.start()
    try:
        # A bounded wait for what must not happen: shutdown() returning meanwhile.
        assert not shut.wait(1.0)
    finally:
        release.set()
        closer.join(_WAIT)
    assert not closer.is_alive()
    assert shut_before_the_callback_returned == [False]


#
# A blocking call that overruns its job_timeout: its own outcome is the attempt's (brk21 F4)
#

_OVERRUN_TIMEOUT = 0.05  # job_timeout: each call runs until the test has seen it pass
_overrun_lock = threading.Lock()
_overrun_calls = [0, 0]  # guarded by _overrun_lock: calls running now, the most at once
_overrun_released = threading.Event()


def _overruns(x: int, fail_first: bool = False) -> int:
    """A blocking call: records its start in ``_started``, runs until the test releases
    it, then returns ``x`` (or, ``fail_first``, raises on the first call of ``x``)."""
    with _overrun_lock:
        _started.append(x)
        first = _started.count(x) == 1
        _overrun_calls[0] += 1
        _overrun_calls[1] = max(_overrun_calls)
    try:
        assert _overrun_released.wait(_WAIT), f"not released in {_WAIT} s"
        if fail_first and first:
            raise OSError(f"call of {x} failed")
        return x
    finally:
        with _overrun_lock:
            _overrun_calls[0] -= 1


def _worker_core(exe: DaskExecutor) -> Any:
    """The worker's CoroutineExecutor of ``exe`` (the worker runs in this process)."""
    process_loop = _worker._LOOPS.get(exe._id)
    return None if process_loop is None else process_loop._exe


def _past_the_deadline(exe: DaskExecutor) -> None:
    """Wait until the job_timeout of the running call has passed: the worker's executor
    has cancelled the job for it, and the job waits for its call (after the fix), or the
    job has ended at the deadline and its chunk is gone (before it)."""
    def passed() -> bool:
        core = _worker_core(exe)
        return core is None or bool(core._outcomes.timing_out) or _chunks_on_worker(exe) == 0

    _wait_for(passed, "job_timeout passed")


@pytest.fixture
def overrun() -> Iterator[None]:
    _overrun_released.clear()
    _overrun_calls[:] = [0, 0]
    yield
    _overrun_released.set()  # (a call left waiting by a failed test ends now)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["submit", "map", "submit, retry="])
def test_a_blocking_call_past_its_job_timeout_gives_the_job_its_result(
    client: Any, overrun: None, how: str
) -> None:
    # Found by a docs-only tester (brk21 F4): bridge.rst, "A blocking call that has begun
    # cannot be interrupted: if it overruns job_timeout, its own outcome (result or
    # error) is the attempt's, when it ends", and distributed.rst, "A blocking callable
    # that has started runs to its end, as on the bridge". The worker failed the job with
    # JobTimeoutError at the deadline while its call ran on, and retry= started the same
    # call again beside it: three calls at once, each succeeding, and the future said
    # "failed after 3 attempts". per_worker=2: a second attempt would find a free thread.
    retry = Retry(attempts=3, backoff=0.01) if how == "submit, retry=" else None
    with DaskExecutor(
        client=client, per_worker=2, job_timeout=_OVERRUN_TIMEOUT, retry=retry
    ) as exe:
        if how == "map":
            results = exe.map(_overruns, [1], chunksize=1)
        else:
            future = exe.submit(_overruns, 1)
        _wait_for(lambda: _started == [1], "the call started")
        _past_the_deadline(exe)
        _overrun_released.set()
        if how == "map":
            assert list(results) == [1]
        else:
            assert future.result(_WAIT) == 1
    assert _started == [1]  # one call, not one per attempt
    assert _overrun_calls == [0, 1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("retry", [None, Retry(attempts=2, backoff=0.01, on=OSError)])
def test_an_error_a_blocking_call_raises_past_its_job_timeout_is_the_attempt_s(
    client: Any, overrun: None, retry: Any
) -> None:
    # As above (brk21 F4): the call's own error, not JobTimeoutError, is the attempt's,
    # and it is what the retry policy is asked about; the next attempt starts only once
    # the call has ended (it was started beside it).
    with DaskExecutor(
        client=client, per_worker=2, job_timeout=_OVERRUN_TIMEOUT, retry=retry
    ) as exe:
        future = exe.submit(_overruns, 1, fail_first=True)
        _wait_for(lambda: _started == [1], "the call started")
        _past_the_deadline(exe)
        _overrun_released.set()
        if retry is None:
            error = future.exception(_WAIT)
            assert type(error) is OSError and str(error) == "call of 1 failed", error
            assert _started == [1]
        else:
            assert future.result(_WAIT) == 1
            assert _started == [1, 1]
    assert _overrun_calls == [0, 1]  # never two at once


@pytest.mark.timeout(60)
def test_a_blocking_job_cancelled_while_its_call_overruns_its_job_timeout_ends_cancelled(
    client: Any, overrun: None
) -> None:
    # The other side of brk21 F4: the job waits for its call past the deadline, and the
    # executor's cancel that comes meanwhile (future.cancel()) sends nothing, the deadline's
    # having been its one cancel (distributed.rst: each job gets one cancel). Once the
    # call ends, the job ends cancelled, its outcome dropped, as if the cancel had come
    # first ("its future is cancelled all the same").
    with DaskExecutor(client=client, per_worker=1, job_timeout=_OVERRUN_TIMEOUT) as exe:
        future = exe.submit(_overruns, 1)
        _wait_for(lambda: _started == [1], "the call started")
        _past_the_deadline(exe)
        assert future.cancel()
        core = _worker_core(exe)
        _wait_for(  # (or the job ended before: at the deadline, before the fix)
            lambda: bool(core._outcomes.our_cancels) or _chunks_on_worker(exe) == 0,
            "the cancel reached the worker",
        )
        _overrun_released.set()
        _wait_for(lambda: _chunks_on_worker(exe) == 0, "the job ended")
        # (Read from the test's thread while the worker's loop may still run: stats would
        # refuse that; the job has ended, so the unchecked counts cannot tear.)
        stats = core._counts()
        assert (stats.succeeded, stats.failed, stats.cancelled) == (0, 0, 1)
    assert future.cancelled()
    assert _started == [1]


def _overruns_then_awaits(x: int) -> Any:
    _overruns(x)
    return _record(x)  # an awaitable for the loop, as ``lambda: fetch(url)`` returns


@pytest.mark.timeout(60)
def test_an_awaitable_a_blocking_call_returns_past_its_job_timeout_is_not_awaited(
    client: Any, overrun: None
) -> None:
    # As on the bridge: the job is the call and its awaitable together, and the deadline
    # has passed; the awaitable is closed, never awaited, and the attempt times out.
    with DaskExecutor(client=client, per_worker=1, job_timeout=_OVERRUN_TIMEOUT) as exe:
        future = exe.submit(_overruns_then_awaits, 1)
        _wait_for(lambda: _started == [1], "the call started")
        _past_the_deadline(exe)
        _overrun_released.set()
        assert isinstance(future.exception(_WAIT), TimeoutError)
    assert _started == [1]  # _record(1) never ran


class _Says(logging.Handler):
    """Sets ``said`` once the worker's closing logs a message containing ``what``."""

    def __init__(self, what: str) -> None:
        super().__init__(logging.DEBUG)
        self.what = what
        self.said = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.what in record.getMessage():
            self.said.set()


@pytest.mark.timeout(60)
def test_shutdown_waits_for_a_blocking_call_past_its_job_timeout_and_says_so(
    client: Any, overrun: None
) -> None:
    # brk21 F4's fix makes such a job wait for its call, and the worker's loop thread
    # with it: the closing says it waits for the call while it does (distributed.rst,
    # Cancellation), not once the call has ended, and returns only after it.
    logger = logging.getLogger("coroexecutor.distributed")
    says, level = _Says("waiting for 1 blocking call(s) that have started"), logger.level
    logger.addHandler(says)
    logger.setLevel(logging.DEBUG)
    try:
        exe = DaskExecutor(client=client, per_worker=1, job_timeout=_OVERRUN_TIMEOUT)
        future = exe.submit(_overruns, 1)
        _wait_for(lambda: _started == [1], "the call started")
        _past_the_deadline(exe)
        closing = threading.Thread(target=exe.shutdown, kwargs={"cancel_futures": True})
        closing.start()
        try:
            assert says.said.wait(_WAIT), "the closing did not say it waits for the call"
            assert closing.is_alive(), "shutdown() returned while the blocking call ran"
        finally:
            _overrun_released.set()
            closing.join(_WAIT)
        assert not closing.is_alive()
    finally:
        logger.removeHandler(says)
        logger.setLevel(level)
    assert future.cancelled()
    assert _started == [1]
