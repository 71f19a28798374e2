"""Worker side: one loop thread and one long-lived CoroutineExecutor per worker process.

A dask WorkerPlugin (:class:`LoopPlugin`) starts the loop when the worker joins (or when
the DaskExecutor registers it) and stops it on teardown; a plain lazy global would block
the worker's shutdown, and state kept in ``__main__`` would be copied into every task.
The registry lives in this importable module, so ``client.run(cancel_jobs, ...)`` finds
the loop of the DaskExecutor that asks.

dask's own cancel of a chunk's task (its client closed under the executor, which
releases the client's tasks; ``client.cancel``) does not stop the thread that runs it:
the plugin's ``transition`` hook sees the task leave, and cancels the chunk's jobs on
the loop, those queued there included. Without it, the jobs ran on to their end and
the queued ones started later, their futures long cancelled (brk31 F6).

Threading model:

* dask's event loop thread: ``LoopPlugin.setup``/``teardown``/``transition``,
  ``cancel_jobs``, ``cancel_all_jobs``;
* dask's task threads: ``run_chunk``, which secedes from dask's thread pool, hands the
  chunk to the loop as one coroutine and waits for its outcomes (and for a fail-fast
  chunk's first error, which ``_broadcast_cancel`` sends to every process);
* the loop thread: everything in ``ProcessLoop`` (_process_loop.py, and its base
  ``ChunkFeed`` in _chunk_feed.py) not named ``..._threadsafe``;
* the client's threads (not a worker's): ``send_chunk``, ``cancel_on_workers``,
  ``cancel_all_on_workers`` and ``cancel_tasks``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
import sys
import threading
from typing import Any

from distributed import WorkerPlugin, get_client, get_worker, secede

from ._outcomes import Outcomes
from ._process_loop import ProcessLoop
from ._stream import topic_of
from ._wire import Chunk, ChunkSpec, Indexes, WorkerOptions

__all__ = ["LoopPlugin", "WorkerOptions", "cancel_all_jobs", "cancel_all_on_workers",
           "cancel_jobs", "cancel_on_workers", "cancel_tasks", "run_chunk", "send_chunk"]

_LOGGER = logging.getLogger("coroexecutor.distributed")
_LOCK = threading.Lock()
_LOOPS: dict[str, ProcessLoop] = {}  # guarded by _LOCK; DaskExecutor id -> its loop here
# guarded by _LOCK; the dask key of a chunk's task running here -> its ChunkSpec
_TASKS: dict[Any, ChunkSpec] = {}
# What a task of this worker leaves when dask cancels it (its ``finish``); a task that
# ends normally goes to "memory" or "error" instead.
_DROPPED = frozenset({"cancelled", "released", "forgotten"})


class LoopPlugin(WorkerPlugin):  # type: ignore[misc]  # mypy sees dask as Any (pyproject)
    """Starts this DaskExecutor's loop in each worker process; stops it on teardown."""

    def __init__(self, exe_id: str, options: bytes) -> None:
        self.exe_id = exe_id
        self.options = options  # cloudpickled WorkerOptions: the initializer may be a lambda

    def setup(self, worker: object) -> None:
        options: WorkerOptions = pickle.loads(self.options)
        with _LOCK:
            if self.exe_id not in _LOOPS:
                _LOOPS[self.exe_id] = ProcessLoop(self.exe_id, options)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """dask's event loop, at each change of a task's state on this worker: a chunk's
        task that dask cancels gets its jobs cancelled (see the module docstring)."""
        if finish not in _DROPPED:
            return
        with _LOCK:
            spec = _TASKS.get(key)
            process_loop = None if spec is None else _LOOPS.get(spec.exe_id)
        if spec is not None and process_loop is not None and spec.exe_id == self.exe_id:
            process_loop.cancel_threadsafe(
                spec.map_id, range(spec.start, spec.start + len(spec.calls)))

    async def teardown(self, worker: object) -> None:
        with _LOCK:
            process_loop = _LOOPS.pop(self.exe_id, None)
        if process_loop is not None:
            # Joining blocks: not on dask's own event loop.
            await asyncio.get_running_loop().run_in_executor(None, process_loop.stop_and_join)


def run_chunk(chunk: Chunk) -> Outcomes:
    """A dask task: run one chunk on this process's loop and return its outcomes."""
    spec = chunk.load()
    with _LOCK:
        process_loop = _LOOPS.get(spec.exe_id)
    if process_loop is None:
        raise RuntimeError(
            f"this worker process has no coroexecutor loop for DaskExecutor {spec.exe_id}"
            " (it was shut down, or its worker plugin was removed)"
        )
    worker = get_worker()
    publish = functools.partial(worker.log_event, topic_of(spec.exe_id))
    key = worker.get_current_task()
    with _LOCK:  # for LoopPlugin.transition: until the task returns
        _TASKS[key] = spec
    try:
        # The chunk only waits from here on: leave dask's thread pool, so a worker runs
        # up to per_worker jobs whatever its thread count, not one chunk per dask thread.
        secede()
        return process_loop.run_threadsafe(spec, _broadcast_cancel, publish)
    finally:
        with _LOCK:
            _TASKS.pop(key, None)


def _broadcast_cancel(spec: ChunkSpec, index: int) -> None:
    """A dask task thread: a fail-fast chunk's first error, at map index ``index``, cancels
    the map's later jobs in every process now, not once the whole chunk is back."""
    try:
        client = get_client()  # this worker's client, made once per process
        client.run(cancel_jobs, spec.exe_id, spec.map_id, range(index + 1, sys.maxsize),
                   wait=False, on_error="ignore")
    except Exception:  # the client cancels them too, once the chunk is back
        _LOGGER.debug("could not send a fail-fast cancellation", exc_info=True)


def send_chunk(client: Any, chunk: Chunk, key: str) -> Any:
    """Client side: send one chunk as one dask task; return its dask future."""
    return client.submit(run_chunk, chunk, key=f"coroexecutor-{key}", pure=False)


def cancel_on_workers(client: Any, exe_id: str, map_id: str, indexes: Indexes) -> None:
    """Client side: ask every worker process to cancel these jobs; wait for no answer."""
    try:
        # on_error: a worker that died meanwhile has no jobs left to cancel
        client.run(cancel_jobs, exe_id, map_id, indexes, wait=False, on_error="ignore")
    except Exception:  # CommClosedError and kin, from a scheduler or client going away
        _LOGGER.debug("could not send a cancellation to the workers", exc_info=True)


def cancel_all_on_workers(client: Any, exe_id: str) -> None:
    """Client side: ask every worker process to cancel every job of this DaskExecutor, of
    every map and every chunk, in one message; wait for no answer."""
    try:
        client.run(cancel_all_jobs, exe_id, wait=False, on_error="ignore")
    except Exception:  # CommClosedError and kin, from a scheduler or client going away
        _LOGGER.debug("could not send a cancellation to the workers", exc_info=True)


def cancel_tasks(client: Any, tasks: list[Any]) -> None:
    """Client side: cancel these dask tasks (those not started yet never run)."""
    try:
        client.cancel(tasks)
    except Exception:  # the client is closing: its tasks go with it
        _LOGGER.debug("could not cancel the tasks of submitted jobs", exc_info=True)


async def cancel_jobs(exe_id: str, map_id: str, indexes: Indexes) -> None:
    """Sent by ``client.run``: cancel the jobs of a map with these indexes in this process.

    A coroutine function, because ``client.run(..., wait=False)`` takes only those: it
    runs on the worker's event loop and only schedules the cancel on ours.
    """
    with _LOCK:
        process_loop = _LOOPS.get(exe_id)
    if process_loop is not None:
        process_loop.cancel_threadsafe(map_id, indexes)


async def cancel_all_jobs(exe_id: str) -> None:
    """Sent by ``client.run``: cancel every job of this DaskExecutor in this process, and
    start none any more (a coroutine function, as ``cancel_jobs``)."""
    with _LOCK:
        process_loop = _LOOPS.get(exe_id)
    if process_loop is not None:
        process_loop.cancel_all_threadsafe()
