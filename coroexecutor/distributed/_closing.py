"""The one closing of a DaskExecutor: in a thread of its own, waited for by every
``shutdown(wait=True)``, the first or a later one, and by the interpreter's exit.

Why a thread, whoever calls: dask's ``LocalCluster.close()`` waits through ``sync()``,
which a Ctrl-C cuts in two, leaving the cluster "closing" for ever; the next close then
waits for it for ever. Run here, the closing is never interrupted: a Ctrl-C interrupts
only the wait for it. And ``shutdown(wait=False)`` frees resources later, as the stdlib
does.

Why the thread starts with the executor and idles until the first shutdown(): Python 3.12
starts no thread once the interpreter exits (``threading._shutdown`` refuses them before
any exit hook runs), and the exit hook (_exit.py) closes forgotten executors. A thread
started then raised "can't create new thread at interpreter shutdown". For the same
reason one no-op task starts dask's own helper threads with the executor: its callback
thread (``Future.add_done_callback``, which resolves submitted jobs) and, when the
scheduler runs in this process (a LocalCluster the executor started), its offload
thread, which reads every task graph sent (the task then runs; elsewhere it is cancelled
at once, which needs no worker). Without them, a job sent or finished during the exit
failed with that error, and dask logged its traceback.

Threading model: ``start`` once, by the first shutdown() or the exit hook; ``wait`` from
any thread; ``_close_when_asked`` on the closing thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Callable

from . import _exit
from ._future import wait_sliced

__all__ = ["Closing"]

_LOGGER = logging.getLogger("coroexecutor.distributed")
_WARM_UP_TIMEOUT = 60.0  # seconds; the threads only matter at exit: past it, go on


class Closing:
    """Runs ``close`` once in its own thread (``<name>-shutdown``) and hands its outcome to
    every waiter."""

    def __init__(self, owner: object, name: str, client: Any, own_cluster: bool) -> None:
        self._asked: concurrent.futures.Future[Callable[[], None]] = concurrent.futures.Future()
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._local = threading.local()  # busy: this thread is cancelling, in shutdown()
        _start_dask_threads(client, own_cluster)
        # The thread holds the two futures, not the owner: an executor forgotten before its
        # first job can still be collected, and its idle thread then ends.
        self._thread = threading.Thread(
            target=_close_when_asked, args=(self._asked, self._done), name=f"{name}-shutdown",
            daemon=True,
        )
        self._thread.start()
        weakref.finalize(owner, self._asked.cancel)

    def start(self, close: Callable[[], None]) -> None:
        """The first shutdown(): close in the background, waited for by the exit hook.
        Starts no thread (see the module docstring)."""
        _exit.closing(self._done)
        self._asked.set_result(close)

    def wait(self, on_interrupt: Callable[[], None], *, interrupted: bool = False) -> None:
        """Wait for the closing; raise its error. A Ctrl-C during the wait calls
        ``on_interrupt`` (cancel the jobs), waits again, then propagates; a second Ctrl-C
        propagates at once, and the closing finishes in its thread all the same.
        ``interrupted``: a first Ctrl-C has been handled already (it left the ``with``
        block, whose exit cancelled the jobs), so the one that comes now is the second.
        """
        if threading.current_thread() is self._thread or getattr(self._local, "busy", False):
            # shutdown() from a done-callback of a future that the closing, or the caller
            # of shutdown() itself, is cancelling: waiting here would wait for itself.
            return
        try:
            self._done.result(wait_sliced(self._done))  # (so that a Ctrl-C reaches it)
        except KeyboardInterrupt:
            if interrupted:
                raise
            with self.cancelling():
                on_interrupt()
            self._done.exception(wait_sliced(self._done))
            raise
        self._thread.join()  # it has handed its outcome over: it ends now

    @contextlib.contextmanager
    def cancelling(self) -> Iterator[None]:
        """Around a shutdown() that cancels futures in the calling thread: their
        done-callbacks run here, and a shutdown() they call must not wait."""
        busy = getattr(self._local, "busy", False)
        self._local.busy = True
        try:
            yield
        finally:
            self._local.busy = busy


def _start_dask_threads(client: Any, own_cluster: bool) -> None:
    """Start dask's callback thread and, with the scheduler here, its offload thread."""
    threads_up = threading.Event()
    warm_up = client.submit(_nothing, pure=False)
    warm_up.add_done_callback(lambda _: threads_up.set())
    if not own_cluster:  # no scheduler here, and maybe no worker yet: a cancel is done
        warm_up.cancel()
    if not threads_up.wait(_WARM_UP_TIMEOUT):
        _LOGGER.debug("dask's helper threads did not start in %g s", _WARM_UP_TIMEOUT)


def _nothing() -> None:
    """The no-op task of ``_start_dask_threads``."""


def _close_when_asked(
    asked: concurrent.futures.Future[Callable[[], None]],
    done: concurrent.futures.Future[None],
) -> None:
    """The closing thread: idle until the first shutdown() asks, then close once."""
    try:
        close = asked.result()
    except concurrent.futures.CancelledError:  # the owner was collected, never shut down
        return
    try:
        close()
    except BaseException as error:  # raised by every shutdown(wait=True) that waits
        done.set_exception(error)
    else:
        done.set_result(None)
