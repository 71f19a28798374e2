"""Executors still open when the interpreter exits are shut down, their jobs cancelled.

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

__all__ = ["track", "untrack"]

_LOGGER = logging.getLogger("coroexecutor.distributed")


class _Executor(Protocol):
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()  # guarded by _LOCK


def track(exe: _Executor) -> None:
    with _LOCK:
        _LIVE.add(exe)


def untrack(exe: _Executor) -> None:
    with _LOCK:
        _LIVE.discard(exe)


def _shutdown_forgotten() -> None:
    with _LOCK:
        forgotten: list[_Executor] = list(_LIVE)
    for exe in forgotten:
        try:
            exe.shutdown(wait=True, cancel_futures=True)
        except Exception:  # exiting anyway: say why, and shut the others down
            _LOGGER.warning("could not shut down a forgotten DaskExecutor", exc_info=True)


_register: Callable[[Callable[[], None]], Any] = getattr(
    threading, "_register_atexit", atexit.register
)
_register(_shutdown_forgotten)
