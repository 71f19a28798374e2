"""The one closing of a DaskExecutor: in a thread of its own, waited for by every
``shutdown(wait=True)``, the first or a later one.

Why a thread, whoever calls: dask's ``LocalCluster.close()`` waits through ``sync()``,
which a Ctrl-C cuts in two, leaving the cluster "closing" for ever; the next close then
waits for it for ever. Run here, the closing is never interrupted: a Ctrl-C interrupts
only the wait for it. And ``shutdown(wait=False)`` frees resources later, as the stdlib
does. The exit hook (_exit.py) waits for a closing still running.

Threading model: ``start`` once, by the first shutdown(); ``wait`` from any thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator
from typing import Callable

from . import _exit

__all__ = ["Closing"]


class Closing:
    """Runs ``close`` once in its own thread and hands its outcome to every waiter."""

    def __init__(self, owner: _exit.Executor, name: str) -> None:
        self._owner = owner
        self._name = name
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread: threading.Thread | None = None
        self._local = threading.local()  # busy: this thread is cancelling, in shutdown()

    def start(self, close: Callable[[], None]) -> None:
        """The first shutdown(): close in the background, tracked by the exit hook."""
        self._thread = threading.Thread(
            target=self._run, args=(close,), name=self._name, daemon=True
        )
        _exit.closing(self._owner)
        self._thread.start()

    def wait(self, on_interrupt: Callable[[], None]) -> None:
        """Wait for the closing; raise its error. A Ctrl-C during the wait calls
        ``on_interrupt`` (cancel the jobs), waits again, then propagates; a second Ctrl-C
        propagates at once, and the closing finishes in its thread all the same."""
        if threading.current_thread() is self._thread or getattr(self._local, "busy", False):
            # shutdown() from a done-callback of a future that the closing, or the caller
            # of shutdown() itself, is cancelling: waiting here would wait for itself.
            return
        try:
            self._done.result()
        except KeyboardInterrupt:
            with self.cancelling():
                on_interrupt()
            self._done.exception()
            raise
        assert self._thread is not None  # set before _done could be
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

    def _run(self, close: Callable[[], None]) -> None:
        try:
            close()
        except BaseException as error:  # raised by every shutdown(wait=True) that waits
            self._done.set_exception(error)
        else:
            self._done.set_result(None)
        finally:
            _exit.closed(self._owner)
