"""Executors still open when the interpreter exits are shut down, their jobs cancelled;
those still closing after ``shutdown(wait=False)`` are waited for, as the stdlib's pools are.

dask's client resolves futures through a stdlib thread pool; once the pools refuse work
(their exit hook), a client left busy never lets the process exit. threading's exit hooks
run last-registered first, so this one, registered after the pools' (dask imports them),
runs before theirs, and before atexit's. The hook is private but present on every
supported Python; atexit is the fallback.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401  (registers the pools' hook first)
import logging
import threading
import weakref
from typing import Any, Callable, Protocol

__all__ = ["Executor", "closed", "closing", "track"]

_LOGGER = logging.getLogger("coroexecutor.distributed")


class Executor(Protocol):
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()  # guarded by _LOCK: not shut down yet
# guarded by _LOCK: shut down, their closing thread not done yet (it holds them)
_CLOSING: weakref.WeakSet[Any] = weakref.WeakSet()


def track(exe: Executor) -> None:
    with _LOCK:
        _LIVE.add(exe)


def closing(exe: Executor) -> None:
    """The first shutdown() of ``exe`` has started its closing thread."""
    with _LOCK:
        _LIVE.discard(exe)
        _CLOSING.add(exe)


def closed(exe: Executor) -> None:
    """The closing thread of ``exe`` is done."""
    with _LOCK:
        _CLOSING.discard(exe)


def _shutdown_forgotten() -> None:
    with _LOCK:
        forgotten: list[Executor] = list(_LIVE)
        shut_down: list[Executor] = list(_CLOSING)
    # Forgotten ones: nobody reads their jobs any more. Those shut down with wait=False
    # finish their jobs first, as the stdlib's pools do; either way the closing thread
    # must be done before the pools' hook runs: dask's client needs them to close.
    for exe, cancel in [(exe, True) for exe in forgotten] + [(exe, False) for exe in shut_down]:
        try:
            exe.shutdown(wait=True, cancel_futures=cancel)
        except Exception:  # exiting anyway: say why, and shut the others down
            _LOGGER.warning("could not shut down a forgotten DaskExecutor", exc_info=True)


_register: Callable[[Callable[[], None]], Any] = getattr(
    threading, "_register_atexit", atexit.register
)
_register(_shutdown_forgotten)
