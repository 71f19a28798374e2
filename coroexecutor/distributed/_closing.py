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
import threading
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
        try:
            self._done.result()
        except KeyboardInterrupt:
            on_interrupt()
            self._done.exception()
            raise
        assert self._thread is not None  # set before _done could be
        self._thread.join()  # it has handed its outcome over: it ends now

    def _run(self, close: Callable[[], None]) -> None:
        try:
            close()
        except BaseException as error:  # raised by every shutdown(wait=True) that waits
            self._done.set_exception(error)
        else:
            self._done.set_result(None)
        finally:
            _exit.closed(self._owner)
