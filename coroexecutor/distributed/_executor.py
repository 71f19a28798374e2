"""DaskExecutor: a concurrent.futures.Executor whose jobs run on a dask cluster.

Every dask worker process runs one loop thread with one CoroutineExecutor of
``max_workers=per_worker`` (see _worker.py). ``map`` sends its inputs in chunks, one dask
task each (_map_api.py, _map.py); ``submit`` gathers single jobs into chunks after a short delay
(_batch.py); ``shutdown`` stops, cancels and closes through _shutdown.py.

Threading model: every public method may be called from any thread. ``_lock`` guards the
state and the set of open maps; dask's client is thread-safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import uuid
import weakref
from collections.abc import Awaitable, Hashable, Iterable
from types import TracebackType
from typing import Any, Callable, Optional, TypeVar, overload

import cloudpickle
import distributed
from typing_extensions import ParamSpec, Self, final

from .._keyed import MaxPerKey
from .._retry import RetryArg
from .._validate import check_switch
from . import _exit, _shutdown
from ._batch import Batcher
from ._closing import Closing
from ._connection import Connection, check_connection
from ._future import JobFuture
from ._map import MapRun
from ._map_api import MapMethod
from ._shutdown import State
from ._wire import check_count, check_fn, worker_options
from ._worker import LoopPlugin, cancel_on_workers, cancel_tasks, send_chunk

__all__ = ["DEFAULT_CHUNKSIZE", "DaskExecutor"]

P = ParamSpec("P")
T = TypeVar("T")

# Chosen by measurement (docs/distributed.rst shows the sweep): dask costs about 2 ms of
# client and scheduler time per task, so 1,000 jobs a chunk bring it to about 2 µs a job,
# and a chunk still keeps a worker of per_worker=500 busy on its own.
DEFAULT_CHUNKSIZE = 1000
_SUBMIT_DELAY = 0.005


@final
class DaskExecutor(MapMethod, concurrent.futures.Executor):
    """An Executor that runs coroutine functions (and blocking callables) on dask workers.

    Each dask worker process runs one event loop thread with one long-lived
    :class:`~coroexecutor.CoroutineExecutor` of ``max_workers=per_worker``, so a worker
    runs up to ``per_worker`` jobs at once whatever dask's thread count. ``map`` sends its
    inputs in chunks of ``chunksize`` jobs, one dask task each, so dask's per-task cost is
    paid once a chunk.

    Connect in one of three ways: no argument starts a ``LocalCluster`` with one worker
    process per core (``n_workers`` to choose), ``address`` connects a new ``Client`` to a
    scheduler, ``client`` uses an existing one. What this executor started it also closes;
    a client you pass stays open.

    Errors: a job's exception, of the same type and message, with a note naming its
    input (3.11+), is raised where its result would be. Cancellation and worker loss: see
    :meth:`map` and the page "Scaling out with dask".

    Args:
        address: a scheduler address such as ``"tcp://scheduler:8786"``.
        client: an existing ``distributed.Client``.
        per_worker: the most jobs that run at once in each worker process.
        n_workers: worker processes of the LocalCluster started without address or client.
        chunksize: the default chunk size of :meth:`map` (1,000, chosen by measurement).
        suppress_task_errors: when true, a map's error does not cancel the map's other
            jobs (it is still raised where its result would be).
        initializer: called as ``initializer(*initargs)`` once in each worker process,
            before its first job (awaited if it returns an awaitable). If it raises, that
            worker's jobs fail with :class:`~coroexecutor.BrokenCoroutineExecutor`.
        initargs: arguments for ``initializer``.
        job_timeout, max_per_second, burst: as for :class:`~coroexecutor.CoroutineExecutor`,
            applied in each worker process: ``max_per_second`` is a rate per worker.
        loop_factory: makes each worker process's loop, for example
            ``uvloop.new_event_loop`` (uvloop must then be installed on the workers). If
            it raises or returns no loop, that process's jobs fail with its error (or a
            TypeError).
        retry: as for CoroutineExecutor, in each worker process (which gets its own copy
            of the policy: it must be picklable); ``map`` may replace it.
        key, max_per_key: per-key limits as for CoroutineExecutor, held by each worker
            process (a key may run ``max_per_key`` jobs in every process at once);
            ``key`` is called with the job's arguments there, so it must be picklable.

    Raises:
        ValueError: ``per_worker`` below 1, both ``address`` and ``client``,
            ``n_workers`` with either, an asynchronous ``client``
            (``Client(asynchronous=True)``), or a bad option.
        TypeError: an option of the wrong kind (``client`` not a ``distributed.Client``),
            or one the workers get that cannot be pickled.
        RuntimeError: ``client`` is closed.
    """

    def __init__(
        self,
        address: Optional[str] = None,
        *,
        client: Optional[distributed.Client] = None,
        per_worker: int = 1000,
        n_workers: Optional[int] = None,
        chunksize: int = DEFAULT_CHUNKSIZE,
        suppress_task_errors: bool = False,
        initializer: Optional[Callable[..., object]] = None,
        initargs: Iterable[Any] = (),
        job_timeout: Optional[float] = None,
        max_per_second: Optional[float] = None,
        burst: Optional[int] = None,
        loop_factory: Optional[Callable[[], asyncio.AbstractEventLoop]] = None,
        retry: RetryArg = None,
        key: Optional[Callable[..., Hashable]] = None,
        max_per_key: Optional[MaxPerKey] = None,
    ) -> None:
        per_worker = check_count("per_worker", per_worker)
        options = worker_options(per_worker, job_timeout, max_per_second, burst, initializer,
                                 initargs, loop_factory, retry, key, max_per_key)
        self._chunksize = check_count("chunksize", chunksize)
        check_connection(address, client, n_workers)
        self._per_worker = per_worker
        self._fail_fast = not check_switch("suppress_task_errors", suppress_task_errors)
        self._id = uuid.uuid4().hex
        self._plugin_name = f"coroexecutor-{self._id}"
        self._lock = threading.Lock()
        self._state = State.RUNNING  # guarded by _lock
        self._maps: weakref.WeakSet[MapRun] = weakref.WeakSet()  # guarded by _lock
        self._connection = connection = Connection(address, client, n_workers)
        self._client = client = connection.client
        self._address = connection.address
        try:
            client.register_plugin(
                LoopPlugin(self._id, cloudpickle.dumps(options)), name=self._plugin_name
            )
        except BaseException:
            connection.close()
            raise
        self._send = functools.partial(send_chunk, client)
        self._cancel_remote = functools.partial(cancel_on_workers, client, self._id)
        self._batcher = Batcher(self._id, self._send, self._cancel_remote,
                                functools.partial(cancel_tasks, client), _SUBMIT_DELAY,
                                self._chunksize, client.subscribe_topic)
        self._closing = Closing(self, self._plugin_name, client, connection.cluster is not None)
        _exit.track(self)

    def __repr__(self) -> str:
        return (f"<DaskExecutor {self._state.value} per_worker={self._per_worker}"
                f" scheduler={self._address}>")

    @property
    def client(self) -> distributed.Client:
        """The ``distributed.Client`` this executor sends its chunks through."""
        return self._client

    #
    # Jobs
    #

    @overload
    def submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]: ...

    @overload
    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]: ...

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on a worker; return a future for its result.

        Jobs submitted within a few milliseconds of each other travel as one chunk, but
        each future is done as its own job ends; :meth:`map` is the fast path for many
        jobs. A job's error fails only its future, as does the ``TypeError`` of a job
        that cannot be pickled. Callable from any thread; never blocks.

        Cancellation: ``future.cancel()`` succeeds until the result is in, and reaches a
        job already running on its worker (a blocking call that has started runs on).

        Raises:
            RuntimeError: after ``shutdown()``.
            TypeError: ``fn`` is not callable, or is a coroutine object.
        """
        check_fn(fn, "submit")
        future: concurrent.futures.Future[Any] = JobFuture()
        with self._lock:  # the batcher closes later, in the closing thread
            _shutdown.check_running(self)
            self._batcher.add_threadsafe((future, fn, args, kwargs))
        return future

    #
    # Shutting down
    #

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting jobs; with ``wait``, return once every job is done and what this
        executor started (the worker loops, and a client or cluster it made) is closed.

        ``cancel_futures`` cancels every job not yet done, on the workers too: gathered
        submits, chunks in flight and the jobs running in them, and the open maps.
        An open map then raises ``CancelledError`` where its first cancelled result would
        be, as the stdlib pools' maps do. Without it, maps still open keep the chunks
        already in flight (wait=True waits for them, and they can still be read, also
        after the ``with`` block) but send no more: once those are read, ``next()`` raises
        ``RuntimeError`` if inputs were left, as a lazy ``Executor.map`` does.

        A later ``shutdown(wait=True)`` (after ``wait=False``, or from another thread)
        waits for the first one's work too, as the stdlib's pools do. At interpreter exit,
        a shutdown begun with ``wait=False`` is waited for, a minute at most.

        Cancellation: a ``KeyboardInterrupt`` (Ctrl-C) during the wait cancels every job,
        waits for the closing to finish, then propagates. A second one during that wait
        propagates at once; the closing still finishes, in a thread of its own.
        """
        _shutdown.shutdown(self, wait, cancel_futures)

    _shutdown_at_exit = _shutdown.shutdown_at_exit  # bound as a method: _exit.py calls it

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        # Leaving by an exception (Ctrl-C included): do not wait for jobs nobody will read.
        # Left by a Ctrl-C, that was the first: one during the wait is the second, and
        # propagates at once (the closing, started already, finishes in its thread).
        _shutdown.shutdown(self, True, exc is not None,
                           interrupted=isinstance(exc, KeyboardInterrupt))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Shut down as ``with`` does, waiting in a thread so the caller's loop runs on.

        Cancellation: cancelling the waiting task cancels every job, still waits for the
        shutdown to finish, then re-raises the cancellation.
        """
        done = asyncio.get_running_loop().run_in_executor(None, self.__exit__, exc_type, exc, tb)
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            _shutdown.cancel_open(self)
            await done
            raise
