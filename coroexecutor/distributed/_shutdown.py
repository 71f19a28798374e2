"""Shutting a DaskExecutor down: its state (running, then shut down), ``shutdown()``, the
exit hook's shutdown, and the cancel of an ``async with`` exit that is itself cancelled.

Functions of the executor (the first argument), typed as the ``Stopping`` protocol so
that this module does not import the class, as the core's functions take ``Core``. Any
thread; ``exe._lock`` guards the state and the set of open maps. What the executor
started is closed by ``_finish``, in the closing thread (_closing.py).
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
import weakref
from typing import Any, Protocol

from ._batch import Batcher
from ._closing import Closing
from ._connection import Connection
from ._future import resolving_here
from ._map import MapRun
from ._stream import topic_of
from ._worker import cancel_all_on_workers

__all__ = ["State", "Stopping", "cancel_open", "check_running", "shutdown", "shutdown_at_exit"]

_LOGGER = logging.getLogger("coroexecutor.distributed")


class State(enum.Enum):
    RUNNING = "running"
    SHUTDOWN = "shut down"


class Stopping(Protocol):
    """What shutting down reads and changes on the executor."""

    _lock: threading.Lock
    _state: State  # guarded by _lock
    _maps: weakref.WeakSet[MapRun]  # guarded by _lock
    _batcher: Batcher
    _closing: Closing
    _client: Any  # distributed.Client
    _id: str
    _plugin_name: str
    _connection: Connection


def check_running(exe: Stopping) -> None:
    """Refuse a job after shutdown() (under ``exe._lock``, or before it as a first check)."""
    if exe._state is not State.RUNNING:
        raise RuntimeError("cannot schedule new futures after shutdown")


def shutdown(exe: Stopping, wait: bool, cancel_futures: bool, *, interrupted: bool = False) -> None:
    """DaskExecutor.shutdown(); ``interrupted``: from a ``with`` block that a Ctrl-C left,
    so a Ctrl-C during the wait is the second (see Closing.wait)."""
    first, maps = _stop(exe)
    try:
        with exe._closing.cancelling():  # (a done-callback's shutdown() waits not)
            for run in maps:  # maps still open keep their chunks in flight, no more
                run.detach_threadsafe()
            if cancel_futures:
                _cancel_everything(exe, maps)
    finally:  # whatever happened, what this executor started gets closed
        if first:
            exe._closing.start(functools.partial(_finish, exe, maps, cancel_futures))
    # Not waited for from the flusher thread (the closing waits for it), nor from a
    # done-callback the batcher runs (the closing waits for those to return).
    if wait and not exe._batcher.on_flusher_thread() and not resolving_here():
        exe._closing.wait(
            functools.partial(_cancel_everything, exe, maps), interrupted=interrupted
        )


def shutdown_at_exit(exe: Stopping) -> None:
    """The exit hook: one still open closes, its jobs cancelled, in the closing thread."""
    first, maps = _stop(exe)
    if first:
        exe._closing.start(functools.partial(_finish, exe, maps, True))


def cancel_open(exe: Stopping) -> None:
    """Cancel every job not yet done, and the maps open now (a cancelled ``async with``)."""
    with exe._lock:
        maps = list(exe._maps)
    _cancel_everything(exe, maps)


def _stop(exe: Stopping) -> tuple[bool, list[MapRun]]:
    """Stop accepting jobs: whether this was the first call, and the maps still open."""
    with exe._lock:
        first, exe._state = exe._state is State.RUNNING, State.SHUTDOWN
        return first, list(exe._maps)


def _cancel_everything(exe: Stopping, maps: list[MapRun]) -> None:
    # One message first stops every job on the workers, whatever its map or chunk: sent
    # map by map and chunk by chunk alone, the cancels let a slot that one of them freed
    # start a job of the next chunk, whose code ran while its future said cancelled.
    cancel_all_on_workers(exe._client, exe._id)
    for run in maps:
        run.cancel_threadsafe()
    # Not the futures of a chunk being resolved meanwhile (dask's callback thread, or this
    # one: a done-callback's shutdown): their outcomes are here, and are delivered.
    exe._batcher.cancel_threadsafe()


def _finish(exe: Stopping, maps: list[MapRun], cancelled: bool) -> None:
    if cancelled:  # (again, after shutdown(): for the exit hook, which only asks)
        _cancel_everything(exe, maps)
    exe._batcher.close_threadsafe(cancel_futures=cancelled)
    exe._batcher.settle()
    for run in maps:
        run.settle_threadsafe()
    _remove_worker_plugin(exe)
    try:
        exe._client.unsubscribe_topic(topic_of(exe._id))
    except Exception:  # the client is closed: its subscriptions went with it
        _LOGGER.debug("could not unsubscribe from the events of submitted jobs", exc_info=True)
    exe._connection.close()


def _remove_worker_plugin(exe: Stopping) -> None:
    """Remove the plugin: each worker's loop cancels its jobs, waits for them and stops
    (LoopPlugin.teardown). Through a client of the closing's own if the executor's was
    closed under it, the cluster alive: otherwise the loops would stay for good."""
    with exe._connection.reaching_scheduler() as client:
        if client is None:  # the cluster is gone already: its loops went with it
            return
        try:
            client.unregister_worker_plugin(exe._plugin_name)
        except Exception:  # the cluster is going away meanwhile
            _LOGGER.debug("could not remove the worker plugin", exc_info=True)
