"""DaskExecutor on a real dask engine: a LocalCluster of two worker processes on loopback.

The jobs are functions of this module: cloudpickle sends them by reference, and the
worker processes (spawned with this process's sys.path) import this module, so its
globals are per-process state the jobs share and ``client.run`` can read.
Cross-process handshakes go through files in a temporary directory; every wait on them
is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

distributed = pytest.importorskip(
    "distributed", reason='dask.distributed is not installed (pip install "coroexecutor[dask]")'
)

import dask  # noqa: E402

from coroexecutor import BrokenCoroutineExecutor, Retry  # noqa: E402
from coroexecutor.distributed import DaskExecutor, UnsentOutcomeError, _outcomes  # noqa: E402
from coroexecutor.distributed import _executor as _dask_executor  # noqa: E402

WORKERS = 2
_WAIT = 20.0  # seconds: the bound on every cross-process handshake


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """One LocalCluster for the module: two worker processes, one dask thread each.

    Module-scoped, not session-scoped: a cluster left running opens and closes sockets in
    this process (heartbeats), which the file-descriptor checks of later tests would see.
    """
    # dask keeps each connection's last N message batches for debugging (1,000 by
    # default), chunks included; the scheduler runs in this process, and the memory test
    # measures this process.
    config = dask.config.set({"distributed.admin.low-level-log-length": 10})
    config.__enter__()
    cluster = distributed.LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True,
        dashboard_address=":0",  # a free port: no "port in use" warning beside another cluster
        host="127.0.0.1",
    )
    client = distributed.Client(cluster)
    # Start dask's process-wide helper threads (offload, callback) now, before any test's
    # thread-leak check takes its snapshot: they live as long as the process.
    with DaskExecutor(client=client, per_worker=2) as exe:
        assert exe.submit(_double, 1).result(_WAIT) == 2
        assert list(exe.map(_double, range(4), chunksize=1)) == [0, 2, 4, 6]
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        config.__exit__(None, None, None)


@pytest.fixture
def client(dask_client: Any) -> Any:
    dask_client.wait_for_workers(WORKERS, timeout=60)  # after the test that kills one
    return dask_client


# The nanny watches a worker process it (re)starts with threads in this process (the
# LocalCluster's nannies run here): a process-join watcher, a message-queue watcher and
# multiprocessing's queue feeder. They belong to the module's cluster and live as long
# as the new worker does.
_NANNY_THREADS = ("AsyncProcess Dask Worker process (from Nanny)", "QueueFeederThread")


@pytest.fixture
def dask_restarts_a_worker() -> None:
    """Marks a test that kills a worker process, which the nanny then restarts."""


@pytest.fixture(autouse=True)
def no_thread_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """conftest's check, except for the nanny's threads in a test that kills a worker."""
    before = set(threading.enumerate())
    yield
    allowed = _NANNY_THREADS if "dask_restarts_a_worker" in request.fixturenames else ()
    survivors = []
    for thread in threading.enumerate():
        if thread not in before and not thread.name.startswith(allowed):
            thread.join(5)
            if thread.is_alive():
                survivors.append(thread)
    if survivors:
        pytest.fail(f"test left threads running: {survivors!r}")


# Jobs (run in the worker processes)

_state: dict[str, Any] = {}  # per worker process: token -> counters


async def _double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def _double_blocking(x: int) -> int:
    return 2 * x


async def _peak_job(token: str, per_worker: int, x: int) -> int:
    """Counts the jobs running at once in this process; the first per_worker of them wait
    until that many run together (a handshake), so the peak is reached, never passed."""
    state = _state.setdefault(token, {"active": 0, "peak": 0, "full": asyncio.Event()})
    state["active"] += 1
    state["peak"] = max(state["peak"], state["active"])
    if state["active"] >= per_worker:
        state["full"].set()
    try:
        await asyncio.wait_for(state["full"].wait(), _WAIT)
    finally:
        state["active"] -= 1
    return x


def _read_state(token: str) -> dict[str, Any]:
    state = _state.get(token, {})
    return {k: v for k, v in state.items() if isinstance(v, int)}


async def _park_or_fail(folder: str, x: int) -> int:
    """Input 0 fails once parked jobs run in both processes; the others park until
    cancelled, and leave a file saying they started and one saying they were cancelled."""
    directory = pathlib.Path(folder)
    if x == 0:
        await _wait_for_files(directory, "started-*", WORKERS)
        raise ValueError("boom")
    return await _park(directory, x)


async def _park(directory: pathlib.Path, x: int) -> int:
    (directory / f"started-{os.getpid()}-{x}").touch()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        (directory / f"cancelled-{os.getpid()}-{x}").touch()
        raise
    return x


async def _wait_for_release(folder: str, x: int) -> int:
    """Says it started, then runs until the test creates the file ``release`` (bounded)."""
    directory = pathlib.Path(folder)
    (directory / f"started-{os.getpid()}-{x}").touch()
    await _wait_for_files(directory, "release-*", 1)
    return x


async def _park_after_first(folder: str, x: int) -> int:
    return x if x < 1 else await _park(pathlib.Path(folder), x)


async def _wait_for_files(directory: pathlib.Path, pattern: str, pids: int) -> None:
    """Bounded poll until files of the pattern exist from ``pids`` distinct processes."""
    deadline = time.monotonic() + _WAIT
    # A few files in a temporary directory: listing them does not block the loop for long.
    while len({p.name.split("-")[1] for p in directory.glob(pattern)}) < pids:  # noqa: ASYNC240
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern} files from {pids} processes in {_WAIT} s")
        await asyncio.sleep(0.01)


def _wait_until_all_cancelled(directory: pathlib.Path) -> set[str]:
    """Client side: every job that started was cancelled (bounded wait); their names."""
    deadline = time.monotonic() + _WAIT
    while True:
        started = {p.name.split("-", 1)[1] for p in directory.glob("started-*")}
        cancelled = {p.name.split("-", 1)[1] for p in directory.glob("cancelled-*")}
        if started and started == cancelled:
            return started
        assert time.monotonic() < deadline, f"still running: {sorted(started - cancelled)}"
        time.sleep(0.01)


class _SaysWhenWaitedFor(logging.Handler):
    """In a worker process: touches ``waited`` once the closing says that it waits for the
    blocking calls that have started (or, with ``what``, for something else)."""

    def __init__(
        self, directory: pathlib.Path, what: str = "blocking call(s) that have started"
    ) -> None:
        super().__init__(logging.DEBUG)
        self.directory = directory
        self.what = what

    def emit(self, record: logging.LogRecord) -> None:
        if self.what in record.getMessage():
            (self.directory / "waited").touch()


async def _cleans_up_when_cancelled(folder: str) -> None:
    """Parks; once cancelled, cleans up until the test creates ``release-*`` (bounded),
    and says whether the clean-up ran to its end (``cleaned``) or was cut short by a
    second cancel (``cut``). Meanwhile it listens to this process's closing."""
    directory = pathlib.Path(folder)
    logger = logging.getLogger("coroexecutor.distributed")
    handler, level = _SaysWhenWaitedFor(directory, "job(s) to end after their cancel"), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        (directory / f"started-{os.getpid()}-0").touch()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            (directory / "cancelled").touch()
            try:
                await _wait_for_files(directory, "release-*", 1)  # flush, close a connection
            except asyncio.CancelledError:
                (directory / "cut").touch()
                raise
            (directory / "cleaned").touch()
            raise
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _blocks_until_released(folder: str) -> str:
    """A blocking call: says it started, then runs until the test creates ``release``
    (bounded), and says it finished. Meanwhile it listens to this process's closing."""
    directory = pathlib.Path(folder)
    logger = logging.getLogger("coroexecutor.distributed")
    handler, level = _SaysWhenWaitedFor(directory), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        (directory / f"started-{os.getpid()}-0").touch()
        deadline = time.monotonic() + _WAIT
        while not (directory / "release").exists():
            assert time.monotonic() < deadline, f"no release in {_WAIT} s"
            time.sleep(0.01)
        (directory / "finished").touch()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return "finished"


def _fails_on_odd(x: int) -> int:
    if x % 2:
        raise KeyError(f"odd {x}")
    return x


class _Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickles, but cannot be loaded again
        super().__init__(f"{a}/{b}")


def _raises_unpicklable(x: int) -> int:
    if x == 1:
        raise _Unpicklable(x, 2)
    return x


def _returns_lock(x: int) -> Any:
    return threading.Lock() if x == 2 else x


def _cannot_load(*args: Any) -> Any:
    raise ValueError("cannot be loaded here")


class _LoadsNowhere:
    """Pickles on the worker; loading it fails, on the client too."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_cannot_load, ())


def _returns_unloadable(x: int) -> Any:
    return _LoadsNowhere() if x == 1 else x


class _Abort(BaseException):
    """An exception that is no Exception, raised while (un)pickling (brk26 finding 2)."""


def _exit_while_pickled() -> Any:
    raise _Abort("cannot load")


class _ExitsWhenPickled:
    """Pickling it raises SystemExit: on the worker, as its result is sent back."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise SystemExit("no pickle")


class _AbortsWhenLoaded:
    """Pickles; loading it raises a BaseException that is no Exception."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_exit_while_pickled, ())


def _returns_exiting(x: int) -> Any:
    return _ExitsWhenPickled() if x == 1 else x


def _returns_aborting(x: int) -> Any:
    return _AbortsWhenLoaded() if x == 1 else x


def _kill_once(flag: str, x: int) -> int:
    """The first job of input 5 to run kills its worker process (SIGKILL: no clean-up)."""
    if x == 5:
        try:
            fd = os.open(flag, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return x
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return x


_initialised: list[int] = []


def _initialize(value: int) -> None:
    _initialised.append(value)


async def _read_initialised(x: int) -> tuple[int, list[int]]:
    return os.getpid(), list(_initialised)


# Tests


@pytest.mark.parametrize("fn", [_double, _double_blocking])
def test_map_yields_results_in_input_order(client: Any, fn: Any) -> None:
    with DaskExecutor(client=client, per_worker=5) as exe:
        assert list(exe.map(fn, range(50), chunksize=7)) == [2 * x for x in range(50)]


def test_map_runs_lambdas_and_closures(client: Any) -> None:
    offset = 10
    with DaskExecutor(client=client, per_worker=5) as exe:
        assert list(exe.map(lambda x: x + offset, range(5), chunksize=2)) == list(range(10, 15))


def test_counts_too_large_for_a_float_are_counts_like_any_other(client: Any) -> None:
    # Found by a docs-only tester (brk16 F4): a map with buffersize=10**400, or per_worker
    # of that size, raised OverflowError (a float division sizing its window), and one
    # with chunksize=10**400 a ValueError from islice(). They are valid ints: as large a
    # chunk or window as the inputs fill.
    huge = 10**400
    with DaskExecutor(client=client, per_worker=huge, chunksize=huge) as exe:
        assert list(exe.map(_double, range(3))) == [0, 2, 4]
        assert list(exe.map(_double, range(3), buffersize=huge)) == [0, 2, 4]
        assert list(exe.map(_double, range(3), chunksize=1, buffersize=huge)) == [0, 2, 4]


def test_per_worker_is_the_peak_concurrency_in_each_worker_process(client: Any) -> None:
    token, per_worker = os.urandom(8).hex(), 4
    with DaskExecutor(client=client, per_worker=per_worker) as exe:
        # Many small chunks: each process gets several at once, more jobs than per_worker.
        n = 200
        assert list(exe.map(_peak_job, [token] * n, [per_worker] * n, range(n), chunksize=10,
                            buffersize=80)) == list(range(n))
    peaks = [state["peak"] for state in client.run(_read_state, token).values()]
    assert peaks == [per_worker] * WORKERS


def test_a_job_error_fails_fast_and_cancels_the_rest_in_every_process(
    client: Any, tmp_path: pathlib.Path
) -> None:
    with DaskExecutor(client=client, per_worker=10) as exe:
        results = exe.map(_park_or_fail, [str(tmp_path)] * 100, range(100), chunksize=5)
        with pytest.raises(ValueError, match="boom") as caught:
            next(results)
    if sys.version_info >= (3, 11):
        [note] = caught.value.__notes__
        assert note.startswith("raised by input 0 of a DaskExecutor map: _park_or_fail('")
        assert note.endswith("', 0)")
    started = _wait_until_all_cancelled(tmp_path)
    assert len({name.split("-")[0] for name in started}) == WORKERS


class _NotesExit(Exception):
    """A job error that refuses notes with SystemExit (add_note on 3.11+, __setattr__)."""

    def add_note(self, note: str) -> None:
        raise SystemExit(note)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "__notes__":
            raise SystemExit(name)
        super().__setattr__(name, value)


async def _fails_refusing_notes(x: int, *, label: str = "") -> int:
    raise _NotesExit(f"job {x}{label}")


async def _fails_with_keywords(x: int, *, label: str) -> int:
    raise ValueError(f"job {x} {label}")


def test_the_note_names_a_submitted_jobs_keywords_and_a_refused_note_loses_no_error(
    client: Any,
) -> None:
    # Found by a review: the note of a submitted job left out its keyword arguments, and
    # an error refusing its note with SystemExit broke the worker's chunk instead of
    # failing its job alone.
    with DaskExecutor(client=client, per_worker=2) as exe:
        error = exe.submit(_fails_with_keywords, 1, label="x" * 100).exception(timeout=60)
        refused = exe.submit(_fails_refusing_notes, 2, label="!").exception(timeout=60)
        with pytest.raises(_NotesExit, match="job 3"):
            next(exe.map(_fails_refusing_notes, [3]))
        assert exe.submit(_double, 4).result(timeout=60) == 8
    assert isinstance(error, ValueError)
    [note] = error.__notes__  # type: ignore[attr-defined]  # (3.10: set by hand)
    assert note.startswith("raised by a job submitted to a DaskExecutor: _fails_with_keywords(1,")
    assert "label='xxxx" in note and "..." in note  # shortened, as the core's notes
    assert isinstance(refused, _NotesExit) and str(refused) == "job 2!"
    assert "__notes__" not in vars(refused)


async def _fail_while_input_0_runs(folder: str, x: int) -> int:
    """Input 1 fails once parked jobs run in both processes; input 0, in its chunk, ends
    only once jobs were cancelled in both processes (its own and the other)."""
    directory = pathlib.Path(folder)
    if x == 0:
        await _wait_for_files(directory, "cancelled-*", WORKERS)
        return 0
    if x == 1:
        await _wait_for_files(directory, "started-*", WORKERS)
        raise ValueError("boom")
    return await _park(directory, x)


def test_fail_fast_reaches_the_other_processes_before_its_chunk_is_back(
    client: Any, tmp_path: pathlib.Path
) -> None:
    with DaskExecutor(client=client, per_worker=10) as exe:
        results = exe.map(_fail_while_input_0_runs, [str(tmp_path)] * 100, range(100),
                          chunksize=5)
        assert next(results) == 0
        with pytest.raises(ValueError, match="boom"):
            next(results)
    _wait_until_all_cancelled(tmp_path)


def test_return_exceptions_yields_each_error_in_its_place(client: Any) -> None:
    with DaskExecutor(client=client, per_worker=3) as exe:
        results = list(exe.map(_fails_on_odd, range(10), chunksize=3, return_exceptions=True))
    assert results[::2] == [0, 2, 4, 6, 8]
    errors = results[1::2]
    assert [type(e) for e in errors] == [KeyError] * 5
    assert [e.args for e in errors] == [(f"odd {x}",) for x in range(1, 10, 2)]


async def _cancels_itself_on_one(x: int) -> int:
    if x == 1:
        raise asyncio.CancelledError
    return x


def test_return_exceptions_yields_a_job_s_own_cancelled_error_in_its_place(
    client: Any,
) -> None:
    with DaskExecutor(client=client, per_worker=3) as exe:
        results = list(exe.map(_cancels_itself_on_one, range(3), return_exceptions=True))
        submitted = exe.submit(_cancels_itself_on_one, 1)
        with pytest.raises(concurrent.futures.CancelledError):
            submitted.result(_WAIT)
    assert results[0::2] == [0, 2]  # as CoroutineExecutor.map and asyncio.gather
    assert type(results[1]) is asyncio.CancelledError
    assert submitted.cancelled()  # a coroutine job's: as on the bridge (a cancelled task)


def _blocking_cancels_itself_on_one(x: int) -> int:
    if x == 1:
        raise asyncio.CancelledError("upstream request aborted")  # re-raised from a library
    return x


def test_a_blocking_call_s_own_cancelled_error_fails_its_item_with_it(client: Any) -> None:
    # Found by a docs-only tester (bridge.rst: "a blocking call that raises CancelledError
    # itself still fails its future with it, as on a ThreadPoolExecutor"): the job's task
    # took it for a cancel, and its future came back cancelled(), message and note lost.
    with DaskExecutor(client=client, per_worker=3) as exe:
        future = exe.submit(_blocking_cancels_itself_on_one, 1)
        error = future.exception(_WAIT)
        results = list(exe.map(_blocking_cancels_itself_on_one, range(3), chunksize=3,
                               return_exceptions=True))
        with pytest.raises(asyncio.CancelledError, match="upstream request aborted"):
            list(exe.map(_blocking_cancels_itself_on_one, range(3), chunksize=3))
    assert not future.cancelled()
    assert type(error) is asyncio.CancelledError
    assert error.args == ("upstream request aborted",)
    assert getattr(error, "__notes__", None) == [
        "raised by a job submitted to a DaskExecutor: _blocking_cancels_itself_on_one(1)"
    ]
    assert results[0::2] == [0, 2]
    assert type(results[1]) is asyncio.CancelledError
    assert results[1].args == ("upstream request aborted",)
    assert getattr(results[1], "__notes__", None) == [
        "raised by input 1 of a DaskExecutor map: _blocking_cancels_itself_on_one(1)"
    ]


async def _exits_on_one_or_two(x: int) -> int:
    if x == 1:
        raise SystemExit(3)
    if x == 2:
        raise KeyboardInterrupt
    return x


def _exits_on_one_or_two_blocking(x: int) -> int:
    return asyncio.run(_exits_on_one_or_two(x))


@pytest.mark.parametrize("fn", [_exits_on_one_or_two, _exits_on_one_or_two_blocking])
def test_a_job_raising_system_exit_or_keyboard_interrupt_fails_its_item_only(
    client: Any, fn: Any
) -> None:
    with DaskExecutor(client=client, per_worker=3) as exe:
        first = list(exe.map(fn, range(4), chunksize=4, return_exceptions=True))
        assert first[0::3] == [0, 3]
        assert type(first[1]) is SystemExit and first[1].args == (3,)
        assert type(first[2]) is KeyboardInterrupt
        # every process's loop runs on
        assert list(exe.map(_double, range(8), chunksize=1)) == [2 * x for x in range(8)]
        assert exe.submit(_double, 4).result(_WAIT) == 8


def test_an_error_is_raised_where_its_result_would_be(client: Any) -> None:
    with DaskExecutor(client=client, per_worker=3) as exe:
        results = exe.map(_fails_on_odd, [0, 2, 4, 5, 6], chunksize=2)
        assert [next(results) for _ in range(3)] == [0, 2, 4]
        with pytest.raises(KeyError, match="odd 5"):
            next(results)


def test_an_unpicklable_outcome_fails_that_item_alone(client: Any) -> None:
    with DaskExecutor(client=client, per_worker=3) as exe:
        errors = list(exe.map(_raises_unpicklable, range(3), chunksize=3, return_exceptions=True))
        values = list(exe.map(_returns_lock, range(4), chunksize=4, return_exceptions=True))
        submitted = exe.submit(_returns_lock, 2).exception(_WAIT)
    assert errors[0] == 0 and errors[2] == 2
    assert isinstance(errors[1], UnsentOutcomeError)
    assert "_Unpicklable: 1/2" in str(errors[1])
    assert values[:2] == [0, 1] and values[3] == 3
    assert isinstance(values[2], UnsentOutcomeError)
    assert "lock" in str(values[2])
    # Noted as every other error is, naming the input to rerun (found by a docs-only
    # tester: these alone had no note).
    assert getattr(errors[1], "__notes__", None) == [
        "raised by input 1 of a DaskExecutor map: _raises_unpicklable(1)"
    ]
    assert getattr(values[2], "__notes__", None) == [
        "raised by input 2 of a DaskExecutor map: _returns_lock(2)"
    ]
    assert isinstance(submitted, UnsentOutcomeError)
    assert getattr(submitted, "__notes__", None) == [
        "raised by a job submitted to a DaskExecutor: _returns_lock(2)"
    ]


def test_a_result_that_cannot_be_loaded_on_the_client_fails_that_item_alone(
    client: Any,
) -> None:
    # Found by a docs-only tester: one such result failed every job of its chunk.
    with DaskExecutor(client=client, per_worker=3) as exe:
        values = list(exe.map(_returns_unloadable, range(3), chunksize=3,
                              return_exceptions=True))
        futures = [exe.submit(_returns_unloadable, x) for x in range(3)]
        assert [futures[0].result(_WAIT), futures[2].result(_WAIT)] == [0, 2]
        with pytest.raises(UnsentOutcomeError, match="cannot be loaded here"):
            futures[1].result(_WAIT)
    assert values[0] == 0 and values[2] == 2
    assert isinstance(values[1], UnsentOutcomeError)
    assert "ValueError: cannot be loaded here" in str(values[1])


@pytest.mark.timeout(60)
def test_a_base_exception_while_pickling_one_item_fails_that_item_alone(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (brk26 finding 2): a SystemExit from pickling a result on the worker hung
    the map; a BaseException from loading one on the client failed the whole map, and one
    from pickling an argument failed every job submitted with it."""
    with DaskExecutor(client=client, per_worker=3) as exe:
        sent = list(exe.map(_returns_exiting, range(3), chunksize=3, return_exceptions=True))
        loaded = list(exe.map(_returns_aborting, range(4), chunksize=4, return_exceptions=True))
        assert sent[0] == 0 and sent[2] == 2
        assert isinstance(sent[1], UnsentOutcomeError)
        assert "pickling it failed with SystemExit: no pickle" in str(sent[1])
        assert loaded[0] == 0 and loaded[2:] == [2, 3]
        assert isinstance(loaded[1], UnsentOutcomeError)
        assert "unpickling it failed with _Abort: cannot load" in str(loaded[1])
    # One chunk of three: it leaves when the third job is submitted, never on the delay.
    monkeypatch.setattr(_dask_executor, "_SUBMIT_DELAY", _WAIT)
    with DaskExecutor(client=client, per_worker=3, chunksize=3) as exe:
        futures = [exe.submit(_double, 1), exe.submit(_double, _ExitsWhenPickled()),  # type: ignore[arg-type]
                   exe.submit(_double, 3)]
        assert futures[0].result(_WAIT) == 2 and futures[2].result(_WAIT) == 6
        with pytest.raises(TypeError, match="to the workers: SystemExit: no pickle"):
            futures[1].result(_WAIT)


class _InterruptsWhenPickled:
    """Pickling it raises KeyboardInterrupt, as a __reduce__ may (no Ctrl-C)."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise KeyboardInterrupt("while pickled")


def _interrupt_while_loaded() -> Any:
    raise KeyboardInterrupt("while loaded")


class _InterruptsWhenLoaded:
    """Pickles on the worker; loading it raises KeyboardInterrupt (no Ctrl-C)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_interrupt_while_loaded, ())


def _returns_interrupting(x: int) -> Any:
    return _InterruptsWhenLoaded() if x == 1 else x


@pytest.mark.timeout(60)
def test_a_keyboard_interrupt_from_pickling_a_submitted_job_fails_that_job_alone(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (brk31 f7): a submitted job is pickled, and its outcome loaded, on the
    executor's own threads, after submit() has returned and where no Ctrl-C lands: a
    KeyboardInterrupt a __reduce__ raised there was stored in the future, bare, and failed
    every other job of its chunk too; it is that job's failure, as any other exception."""
    monkeypatch.setattr(_dask_executor, "_SUBMIT_DELAY", _WAIT)  # one chunk of three
    with DaskExecutor(client=client, per_worker=3, chunksize=3) as exe:
        sent = [exe.submit(_double, 1), exe.submit(_double, _InterruptsWhenPickled()),  # type: ignore[arg-type]
                exe.submit(_double, 3)]
        loaded = [exe.submit(_returns_interrupting, x) for x in range(3)]
        # (exception(), not result(): before the fix, result() raised KeyboardInterrupt,
        # which would stop the pytest run)
        errors = [f.exception(_WAIT) for f in sent + loaded]
        assert [errors[i] for i in (0, 2, 3, 5)] == [None] * 4, errors
        assert [f.result() for f in sent[::2] + loaded[::2]] == [2, 6, 0, 2]
        unsent, unloaded = errors[1], errors[4]
    assert isinstance(unsent, TypeError)
    assert re.fullmatch(
        r"cannot send job _double\(<test_distributed\..* object at 0x\w+>\) to the"
        r" workers: KeyboardInterrupt: while pickled", str(unsent)
    ), str(unsent)
    assert isinstance(unsent.__cause__, KeyboardInterrupt)
    assert isinstance(unloaded, UnsentOutcomeError)
    assert str(unloaded) == (
        "the job's result could not be loaded on the client; unpickling it failed with"
        " KeyboardInterrupt: while loaded"
    )


# What a kept error holds, and errors the client cannot load (found by a docs-only tester,
# brk31: tblib rebuilt each error's worker traceback inside the client's call that loaded
# it, so the traceback's frames led into that call's frames and kept the chunk's results;
# and the errors of a chunk loaded as one pickle, so one whose class the client could not
# import failed the whole chunk, and the map, with a bare ModuleNotFoundError).


class _Held:
    """A result the test holds a weak reference to."""


def _held_or_error(x: int) -> Any:
    if x == 1:
        try:
            raise KeyError(x)
        except KeyError as cause:
            raise ValueError(f"bad {x}") from cause
    return _Held()


def test_a_kept_error_keeps_nothing_else_of_its_chunk(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with DaskExecutor(client=client, per_worker=3) as exe:
        outcomes = list(exe.map(_held_or_error, range(3), chunksize=3, return_exceptions=True))
        mapped = weakref.ref(outcomes[0])
        map_error = outcomes[1]
        del outcomes
    monkeypatch.setattr(_dask_executor, "_SUBMIT_DELAY", _WAIT)  # one chunk of three
    with DaskExecutor(client=client, per_worker=3, chunksize=3) as exe:
        futures = [exe.submit(_held_or_error, x) for x in range(3)]
        submitted = weakref.ref(futures[0].result(_WAIT))
        submit_error = futures[1].exception(_WAIT)
        del futures
    gc.collect()
    assert mapped() is None and submitted() is None
    assert isinstance(map_error, ValueError) and isinstance(submit_error, ValueError)
    assert getattr(map_error, "__notes__", None) == [
        "raised by input 1 of a DaskExecutor map: _held_or_error(1)"
    ]
    # The worker's traceback does not come back (docs/distributed.rst, Errors).
    assert map_error.__traceback__ is None and submit_error.__traceback__ is None
    assert isinstance(map_error.__cause__, KeyError) and map_error.__cause__.__traceback__ is None


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups came in 3.11")
def test_a_loaded_error_group_s_members_and_context_come_without_tracebacks() -> None:
    group = _raised(ExceptionGroup("jobs", [_raised(KeyError(1))]))  # noqa: F821  (3.11+)
    group.__context__ = _raised(OSError("while handling"))
    outcomes = _outcomes.Outcomes.of([None], {0: group}, [], lambda i, error: None)
    loaded = outcomes.load(passing=())[1][0]
    assert str(loaded) == "jobs (1 sub-exception)" and isinstance(loaded.__context__, OSError)
    assert loaded.__traceback__ is None and loaded.__context__.__traceback__ is None
    assert [e.__traceback__ for e in loaded.exceptions] == [None]  # type: ignore[attr-defined]  # (a group)


_client_refuses = {"worker_only": False}  # set in the test's process only: the client


def _load_worker_only(message: str) -> BaseException:
    if _client_refuses["worker_only"]:
        raise ModuleNotFoundError("No module named 'worker_only'")
    return _WorkerOnlyError(message)


class _WorkerOnlyError(Exception):
    """As an exception whose class only the workers can import."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load_worker_only, self.args)


def _raises_worker_only_on_one(x: int) -> int:
    if x == 1:
        raise _WorkerOnlyError(f"worker-only {x}")
    return x


@pytest.mark.parametrize("return_exceptions", [True, False])
def test_an_error_the_client_cannot_load_fails_its_item_alone(
    client: Any, monkeypatch: pytest.MonkeyPatch, return_exceptions: bool
) -> None:
    monkeypatch.setitem(_client_refuses, "worker_only", True)
    with DaskExecutor(client=client, per_worker=3) as exe:
        results = exe.map(_raises_worker_only_on_one, range(4), chunksize=4,
                          return_exceptions=return_exceptions)
        assert next(results) == 0
        if return_exceptions:
            error = next(results)
            assert list(results) == [2, 3]
        else:
            with pytest.raises(UnsentOutcomeError) as raised:
                next(results)
            error = raised.value
    assert isinstance(error, UnsentOutcomeError)
    assert str(error) == (
        "the job's exception could not be loaded on the client; unpickling it failed with"
        " ModuleNotFoundError: No module named 'worker_only'"
    )


def test_a_submitted_job_s_error_the_client_cannot_load_fails_its_future_alone(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(_client_refuses, "worker_only", True)
    monkeypatch.setattr(_dask_executor, "_SUBMIT_DELAY", _WAIT)  # one chunk of three
    with DaskExecutor(client=client, per_worker=3, chunksize=3) as exe:
        futures = [exe.submit(_raises_worker_only_on_one, x) for x in range(3)]
        assert futures[0].result(_WAIT) == 0 and futures[2].result(_WAIT) == 2
        with pytest.raises(UnsentOutcomeError, match="exception could not be loaded on the"):
            futures[1].result(_WAIT)


def test_leaving_map_early_cancels_the_jobs_running_on_the_workers(
    client: Any, tmp_path: pathlib.Path
) -> None:
    with DaskExecutor(client=client, per_worker=10) as exe:
        # A chunk's results come back together: input 0 alone in its chunk.
        results = exe.map(_park_after_first, [str(tmp_path)] * 40, range(40), chunksize=1)
        assert next(results) == 0
        asyncio.run(_wait_for_files(tmp_path, "started-*", WORKERS))
        results.close()
        _wait_until_all_cancelled(tmp_path)


def test_a_map_dropped_before_its_first_result_cancels_its_jobs(
    client: Any, tmp_path: pathlib.Path
) -> None:
    with DaskExecutor(client=client, per_worker=10) as exe:
        results = exe.map(_park, [tmp_path] * 20, range(20), chunksize=2)
        asyncio.run(_wait_for_files(tmp_path, "started-*", WORKERS))
        del results
        _wait_until_all_cancelled(tmp_path)


def test_an_exception_leaving_the_block_cancels_the_running_jobs(
    client: Any, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(KeyboardInterrupt), DaskExecutor(client=client, per_worker=10) as exe:
        futures = [exe.submit(_park, tmp_path, x) for x in range(10)]
        asyncio.run(_wait_for_files(tmp_path, "started-*", 1))
        raise KeyboardInterrupt  # as Ctrl-C would, in the block
    assert all(f.cancelled() for f in futures)
    _wait_until_all_cancelled(tmp_path)


def test_map_timeout_raises_timeout_error(client: Any, tmp_path: pathlib.Path) -> None:
    with DaskExecutor(client=client, per_worker=10) as exe:
        results = exe.map(_park, [tmp_path], [1], timeout=0.2)
        with pytest.raises(concurrent.futures.TimeoutError):  # builtin TimeoutError on 3.11+
            next(results)
    _wait_until_all_cancelled(tmp_path)


def test_future_cancel_and_shutdown_cancel_futures_reach_running_jobs(
    client: Any, tmp_path: pathlib.Path
) -> None:
    exe = DaskExecutor(client=client, per_worker=10)
    first = exe.submit(_park, tmp_path, 1)
    others = [exe.submit(_park, tmp_path, x) for x in range(2, 6)]
    asyncio.run(_wait_for_files(tmp_path, "started-*-1", 1))
    assert first.cancel()
    asyncio.run(_wait_for_files(tmp_path, "cancelled-*-1", 1))
    exe.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in others)
    _wait_until_all_cancelled(tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["cancel_futures", "future.cancel()"])
def test_shutdown_waits_for_a_blocking_call_that_has_started(
    client: Any, tmp_path: pathlib.Path, how: str
) -> None:
    # Found by a docs-only tester: "a blocking callable that has started runs to its end,
    # as on the bridge", but the closing went on without it. On a LocalCluster the
    # executor started, the nanny killed the worker process under the call after 4 s;
    # here, on the user's cluster, shutdown() returned while the call still ran. The call
    # runs until the test releases it, once the closing says it waits for the call.
    exe = DaskExecutor(client=client, per_worker=2)
    future = exe.submit(_blocks_until_released, str(tmp_path))
    asyncio.run(_wait_for_files(tmp_path, "started-*", 1))
    if how == "future.cancel()":
        assert future.cancel()  # (docs: it succeeds until the result is in)
    shutting_down = threading.Thread(
        target=exe.shutdown, kwargs={"cancel_futures": how == "cancel_futures"}
    )
    shutting_down.start()
    try:
        deadline = time.monotonic() + _WAIT
        while shutting_down.is_alive() and not (tmp_path / "waited").exists():
            assert time.monotonic() < deadline, f"the closing said nothing in {_WAIT} s"
            time.sleep(0.01)
        assert shutting_down.is_alive(), "shutdown() returned while the blocking call ran"
    finally:
        (tmp_path / "release").touch()
        shutting_down.join(_WAIT)
    assert not shutting_down.is_alive()
    assert (tmp_path / "finished").exists()
    assert future.cancelled()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["with", "cancel_futures"])
def test_a_job_s_clean_up_after_its_cancel_runs_to_its_end_before_the_exit_returns(
    client: Any, tmp_path: pathlib.Path, how: str
) -> None:
    # Found by a docs-only tester (reliability.rst: a job that catches CancelledError "is
    # waited for: ... shutdown(wait=True) and an exceptional with exit all return only
    # after it ends"): the client's cancel reached the job, then the worker loop's stop
    # cancelled it again, cutting its clean-up short, and the exit returned at once. The
    # clean-up runs until the test releases it, once the closing says it waits for it.
    exe = DaskExecutor(client=client, per_worker=2)
    future = exe.submit(_cleans_up_when_cancelled, str(tmp_path))
    asyncio.run(_wait_for_files(tmp_path, "started-*", 1))

    def leave() -> None:
        if how == "with":
            with contextlib.suppress(RuntimeError), exe:
                raise RuntimeError("leaves the block")
        else:
            exe.shutdown(wait=True, cancel_futures=True)

    leaving = threading.Thread(target=leave)
    leaving.start()
    try:
        deadline = time.monotonic() + _WAIT
        while leaving.is_alive() and not any(
            (tmp_path / name).exists() for name in ("waited", "cut")
        ):
            assert time.monotonic() < deadline, f"the closing said nothing in {_WAIT} s"
            time.sleep(0.01)
        assert not (tmp_path / "cut").exists(), "a second cancel cut the clean-up short"
        assert leaving.is_alive(), "the exit returned while the job cleaned up"
    finally:
        (tmp_path / "release-0").touch()
        leaving.join(_WAIT)
    assert not leaving.is_alive()
    assert (tmp_path / "cleaned").exists()
    assert future.cancelled()


@pytest.mark.timeout(60)
def test_shutdown_cancel_futures_cancels_a_big_batch_of_submitted_jobs_first(
    client: Any, tmp_path: pathlib.Path
) -> None:
    # Found by a docs-only tester: the cancel went to the workers one job at a time, and
    # the chunks that finished meanwhile gave the futures not reached yet their results
    # (10,000 jobs: the shutdown took 8 s, 7,542 of them completed). Here the first
    # future cancelled lets every job finish: the chunk must have been cancelled before.
    exe = DaskExecutor(client=client, per_worker=300, chunksize=300)
    futures = [exe.submit(_wait_for_release, str(tmp_path), x) for x in range(300)]
    asyncio.run(_wait_for_files(tmp_path, "started-*", 1))
    for future in futures:
        future.add_done_callback(lambda _: (tmp_path / "release-0").touch())
    exe.shutdown(wait=True, cancel_futures=True)
    assert [f for f in futures if not f.cancelled()] == []


def test_submit_from_many_threads(client: Any) -> None:
    threads, each = 8, 25
    barrier = threading.Barrier(threads, timeout=_WAIT)
    with DaskExecutor(client=client, per_worker=20) as exe:

        def submitter(base: int) -> list[concurrent.futures.Future[int]]:
            barrier.wait()
            return [exe.submit(_double, base + i) for i in range(each)]

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            batches = list(pool.map(submitter, range(0, threads * each, each)))
        results = [f.result(_WAIT) for batch in batches for f in batch]
    assert results == [2 * x for x in range(threads * each)]


def test_submit_errors_fail_only_their_future(client: Any) -> None:
    with DaskExecutor(client=client, per_worker=3) as exe:
        futures = [exe.submit(_fails_on_odd, x) for x in range(4)]
        assert futures[0].result(_WAIT) == 0 and futures[2].result(_WAIT) == 2
        with pytest.raises(KeyError, match="odd 1"):
            futures[1].result(_WAIT)


def test_the_initializer_runs_once_per_worker_process(client: Any) -> None:
    with DaskExecutor(client=client, per_worker=3, initializer=_initialize, initargs=(7,)) as exe:
        seen = dict(exe.map(_read_initialised, range(40), chunksize=2))
    assert set(map(tuple, seen.values())) <= {(7,), (7, 7), (7, 7, 7)}
    # once per DaskExecutor and process: earlier tests' executors used no initializer
    assert all(v.count(7) == 1 for v in seen.values())


def _failing_initializer() -> None:
    raise OSError("no database here")


def test_a_failing_initializer_fails_every_job_of_that_process(client: Any) -> None:
    with DaskExecutor(client=client, per_worker=3, initializer=_failing_initializer) as exe:
        errors = list(exe.map(_double, range(6), chunksize=2, return_exceptions=True))
        with pytest.raises(BrokenCoroutineExecutor):
            exe.submit(_double, 1).result(_WAIT)
    assert [type(e) for e in errors] == [BrokenCoroutineExecutor] * 6


def test_job_timeout_applies_per_job(client: Any) -> None:
    async def slow(x: int) -> int:
        await asyncio.Event().wait()
        return x

    with DaskExecutor(client=client, per_worker=3, job_timeout=0.05) as exe:
        [error] = exe.map(slow, [1], return_exceptions=True)
        [retried] = exe.map(slow, [2], return_exceptions=True, retry=Retry(attempts=1))
        submitted = exe.submit(slow, 3).exception(_WAIT)
    assert isinstance(error, TimeoutError)
    # It names the job, not the wrapper that runs it (found by a docs-only tester).
    assert str(error).startswith("job slow(1) ran longer than job_timeout=0.05 s")
    assert str(retried).startswith("job slow(2) ran longer than job_timeout=0.05 s")
    assert str(submitted).startswith("job slow(3) ran longer than job_timeout=0.05 s")


def test_shutdown_cancel_futures_makes_an_open_map_raise_cancelled_error(
    client: Any, tmp_path: pathlib.Path
) -> None:
    exe = DaskExecutor(client=client, per_worker=10)
    results = exe.map(_park, [tmp_path] * 20, range(20), chunksize=2)
    asyncio.run(_wait_for_files(tmp_path, "started-*", WORKERS))
    exe.shutdown(cancel_futures=True)
    with pytest.raises(concurrent.futures.CancelledError):  # as ThreadPoolExecutor's map
        next(results)
    _wait_until_all_cancelled(tmp_path)


@pytest.mark.timeout(60)
def test_a_map_cancelled_by_shutdown_from_another_thread_raises_the_stdlib_error(
    client: Any, tmp_path: pathlib.Path
) -> None:
    # Found by a docs-only tester: next(), waiting, raised dask's FuturesCancelledError
    # (its message lists dask's keys), not concurrent.futures.CancelledError.
    exe = DaskExecutor(client=client, per_worker=10)
    results = exe.map(_park, [tmp_path] * 20, range(20), chunksize=2)

    def shut_down() -> None:  # once next() waits for jobs that wait for ever
        asyncio.run(_wait_for_files(tmp_path, "started-*", WORKERS))
        exe.shutdown(cancel_futures=True)

    shutting_down = threading.Thread(target=shut_down)
    shutting_down.start()
    with pytest.raises(concurrent.futures.CancelledError) as raised:
        next(results)
    shutting_down.join(_WAIT)
    assert type(raised.value) is concurrent.futures.CancelledError
    _wait_until_all_cancelled(tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cancelled", ["before the gather", "after the gather"])
def test_a_shutdown_while_next_takes_a_chunk_in_keeps_its_results(
    client: Any, monkeypatch: pytest.MonkeyPatch, cancelled: str
) -> None:
    # Found by a docs-only tester: shutdown(cancel_futures=True) from another thread while
    # next() took in a chunk that had just come back made next() raise IndexError ("pop
    # from an empty deque") in about one run of five: the shutdown took the chunk out of
    # the map between the two steps, and its outcome was stored all the same. A shutdown
    # just before the gather made it raise dask's FutureCancelledError. Here the shutdown
    # runs, from its own thread, at those points: in the client's gather of the outcome.
    # The chunk had come back and next() was taking it in: its results are yielded (they
    # were cancelled until helper daskfix's fix); no job was cancelled, and none was left.
    exe = DaskExecutor(client=client, per_worker=4)
    gather = client.gather
    stoppers: list[threading.Thread] = []

    def shut_down() -> None:
        stopper = threading.Thread(target=exe.shutdown, kwargs={
            "wait": False, "cancel_futures": True})
        stoppers.append(stopper)
        stopper.start()
        stopper.join(_WAIT)
        assert not stopper.is_alive()

    def gather_with_a_shutdown(futures: Any, *args: Any, **kwargs: Any) -> Any:
        if stoppers:  # only the first gather: later ones pass through
            return gather(futures, *args, **kwargs)
        if cancelled == "before the gather":
            shut_down()
        loaded = gather(futures, *args, **kwargs)
        if not stoppers:
            shut_down()
        return loaded

    monkeypatch.setattr(client, "gather", gather_with_a_shutdown)
    results = exe.map(_double, range(4), chunksize=4)  # one chunk: next() waits for it
    try:
        assert list(results) == [0, 2, 4, 6]
    finally:
        exe.shutdown()
    assert len(stoppers) == 1


@pytest.mark.timeout(60)
def test_a_shutdown_from_a_done_callback_keeps_the_chunk_a_map_takes_in(
    client: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by helper daskfix: a done-callback of a submitted job that calls
    # shutdown(cancel_futures=True) while next() takes in a chunk that has come back
    # turned that chunk's results into a CancelledError. The submitted job ends once the
    # map's gather has its chunk; the map's gather returns once the callback has shut
    # the executor down, from dask's callback thread.
    exe = DaskExecutor(client=client, per_worker=4)
    shut = threading.Event()
    job = exe.submit(_wait_for_release, str(tmp_path), 1)
    job.add_done_callback(lambda _: (exe.shutdown(wait=False, cancel_futures=True), shut.set()))
    gather = client.gather

    def gather_then_wait(futures: Any, *args: Any, **kwargs: Any) -> Any:
        loaded = gather(futures, *args, **kwargs)
        if not shut.is_set():
            (tmp_path / "release-0").touch()
            assert shut.wait(_WAIT)
        return loaded

    results = exe.map(_double, range(4), chunksize=4)  # one chunk: next() waits for it
    monkeypatch.setattr(client, "gather", gather_then_wait)
    try:
        assert list(results) == [0, 2, 4, 6]  # (every input was sent: none was cancelled)
    finally:
        exe.shutdown()
    assert job.result(_WAIT) == 1


@pytest.mark.parametrize(("timeout", "error"), [
    (float("inf"), OverflowError), (1e300, OverflowError),
    (float("nan"), concurrent.futures.TimeoutError),
])
def test_a_map_timeout_a_wait_cannot_take_raises_as_the_stdlib_map(
    client: Any, tmp_path: pathlib.Path, timeout: float, error: type[Exception]
) -> None:
    # Found by a docs-only tester: dask's KeyError ("Invalid time unit: inf") from next().
    with ThreadPoolExecutor(1) as pool, pytest.raises(error):  # the stdlib's, LoopExecutor's
        list(pool.map(time.sleep, [0.01], timeout=timeout))
    with DaskExecutor(client=client, per_worker=10) as exe:
        results = exe.map(_park, [tmp_path], [1], timeout=timeout)
        asyncio.run(_wait_for_files(tmp_path, "started-*", 1))  # next() has to wait for it
        with pytest.raises(error):
            next(results)
    _wait_until_all_cancelled(tmp_path)


def _wait_for_chunks_back(results: Iterator[Any], chunks: int) -> None:
    """Until dask has the map's first chunks in flight done (bounded), as for a caller
    who sleeps before reading; the map has not taken their outcomes in yet."""
    slots = list(results._run._slots)[:chunks]  # type: ignore[attr-defined]
    assert len(slots) == chunks and all(slot.outcome is None for slot in slots)
    distributed.wait([slot.task for slot in slots], timeout=_WAIT)


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 1e300, 0.0, -1.0])
def test_a_map_timeout_raises_only_where_next_would_wait(client: Any, timeout: float) -> None:
    # Found by a docs-only tester: next() raised TimeoutError or OverflowError at once,
    # although every result was back long before, where the stdlib's map returns them
    # (its result(timeout) of a done future): the deadline was checked before the
    # outcomes already back were taken in.
    with ThreadPoolExecutor(4) as pool:
        done = pool.map(_double_blocking, range(4), timeout=timeout)
    assert list(done) == [0, 2, 4, 6]  # every future done at the block's end
    with DaskExecutor(client=client, per_worker=4) as exe:
        results = exe.map(_double, range(4), chunksize=1, buffersize=4, timeout=timeout)
        _wait_for_chunks_back(results, 4)
        assert list(results) == [0, 2, 4, 6]


@pytest.mark.parametrize(("timeout", "error"), [
    (float("inf"), OverflowError), (float("nan"), concurrent.futures.TimeoutError),
    (0.0, concurrent.futures.TimeoutError),
])
def test_a_map_timeout_yields_the_results_back_then_raises_where_it_would_wait(
    client: Any, tmp_path: pathlib.Path, timeout: float, error: type[Exception]
) -> None:
    with DaskExecutor(client=client, per_worker=4) as exe:
        results = exe.map(_park_after_first, [str(tmp_path)] * 2, range(2), chunksize=1,
                          buffersize=2, timeout=timeout)
        asyncio.run(_wait_for_files(tmp_path, "started-*", 1))  # input 1 parks for ever
        _wait_for_chunks_back(results, 1)
        assert next(results) == 0
        with pytest.raises(error):
            next(results)
    _wait_until_all_cancelled(tmp_path)


def test_a_map_open_at_shutdown_yields_the_chunks_in_flight(client: Any) -> None:
    with DaskExecutor(client=client, per_worker=3) as exe:
        whole = exe.map(_double, range(8), chunksize=2, buffersize=8)
        cut = exe.map(_double, range(20), chunksize=2, buffersize=8)
    assert list(whole) == [2 * x for x in range(8)]  # the stdlib idiom: read after the block
    read = []
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        for value in cut:  # the window in flight at shutdown, then no more
            read.append(value)
    assert read == [2 * x for x in range(8)]


@pytest.mark.parametrize("own_client", [False, True])
def test_calls_after_shutdown_raise(client: Any, own_client: bool) -> None:
    if own_client:  # its client is closed by then
        exe = DaskExecutor(client.scheduler.address, per_worker=3)
    else:
        exe = DaskExecutor(client=client, per_worker=3)
    exe.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        exe.submit(_double, 1)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        exe.map(_double, [1])
    # Found by a docs-only tester: once its own client was closed, repr() raised
    # AttributeError (the client forgets its scheduler).
    assert repr(exe) == (f"<DaskExecutor shut down per_worker=3"
                         f" scheduler={client.scheduler.address}>")


def test_a_submit_right_after_shutdown_without_wait_is_refused(client: Any) -> None:
    # Found by a docs-only tester: the job was accepted, and ran, until the closing thread
    # had closed the batcher. Each round is a fresh race: the bug lost most of them.
    for _ in range(10):
        exe = DaskExecutor(client=client, per_worker=3)
        exe.shutdown(wait=False)
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            exe.submit(_double, 1)
        exe.shutdown()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("how", "first_from"), [
    ("shutdown(wait=True)", "this thread"), ("a with block", "this thread"),
    ("a with block", "another thread"),
])
def test_a_later_shutdown_waits_for_the_work_of_a_shutdown_without_wait(
    client: Any, tmp_path: pathlib.Path, how: str, first_from: str
) -> None:
    # Found by a docs-only tester: the second call returned at once, the job still running.
    exe = DaskExecutor(client=client, per_worker=2)
    future = exe.submit(_wait_for_release, str(tmp_path), 1)
    asyncio.run(_wait_for_files(tmp_path, "started-*", 1))
    if first_from == "another thread":
        first = threading.Thread(target=exe.shutdown, kwargs={"wait": False})
        first.start()
        first.join(_WAIT)
    else:
        exe.shutdown(wait=False)
    done_at_return: list[bool] = []

    def shut_down() -> None:
        if how == "a with block":
            with exe:
                pass
        else:
            exe.shutdown(wait=True)
        done_at_return.append(future.done())

    waiter = threading.Thread(target=shut_down)
    waiter.start()
    waiter.join(0.5)  # only lets the bug show: the call returned at once, the job running
    (tmp_path / "release-0").touch()
    waiter.join(_WAIT)
    assert not waiter.is_alive()
    assert done_at_return == [True]
    assert future.result(0) == 1


@pytest.mark.timeout(60)
def test_an_open_map_sends_no_more_chunks_after_shutdown_with_a_submit_pending(
    client: Any, tmp_path: pathlib.Path
) -> None:
    # Found by a docs-only tester: while the shutdown waited for the submitted job, the
    # map went on sending chunks.
    exe = DaskExecutor(client=client, per_worker=2)
    results = exe.map(_double, range(40), chunksize=2, buffersize=4)  # 4 jobs in flight
    future = exe.submit(_wait_for_release, str(tmp_path), 1)
    exe.shutdown(wait=False)
    read = []
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        for value in results:
            read.append(value)
    assert read == [0, 2, 4, 6]
    (tmp_path / "release-0").touch()
    exe.shutdown(wait=True)
    assert future.result(0) == 1


# asyncio's debug mode (-X dev reaches dask's own loop) logs a callback that ran long; on
# a loaded machine dask's loop has some: "Executing <Task ...> took 0.103 seconds".
_SLOW_CALLBACK = re.compile(r"^Executing <.*> took \d+\.\d+ seconds\n?", re.MULTILINE)


def _stderr(done: subprocess.CompletedProcess[str]) -> str:
    """A child's stderr without asyncio's slow-callback lines, and nothing else removed."""
    return _SLOW_CALLBACK.sub("", done.stderr)


# What an exit that went wrong writes: a thread of ours or dask's cut off, or refused by
# the stdlib's pools or by Python 3.12, an executor not closed, or a closing given up on.
# Not "Traceback": dask logs some of its own while a cluster closes under load (a worker's
# heartbeat, "Batched Comm Closed"), whoever closes it.
_EXIT_FAILURES = ("Exception in thread", "cannot schedule new futures",
                  "can't create new thread", "could not shut down", "still closing")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cancel", [False, True])
def test_the_interpreter_exits_cleanly_after_shutdown_without_wait(cancel: bool) -> None:
    # On a LocalCluster of its own, as a script would: the closing thread was cut off
    # ("cannot schedule new futures after interpreter shutdown", "never retrieved"). Then,
    # on 3.12, which starts no thread once the exit has begun, the exit hung: the job's
    # result waited for dask's callback thread, which could not start.
    code = (
        "import asyncio, sys\n"
        "from coroexecutor.distributed import DaskExecutor\n"
        "async def job(x):\n"
        "    await asyncio.sleep(0.5)\n"
        "    return x\n"
        "if __name__ == '__main__':\n"
        "    exe = DaskExecutor(n_workers=1, per_worker=4)\n"
        "    f = exe.submit(job, 1)\n"
        "    exe.shutdown(wait=False, cancel_futures=sys.argv[1] == 'True')\n"
        "    print('main ends', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", code, str(cancel)],
        capture_output=True, text=True, timeout=100,
    )
    stderr = _stderr(done)
    assert done.returncode == 0, stderr
    assert "main ends" in done.stdout
    for sign in (*_EXIT_FAILURES, "never retrieved"):
        assert sign not in stderr, stderr


@pytest.mark.timeout(120)
def test_the_interpreter_exit_waits_for_a_closing_with_a_bound() -> None:
    # A job that never ends, after shutdown(wait=False): the exit waits for it as the
    # stdlib's pools do, but not for ever (a dask that needs what the exit no longer gives,
    # a thread on 3.12, also never ends). The bound is cut to a second here.
    code = (
        "import time\n"
        "from coroexecutor.distributed import DaskExecutor, _exit\n"
        "_exit.EXIT_TIMEOUT = 1.0\n"
        "def forever(x):\n"
        "    time.sleep(3600)\n"
        "if __name__ == '__main__':\n"
        "    exe = DaskExecutor(n_workers=1, per_worker=2)\n"
        "    f = exe.submit(forever, 1)\n"
        "    exe.shutdown(wait=False)\n"
        "    print('main ends', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=100
    )
    stderr = _stderr(done)
    assert done.returncode == 0, stderr
    assert "main ends" in done.stdout
    assert "1 DaskExecutor(s) still closing after 1 seconds at interpreter exit" in stderr, stderr


@pytest.mark.timeout(60)
def test_shutdown_from_a_done_callback_of_a_future_it_cancels_returns(
    client: Any, tmp_path: pathlib.Path
) -> None:
    # The callback runs in the thread that cancels, inside shutdown(): a shutdown(wait=True)
    # there would wait for itself.
    exe = DaskExecutor(client=client, per_worker=2)
    future = exe.submit(_wait_for_release, str(tmp_path), 1)
    asyncio.run(_wait_for_files(tmp_path, "started-*", 1))
    called: list[bool] = []
    future.add_done_callback(lambda f: called.append(exe.shutdown() is None))
    shutting_down = threading.Thread(target=exe.shutdown, kwargs={"cancel_futures": True})
    shutting_down.start()
    shutting_down.join(_WAIT)
    assert not shutting_down.is_alive()
    assert called == [True] and future.cancelled()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("wait", [True, False])
def test_shutdown_from_a_result_s_done_callback_keeps_the_results_that_came_back(
    client: Any, monkeypatch: pytest.MonkeyPatch, wait: bool
) -> None:
    # Found by helper daskfix: the futures of a chunk are resolved one after the other,
    # and a shutdown(cancel_futures=True) from the first one's done-callback cancelled
    # the others, whose results had come back with it. One chunk of three: it leaves
    # when the third job is submitted, never on the delay.
    monkeypatch.setattr("coroexecutor.distributed._executor._SUBMIT_DELAY", 3600.0)
    exe = DaskExecutor(client=client, per_worker=4, chunksize=3)
    try:
        first = exe.submit(_double, 1)
        first.add_done_callback(lambda _: exe.shutdown(wait=wait, cancel_futures=True))
        others = [exe.submit(_double, x) for x in (2, 3)]
        assert [f.result(_WAIT) for f in others] == [4, 6]
        assert first.result(_WAIT) == 2
    finally:
        exe.shutdown()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("wait", "cancel_futures"), [(True, False), (True, True), (False, True)])
def test_shutdown_from_a_done_callback_of_a_job_that_could_not_be_sent_returns(
    client: Any, caplog: pytest.LogCaptureFixture, wait: bool, cancel_futures: bool
) -> None:
    # Found by helper daskfix: the future of a job whose chunk cannot be pickled fails on
    # the flusher thread, and runs its done-callbacks there. A shutdown(wait=True) from
    # one waited for the closing, which waited for the flusher thread: a hang; and with
    # cancel_futures the shutdown joined its own thread ("cannot join current thread",
    # logged as a failing callback).
    exe = DaskExecutor(client=client, per_worker=2)
    returned = threading.Event()
    try:
        future = exe.submit(_double, threading.Lock())  # type: ignore[arg-type]  # unpicklable
        future.add_done_callback(lambda _: (
            exe.shutdown(wait=wait, cancel_futures=cancel_futures), returned.set()))
        assert returned.wait(_WAIT)
        assert isinstance(future.exception(_WAIT), TypeError)
    finally:
        exe.shutdown()
    assert [r.getMessage() for r in caplog.records if r.name == "concurrent.futures"] == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cancel_futures", [False, True])
def test_a_shutdown_with_jobs_pending_logs_nothing(
    client: Any, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, cancel_futures: bool
) -> None:
    # docs/distributed.rst, "Logging", lists every record of the executor's own: none comes
    # from a shutdown, whatever it leaves pending (submitted jobs, an open map).
    caplog.set_level(logging.DEBUG, logger="coroexecutor")
    exe = DaskExecutor(client=client, per_worker=2)
    futures = [exe.submit(_wait_for_release, str(tmp_path), x) for x in range(4)]
    results = exe.map(_wait_for_release, [str(tmp_path)] * 8, range(8), chunksize=2)
    asyncio.run(_wait_for_files(tmp_path, "started-*", 1))
    if not cancel_futures:  # the shutdown waits for them
        (tmp_path / "release-0").touch()
    exe.shutdown(cancel_futures=cancel_futures)
    assert all(f.done() for f in futures)
    results.close()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("coroexecutor")] == []


@pytest.mark.timeout(120)
def test_a_second_ctrl_c_while_the_with_block_exits_does_not_hang(
    tmp_path: pathlib.Path,
) -> None:
    # Found by a docs-only tester: the second Ctrl-C cut LocalCluster.close() in two, and
    # the close that followed waited for the first one for ever. Each Ctrl-C waits for
    # what it must interrupt: the first for a job running in the map, the second for the
    # cluster's close to have begun (its status says so; it then waits seconds for the
    # worker, whose blocking job runs on).
    code = (
        "import os, pathlib, signal, sys, threading, time\n"
        "from distributed.core import Status\n"
        "from coroexecutor.distributed import DaskExecutor\n"
        "folder = pathlib.Path(sys.argv[1])\n"
        "def blocking(x):\n"
        "    (folder / f'started-{x}').touch()\n"
        "    time.sleep(6)\n"
        "    return x\n"
        "def say(what):\n"
        "    print(what, flush=True)\n"
        "def wait_until(ready):\n"
        "    deadline = time.monotonic() + 60\n"
        "    while not ready() and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "    return bool(ready())\n"
        "def ctrl_c_twice(cluster):\n"
        "    say(f'job started: {wait_until(lambda: list(folder.glob(\"started-*\")))}')\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # while map waits\n"
        "    say(f'cluster closing: {wait_until(lambda: cluster.status is Status.closing)}')\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # while the with block exits\n"
        "if __name__ == '__main__':\n"
        "    # Started in the background (as CI starts tox), a process inherits SIGINT as\n"
        "    # ignored: os.kill() then did nothing, and the map simply ran to its end.\n"
        "    signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "    try:\n"
        "        with DaskExecutor(n_workers=1, per_worker=2) as exe:\n"
        "            threading.Thread(target=ctrl_c_twice, args=(exe.client.cluster,),\n"
        "                             daemon=True).start()\n"
        "            say(f'map returned {list(exe.map(blocking, range(4), chunksize=2))}')\n"
        "    except KeyboardInterrupt:\n"
        "        say('KeyboardInterrupt out of the with block')\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code, str(tmp_path)],
        capture_output=True, text=True, timeout=100,
    )
    # (What the child printed says how far it got.)
    stderr = _stderr(done)
    assert done.returncode == 0, (done.stdout, stderr)
    assert done.stdout.splitlines() == [
        "job started: True", "cluster closing: True", "KeyboardInterrupt out of the with block"
    ], (done.stdout, stderr)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("waiting_in", ["the exit", "future.result()"])
def test_a_sigint_from_another_thread_interrupts_the_main_thread_s_wait(
    tmp_path: pathlib.Path, waiting_in: str
) -> None:
    # Found by a docs-only tester: Python runs a signal's handler in the main thread, and
    # the exit waited in one uninterruptible lock wait: the Ctrl-C came only once the
    # jobs had ended by themselves. The job here runs 20 s unless cancelled.
    code = (
        "import asyncio, pathlib, signal, sys, threading, time\n"
        "from coroexecutor.distributed import DaskExecutor\n"
        "folder = pathlib.Path(sys.argv[1])\n"
        "async def job(x):\n"
        "    (folder / 'started').touch()\n"
        "    await asyncio.sleep(20)\n"
        "    return x\n"
        "def ctrl_c():\n"
        "    deadline = time.monotonic() + 60\n"
        "    while not (folder / 'started').exists() and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "    signal.raise_signal(signal.SIGINT)  # in this thread, not the main one\n"
        "if __name__ == '__main__':\n"
        "    signal.signal(signal.SIGINT, signal.default_int_handler)  # (see above)\n"
        "    try:\n"
        "        with DaskExecutor(n_workers=1, per_worker=2) as exe:\n"
        "            future = exe.submit(job, 1)\n"
        "            threading.Thread(target=ctrl_c, daemon=True).start()\n"
        "            if sys.argv[2] == 'future.result()':\n"
        "                future.result()\n"
        "    except KeyboardInterrupt:\n"
        "        print(f'KeyboardInterrupt, cancelled: {future.cancelled()}', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code, str(tmp_path), waiting_in],
        capture_output=True, text=True, timeout=100,
    )
    stderr = _stderr(done)
    assert done.returncode == 0, (done.stdout, stderr)
    assert done.stdout.splitlines() == ["KeyboardInterrupt, cancelled: True"], (done.stdout, stderr)


def test_bad_arguments_are_refused_at_the_call(client: Any) -> None:
    with pytest.raises(ValueError, match="per_worker must be greater than 0"):
        DaskExecutor(client=client, per_worker=0)
    # No worker at all: no job would ever run, and the exit would wait for them for ever
    # (found by a docs-only tester). Refused before any cluster starts.
    with pytest.raises(ValueError, match=re.escape("n_workers must be greater than 0 (got 0)")):
        DaskExecutor(n_workers=0)
    with pytest.raises(TypeError, match=re.escape("n_workers must be an int (got 1.5)")):
        DaskExecutor(n_workers=1.5)  # type: ignore[arg-type]  # the mistake under test
    # Found by a docs-only tester: ignored, the cluster had the workers it had.
    for where in ({"client": client}, {"address": client.scheduler.address}):
        with pytest.raises(ValueError, match=re.escape(
            "n_workers applies only to the LocalCluster the executor starts without an"
            " address or a client (got n_workers=2)"
        )):
            DaskExecutor(**where, n_workers=2)
    # A misspelt switch ("no") must not pass as true (found by a docs-only tester).
    with pytest.raises(TypeError, match=re.escape("suppress_task_errors must be True or False")):
        DaskExecutor(client=client, suppress_task_errors="no")  # type: ignore[arg-type]
    # A positive rate whose spacing 1/rate overflows: no job after the first (brk20).
    with pytest.raises(ValueError, match=re.escape(
        "max_per_second must be large enough that 1/max_per_second is finite (got 1e-320)"
    )):
        DaskExecutor(client=client, max_per_second=1e-320)
    with DaskExecutor(client=client, per_worker=3) as exe:
        coro = _double(1)
        with pytest.raises(TypeError, match="not a coroutine object"):
            exe.submit(coro)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=re.escape("return_exceptions must be True or False")):
            exe.map(_double, [1], return_exceptions="no")  # type: ignore[call-overload]
        # brk25 F1: the message named no job ("cannot send the jobs of inputs 0..1"): it
        # names the first that cannot be pickled, or the function that cannot.
        lock = threading.Lock()
        with pytest.raises(TypeError, match=re.escape(
            f"cannot send job _double({lock!r}) of input 1 to the workers: TypeError:"
            " cannot pickle '_thread.lock' object"
        )):
            exe.map(_double, [1, lock])
        with pytest.raises(TypeError, match=r"cannot send the function <\S+\._LockedPolicy"
                           r" object at 0x\w+> of map\(\) to the workers: TypeError"):
            exe.map(_LockedPolicy(), [1, 2])
        # An async generator function ran on the workers, and then its generator could not
        # come back (UnsentOutcomeError): refused at the call, as on the bridge.
        with pytest.raises(TypeError, match="not an async generator function"):
            exe.submit(_countdown, 1)
        with pytest.raises(TypeError, match="not an async generator function"):
            exe.map(_countdown, [1])


@pytest.mark.timeout(60)
def test_an_input_that_cannot_be_pickled_past_the_first_window_comes_in_its_place(
    client: Any,
) -> None:
    """Regression (dchunk's note on brk25 F1): the TypeError of a chunk that could not be
    sent came from the next() that read the chunk before it, whose results were lost; it
    comes where its own results would be, after every result before it."""
    lock = threading.Lock()
    with DaskExecutor(client=client, per_worker=3) as exe:
        it = exe.map(_double, [1, 2, 3, lock, 5], chunksize=1, buffersize=1)
        assert [next(it), next(it), next(it)] == [2, 4, 6]
        with pytest.raises(TypeError, match=re.escape(
            f"cannot send job _double({lock!r}) of input 3 to the workers"
        )):
            next(it)
        with pytest.raises(StopIteration):
            next(it)
        # In map()'s own first window: raised by map() itself, as before.
        with pytest.raises(TypeError, match="of input 1 to the workers"):
            exe.map(_double, [1, lock], chunksize=1, buffersize=2)
        assert list(exe.map(_double, [7])) == [14]  # the executor goes on


@pytest.mark.timeout(60)
def test_a_client_of_the_wrong_kind_or_state_is_refused_at_the_call(client: Any) -> None:
    # Found by a docs-only tester: each gave an AttributeError, or (asynchronous) jobs
    # that all failed with a misleading error and a never-awaited warning.
    for wrong in ("tcp://127.0.0.1:8786", 8786, client.cluster):
        with pytest.raises(TypeError, match=re.escape(
            f"client must be a distributed.Client (got {wrong!r})"
        )):
            DaskExecutor(client=wrong)
    closed = distributed.Client(client.scheduler.address)
    closed.close()
    with pytest.raises(RuntimeError, match="client is closed"):
        DaskExecutor(client=closed)

    async def with_an_asynchronous_client() -> None:
        async with distributed.Client(client.scheduler.address, asynchronous=True) as async_client:
            with pytest.raises(ValueError, match="client must be a synchronous Client"):
                DaskExecutor(client=async_client)

    asyncio.run(with_an_asynchronous_client())


def _not_a_loop() -> Any:
    return 42


def _no_loop_for_you() -> Any:
    raise OSError("no loop for you")


@pytest.mark.timeout(60)
def test_a_loop_factory_that_makes_no_loop_fails_the_jobs_with_a_clear_error(
    client: Any,
) -> None:
    # Found by a docs-only tester: 42 was taken for a loop, then AttributeError, thread
    # tracebacks and never-awaited warnings on the workers.
    with DaskExecutor(client=client, per_worker=3, loop_factory=_not_a_loop) as exe:
        message = re.escape("loop_factory must return an event loop (got 42)")
        with pytest.raises(TypeError, match=message):
            list(exe.map(_double, range(4), chunksize=2))
        with pytest.raises(TypeError, match=message):
            exe.submit(_double, 1).result(_WAIT)
    with DaskExecutor(client=client, per_worker=3, loop_factory=_no_loop_for_you) as exe:
        failed = exe.submit(_double, 1).exception(_WAIT)
    assert isinstance(failed, OSError) and str(failed) == "no loop for you"


async def _countdown(n: int) -> Any:
    yield n


def test_async_with(client: Any) -> None:
    async def main() -> list[int]:
        async with DaskExecutor(client=client, per_worker=3) as exe:
            return list(exe.map(_double, range(3)))

    assert asyncio.run(main()) == [0, 2, 4]


def test_cancelling_the_wait_in_async_with_exit_cancels_the_jobs_and_returns(
    client: Any, tmp_path: pathlib.Path
) -> None:
    futures: list[concurrent.futures.Future[int]] = []

    async def block(leaving: asyncio.Event) -> None:
        async with DaskExecutor(client=client, per_worker=10) as exe:
            futures.extend(exe.submit(_park, tmp_path, x) for x in range(4))
            await _wait_for_files(tmp_path, "started-*", 1)
            leaving.set()
        # leaving normally: __aexit__ waits for the parked jobs, until cancelled

    async def main() -> None:
        leaving = asyncio.Event()
        task = asyncio.ensure_future(block(leaving))
        await leaving.wait()  # the task ran on into __aexit__'s wait
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    done, _ = concurrent.futures.wait(futures, timeout=_WAIT)  # every waiter is woken
    assert len(done) == 4 and all(f.cancelled() for f in futures)
    _wait_until_all_cancelled(tmp_path)


@pytest.mark.timeout(120)
def test_a_long_generator_runs_in_bounded_client_memory(client: Any) -> None:
    # 400,000 items: the client's peak is about 2 MB (3.11) from 100,000 to 1,000,000
    # items alike.
    n = 400_000
    # A loop without asyncio debug mode in the workers (-X dev reaches them): this test is
    # about the client's memory, and debug mode makes each job cost ten times more.
    with DaskExecutor(client=client, per_worker=1000, loop_factory=_quiet_loop) as exe:
        tracemalloc.start()
        try:
            count = sum(1 for _ in exe.map(_noop, (i for i in range(n)), chunksize=5_000))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == n
    # The results alone, as a list, would take 8 bytes an item (3.2 MB) on top of that
    # peak; the inputs as a list 14 MB. (The peak is nearer 3.2 MB on Python 3.10.)
    assert peak < 5_000_000, peak


async def _noop(x: int) -> None:
    return None


def _quiet_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_debug(False)
    return loop


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_map_leaves_every_result_delivered_once(
    client: Any, tmp_path: pathlib.Path, dask_restarts_a_worker: None
) -> None:
    flag = str(tmp_path / "killed")
    with DaskExecutor(client=client, per_worker=5) as exe:
        results = list(exe.map(_kill_once, [flag] * 40, range(40), chunksize=4))
    assert results == list(range(40))
    assert os.path.exists(flag)
    client.wait_for_workers(WORKERS, timeout=60)  # the restarted worker's threads are up


def _kill_at_5(x: int) -> int:
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _no_second_chance(dask_scheduler: Any, allowed: int) -> int:
    """On the scheduler: how many worker deaths a task may see before it fails with
    KilledWorker (dask's ``allowed-failures``); returns the old value."""
    old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, allowed
    return int(old)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["map", "submit"])
def test_a_chunk_lost_with_its_worker_names_the_jobs_it_stood_for(
    client: Any, dask_restarts_a_worker: None, how: str
) -> None:
    # Found by a review: a KilledWorker came with no note, where a job's own error names
    # its input. Every job of the chunk gets the one KilledWorker object, so the note
    # names the chunk's inputs (no rerun here: allowed-failures 0).
    old = client.run_on_scheduler(_no_second_chance, allowed=0)
    try:
        with DaskExecutor(client=client, per_worker=2) as exe:
            if how == "map":
                results = list(exe.map(_kill_at_5, range(12), chunksize=4,
                                       return_exceptions=True))
                error = results[5]
                assert all(results[i] is error for i in (4, 6, 7))  # one chunk: one object
                expected = "raised for inputs 4 to 7 of a DaskExecutor map"
            else:
                error = exe.submit(_kill_at_5, 5).exception(_WAIT * 4)
                expected = "raised for the job submitted to a DaskExecutor"
    finally:
        client.run_on_scheduler(_no_second_chance, allowed=old)
        client.wait_for_workers(WORKERS, timeout=60)  # the restarted worker's threads are up
    assert type(error).__name__ == "KilledWorker"
    if sys.version_info >= (3, 11):
        ours = [n for n in error.__notes__ if "DaskExecutor" in n]
        assert ours == [f"{expected}: their chunk's dask task failed as a whole"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["close()", "shutdown(cancel_futures=True)", "an exception"])
def test_cancelling_right_after_a_worker_died_raises_nothing(
    client: Any, tmp_path: pathlib.Path, dask_restarts_a_worker: None, how: str
) -> None:
    # Found by a docs-only tester: the cancellation sent to every worker (client.run)
    # raised CommClosedError for the dead one, in place of the user's exception.
    pids = list(client.run(os.getpid).values())
    expected = KeyError if how == "an exception" else concurrent.futures.CancelledError
    with pytest.raises(expected), DaskExecutor(client=client, per_worker=5) as exe:
        results = exe.map(_park, [tmp_path] * 8, range(8), chunksize=2)
        asyncio.run(_wait_for_files(tmp_path, "started-*", WORKERS))
        os.kill(pids[0], signal.SIGKILL)
        if how == "close()":
            results.close()
            raise concurrent.futures.CancelledError  # closed without raising
        if how == "shutdown(cancel_futures=True)":
            exe.shutdown(cancel_futures=True)
            next(results)
        raise KeyError("the user's own")
    client.wait_for_workers(WORKERS, timeout=60)  # the restarted worker's threads are up


@pytest.mark.parametrize("left_open", ["a map", "a submit"])
def test_the_interpreter_exits_with_an_executor_forgotten_mid_flight(
    client: Any, left_open: str
) -> None:
    code = (
        "import asyncio, sys\n"
        "from coroexecutor.distributed import DaskExecutor\n"
        "async def job(x):\n"
        "    await asyncio.Event().wait()\n"
        "if sys.argv[2] == 'a map':  # on a LocalCluster of its own, as a script would\n"
        "    exe = DaskExecutor(n_workers=1, per_worker=4)\n"
        "else:\n"
        "    exe = DaskExecutor(sys.argv[1], per_worker=4)\n"
        "if sys.argv[2] == 'a map':\n"
        "    it = exe.map(job, range(50), chunksize=5)\n"
        "else:\n"
        "    f = exe.submit(job, 1)\n"
        "print('main ends', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code, client.scheduler.address, left_open],
        capture_output=True, text=True, timeout=60,
    )
    stderr = _stderr(done)
    assert done.returncode == 0, stderr
    assert "main ends" in done.stdout
    # (On 3.12 the exit's closing thread could not start: "can't create new thread".)
    for sign in _EXIT_FAILURES:
        assert sign not in stderr, stderr


#
# retry=
#

_ATTEMPTS: dict[tuple[str, int], int] = {}  # per worker process: (token, input) -> attempts


async def _fails_twice(token: str, x: int) -> int:
    """Fails its first two attempts with a retryable error. Every attempt of a job runs
    in the job's one task, in one process: a global counts them."""
    key = (token, x)
    _ATTEMPTS[key] = _ATTEMPTS.get(key, 0) + 1
    if _ATTEMPTS[key] <= 2:
        raise ConnectionError(f"attempt {_ATTEMPTS[key]} of {x}")
    return x


def _fails_twice_blocking(token: str, x: int) -> int:
    return asyncio.run(_fails_twice(token, x))


def _always_fails(x: int) -> int:
    raise ConnectionError(f"input {x} is down")


async def _pauses_or_marks(folder: str, x: int) -> int:
    """Input 0 fails (its policy then pauses it for a minute); input 1 leaves a file."""
    directory = pathlib.Path(folder)
    if x == 0:
        (directory / f"attempt-{os.getpid()}-{os.urandom(4).hex()}").touch()
        raise ConnectionError("input 0 fails")
    (directory / f"ran-{os.getpid()}-{x}").touch()
    return x


class _LockedPolicy:
    """A policy that cannot travel to the workers: it holds a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, attempt: int, exc: BaseException) -> float:
        return 0.0


_AT_ONCE = Retry(attempts=3, backoff=0, max_backoff=0, jitter=False)


@pytest.mark.parametrize("fn", [_fails_twice, _fails_twice_blocking])
def test_retry_reruns_failed_jobs_on_the_workers(client: Any, fn: Any) -> None:
    token = os.urandom(8).hex()
    with DaskExecutor(client=client, per_worker=3, retry=_AT_ONCE) as exe:
        assert list(exe.map(fn, [token] * 20, range(20), chunksize=4)) == list(range(20))
        assert exe.submit(fn, token, 100).result(_WAIT) == 100


def test_a_map_s_own_retry_replaces_the_executor_s(client: Any) -> None:
    token = os.urandom(8).hex()
    with DaskExecutor(client=client, per_worker=3) as exe:
        assert list(exe.map(_fails_twice, [token] * 6, range(6), retry=_AT_ONCE)) == list(range(6))
    with DaskExecutor(client=client, per_worker=3, retry=_AT_ONCE) as exe:
        [error] = exe.map(_fails_twice, [token + "x"], [0], retry=None, return_exceptions=True)
    assert isinstance(error, ConnectionError) and str(error) == "attempt 1 of 0"


def test_giving_up_raises_the_last_error_noted_with_the_attempts(client: Any) -> None:
    with DaskExecutor(client=client, per_worker=3, retry=_AT_ONCE) as exe:
        results = exe.map(_always_fails, range(10), chunksize=5)
        with pytest.raises(ConnectionError, match="input 0 is down") as caught:
            next(results)
    if sys.version_info >= (3, 11):
        assert caught.value.__notes__ == [
            "raised by input 0 of a DaskExecutor map: _always_fails(0), failed after 3 attempts"
        ]


def test_a_paused_job_gives_its_slot_back_and_leaving_the_map_ends_its_pause(
    client: Any, tmp_path: pathlib.Path
) -> None:
    a_minute = Retry(attempts=2, backoff=60.0, max_backoff=60.0, jitter=False)
    with DaskExecutor(client=client, per_worker=1, retry=a_minute) as exe:
        # One chunk, one slot per process: input 1 runs only in the slot input 0 gave back.
        results = exe.map(_pauses_or_marks, [str(tmp_path)] * 2, range(2), chunksize=2)
        deadline = time.monotonic() + _WAIT
        while not list(tmp_path.glob("ran-*")):
            assert time.monotonic() < deadline, "input 1 never ran during input 0's pause"
            time.sleep(0.01)
        results.close()  # type: ignore[attr-defined]  # ends the pause: no second attempt
    assert len(list(tmp_path.glob("attempt-*"))) == 1


def _schedule_ran_out(attempt: int, exc: BaseException) -> float:
    raise StopIteration  # as next(schedule) does in a policy once its schedule has run out


async def _fails_async(x: int) -> int:
    raise ConnectionError(f"input {x} is down")


@pytest.mark.parametrize("fn", [_fails_async, _always_fails])
def test_a_policy_raising_stop_iteration_fails_the_job_with_a_runtime_error(
    client: Any, fn: Any
) -> None:
    # Made where the policy is called, the attempt's error its __context__; left to PEP
    # 479, the job's coroutine made one of its own, the StopIteration its __context__.
    stopped = r"^retry policy <function _schedule_ran_out at 0x\w+> raised StopIteration$"
    with DaskExecutor(client=client, per_worker=2, retry=_schedule_ran_out) as exe:
        errors = [exe.submit(fn, 0).exception(_WAIT)]
        errors += exe.map(fn, [1, 2], return_exceptions=True)
    for x, error in enumerate(errors):
        assert type(error) is RuntimeError and re.match(stopped, str(error)), error
        assert type(error.__cause__) is StopIteration
        assert type(error.__context__) is ConnectionError
        assert str(error.__context__) == f"input {x} is down"


def _stops_blocking(x: int) -> int:
    if x == 2:
        raise StopIteration(f"no more ({x})")  # a stray next() on an exhausted iterator
    return x


def test_a_blocking_job_raising_stop_iteration_fails_with_it(client: Any) -> None:
    # asyncio.wrap_future() could not put the StopIteration into the future the worker's
    # job awaited (a TypeError logged in a callback): the job never ended, so its future,
    # its map and the executor's exit waited for ever.
    with DaskExecutor(client=client, per_worker=2) as exe:
        error = exe.submit(_stops_blocking, 2).exception(_WAIT)
        results = list(exe.map(_stops_blocking, range(4), return_exceptions=True, timeout=_WAIT))
    assert type(error) is StopIteration and str(error) == "no more (2)"
    assert error.__notes__ == ["raised by a job submitted to a DaskExecutor: _stops_blocking(2)"]
    assert results[:2] == [0, 1] and results[3] == 3
    assert type(results[2]) is StopIteration
    assert results[2].__notes__ == ["raised by input 2 of a DaskExecutor map: _stops_blocking(2)"]


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map_raises_a_runtime_error_for_a_blocking_job_s_stop_iteration(
    client: Any, chunksize: int
) -> None:
    # Raised as is in the map's generator, PEP 479 made it a RuntimeError without the note
    # naming the input (and, from a plain iterator, it would have ended the for loop).
    got: list[int] = []
    with DaskExecutor(client=client, per_worker=2) as exe, pytest.raises(RuntimeError) as raised:
        for result in exe.map(_stops_blocking, range(4), chunksize=chunksize, timeout=_WAIT):
            got.append(result)
    assert got == [0, 1]
    error = raised.value
    assert re.match(r"^job raised StopIteration, which an iterator of results cannot", str(error))
    assert type(error.__cause__) is StopIteration and str(error.__cause__) == "no more (2)"
    note = "raised by input 2 of a DaskExecutor map: _stops_blocking(2)"
    assert error.__notes__ == [note] and error.__cause__.__notes__ == [note]


def test_a_retry_policy_that_cannot_travel_is_refused_at_the_call(client: Any) -> None:
    with pytest.raises(TypeError, match=r"retry policy .* cannot be sent to the workers"):
        DaskExecutor(client=client, per_worker=3, retry=_LockedPolicy())
    with DaskExecutor(client=client, per_worker=3) as exe:
        with pytest.raises(TypeError, match=re.escape("map(): retry policy <")):
            exe.map(_double, [1], retry=_LockedPolicy())
        with pytest.raises(TypeError, match="retry must be a Retry, a callable policy"):
            exe.map(_double, [1], retry=3)  # type: ignore[arg-type]


def test_import_needs_the_extra_and_the_package_does_not_import_dask() -> None:
    code = (
        "import sys, coroexecutor\n"
        "assert 'distributed' not in sys.modules and 'dask' not in sys.modules\n"
        "sys.modules['distributed'] = None\n"
        "try:\n"
        "    import coroexecutor.distributed\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert 'pip install "coroexecutor[dask]"' in out


def test_on_python_3_9_the_import_error_says_python_3_10_is_needed() -> None:
    # Found by a docs-only tester: the extra installs nothing on 3.9 (its marker), so
    # 'pip install "coroexecutor[dask]"' was no help there.
    code = (
        "import sys, coroexecutor\n"
        "sys.modules['distributed'] = None\n"
        "sys.version_info = (3, 9, 18, 'final', 0)  # what the import check reads\n"
        "try:\n"
        "    import coroexecutor.distributed\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "needs Python 3.10 or newer" in out
    assert "(this is Python 3.9)" in out
    assert "pip install" not in out


async def _peak_per_key(token: str, limit: int, key: str, x: int) -> int:
    """Counts the jobs of ``key`` running at once in this process; while fewer than
    ``limit`` run, waits a little for more of its key to join (which key= must refuse)."""
    state = _state.setdefault(f"{token}-{key}", {"active": 0, "peak": 0})
    state["active"] += 1
    state["peak"] = max(state["peak"], state["active"])
    try:
        for _ in range(20):  # a few loop turns: other jobs of the key may start meanwhile
            await asyncio.sleep(0)
    finally:
        state["active"] -= 1
    return x


def _read_peaks(token: str) -> dict[str, int]:
    return {k: v["peak"] for k, v in _state.items() if k.startswith(token)}


def _key_arg(token: str, limit: int, key: str, x: int) -> str:
    return key


def test_key_and_max_per_key_hold_in_each_worker_process(client: Any) -> None:
    token, n = os.urandom(8).hex(), 120
    keys = [f"host{i % 3}" for i in range(n)]
    with DaskExecutor(client=client, per_worker=20, key=_key_arg, max_per_key=2) as exe:
        assert list(exe.map(_peak_per_key, [token] * n, [2] * n, keys, range(n),
                            chunksize=30)) == list(range(n))
    peaks = [peak for state in client.run(_read_peaks, token).values()
             for peak in state.values()]
    assert peaks and max(peaks) <= 2  # per_worker=20 alone would let 20 of a key run


def _key_of_token(token: str, x: int) -> int:
    return x % 2


def test_key_and_retry_together_run_every_job(client: Any) -> None:
    # With a retry policy a job runs in another wrapper on the workers, whose arguments
    # the key function was handed: every job failed with a TypeError (a docs-only tester).
    token = os.urandom(8).hex()
    with DaskExecutor(
        client=client, per_worker=3, key=_key_of_token, max_per_key=1, retry=_AT_ONCE
    ) as exe:
        assert list(exe.map(_fails_twice, [token] * 8, range(8), chunksize=4)) == list(range(8))
        assert exe.submit(_fails_twice, token, 100).result(_WAIT) == 100
    with DaskExecutor(client=client, per_worker=3, key=_key_of_token, max_per_key=1) as exe:
        got = list(exe.map(_fails_twice, [token + "m"] * 4, range(4), retry=_AT_ONCE))
    assert got == list(range(4))


@pytest.mark.parametrize("option", ["initializer", "initargs", "loop_factory"])
def test_an_option_that_cannot_travel_is_refused_at_the_call_with_a_clear_error(
    client: Any, option: str
) -> None:
    # brk25 F3: a bare "TypeError: cannot pickle '_thread.lock' object", from pickling the
    # options as a whole, where key= and retry= name the option at fault.
    lock = threading.Lock()
    given: dict[str, Any] = {
        "initializer": {"initializer": _LockedPolicy()},
        "initargs": {"initializer": _double, "initargs": (lock,)},
        "loop_factory": {"loop_factory": _LockedPolicy()},
    }[option]
    with pytest.raises(TypeError, match=re.escape(f"DaskExecutor(): {option} ") + ".*"
                       + re.escape(" cannot be sent to the workers, it must be picklable:"
                                   " TypeError: cannot pickle '_thread.lock' object")):
        DaskExecutor(client=client, per_worker=3, **given)


def test_a_key_that_cannot_travel_is_refused_at_the_call(client: Any) -> None:
    with pytest.raises(TypeError, match=r"DaskExecutor\(\): key .* cannot be sent to the workers"):
        DaskExecutor(client=client, per_worker=3, key=_LockedPolicy(), max_per_key=1)
    with pytest.raises(TypeError, match="key= needs max_per_key="):
        DaskExecutor(client=client, per_worker=3, key=_key_arg)
