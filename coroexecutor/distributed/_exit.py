"""Executors still open when the interpreter exits are shut down, their jobs cancelled;
those still closing after ``shutdown(wait=False)`` are waited for, as the stdlib's pools
are, but for ``EXIT_TIMEOUT`` seconds at most.

dask's client resolves futures through a stdlib thread pool; once the pools refuse work
(their exit hook), a client left busy never lets the process exit. threading's exit hooks
run last-registered first, so this one, registered after the pools' (dask imports them),
runs before theirs, and before atexit's. The hook is private but present on every
supported Python; atexit is the fallback.

What the exit needs is started before it: each executor's closing thread (_closing.py),
since Python 3.12 starts no thread once the exit has begun. The hook itself only asks for
closings and waits; all dask work happens in the closing threads. The wait has a bound
because dask may need what an exit no longer gives (on 3.12 its scheduler and callback
threads, if they had not started yet): past it, the exit goes on without them, as dask's
own exit hook gives up on a cluster after 10 seconds.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # (registers the pools' hook first)
import logging
import threading
import weakref
from typing import Any, Callable, Protocol

__all__ = ["EXIT_TIMEOUT", "Executor", "closing", "track"]

_LOGGER = logging.getLogger("coroexecutor.distributed")

EXIT_TIMEOUT = 60.0  # seconds, for every closing at once


class Executor(Protocol):
    def _shutdown_at_exit(self) -> None: ...


_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()  # guarded by _LOCK: every open executor
# guarded by _LOCK: closings asked for and not done yet (a done-callback removes them)
_CLOSING: set[concurrent.futures.Future[None]] = set()


def track(exe: Executor) -> None:
    with _LOCK:
        _LIVE.add(exe)


def closing(done: concurrent.futures.Future[None]) -> None:
    """A closing has been asked for; ``done`` resolves once it has finished."""
    with _LOCK:
        _CLOSING.add(done)
    done.add_done_callback(_closed)  # (outside the lock: it runs at once if done already)


def _closed(done: concurrent.futures.Future[None]) -> None:
    with _LOCK:
        _CLOSING.discard(done)


def _shutdown_forgotten() -> None:
    with _LOCK:
        live: list[Executor] = list(_LIVE)
    for exe in live:  # those not shut down yet: nobody reads their jobs any more
        try:
            exe._shutdown_at_exit()
        except Exception:  # exiting anyway: say why, and shut the others down
            _LOGGER.warning("could not shut down a forgotten DaskExecutor", exc_info=True)
    with _LOCK:
        closings = list(_CLOSING)
    # Those shut down with wait=False finish their jobs first, as the stdlib's pools do;
    # either way the closing must be done before the pools' hook runs: dask's client
    # needs them to close.
    _, late = concurrent.futures.wait(closings, timeout=EXIT_TIMEOUT)
    if late:
        _LOGGER.warning(
            "%d DaskExecutor(s) still closing after %g seconds at interpreter exit: exiting"
            " without waiting for them", len(late), EXIT_TIMEOUT,
        )


_register: Callable[[Callable[[], None]], Any] = getattr(
    threading, "_register_atexit", atexit.register
)
_register(_shutdown_forgotten)
