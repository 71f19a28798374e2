"""Process-wide hooks: interpreter exit and os.fork() for every live loop thread."""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from typing import Optional, Protocol

__all__ = ["interpreter_exiting", "register"]


class _Stoppable(Protocol):
    owner_repr: str

    def stop_for_exit(self) -> None: ...

    def join(self) -> None: ...

    def after_fork_in_child(self) -> None: ...

    def interrupt_for_exit(self) -> Optional[str]: ...


_LOGGER = logging.getLogger("coroexecutor")
_live: weakref.WeakSet[_Stoppable] = weakref.WeakSet()  # guarded by _global_lock
_global_lock = threading.Lock()
_exiting = False  # guarded by _global_lock


def register(loop_thread: _Stoppable) -> bool:
    """Track a loop thread for the hooks below. False once the interpreter is exiting."""
    with _global_lock:
        if _exiting:
            return False
        _live.add(loop_thread)
        return True


def interpreter_exiting() -> bool:
    return _exiting


def _python_exit() -> None:
    """Let never-shut-down executors finish their jobs before the interpreter exits.

    Registered like ThreadPoolExecutor's hook: it runs just before the interpreter joins
    non-daemon threads, so a forgotten executor neither hangs the exit nor loses jobs.
    A Ctrl-C during that wait cancels the queued and running coroutine jobs instead,
    says so on stderr, and the exit goes on (issue 17, item 3).
    """
    global _exiting
    with _global_lock:
        _exiting = True
        live = list(_live)
    try:
        for loop_thread in live:
            loop_thread.stop_for_exit()
        for loop_thread in live:
            _LOGGER.debug(
                "waiting at exit for the jobs of %s (Ctrl-C cancels them)", loop_thread.owner_repr
            )
            loop_thread.join()
    except KeyboardInterrupt:
        # Raised in this (the main) thread by the default SIGINT handler, most often in
        # join(). A second Ctrl-C while the cancelled jobs finish propagates: Python
        # then reports it as ignored in threading and stops waiting, as without us.
        for loop_thread in live:
            line = loop_thread.interrupt_for_exit()
            if line is not None:
                _say(f"coroexecutor: interrupted at exit: {line}")
        for loop_thread in live:
            loop_thread.join()


def _say(line: str) -> None:
    stream = sys.stderr
    if stream is None:
        return  # pythonw: nowhere to say it
    try:
        stream.write(line + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass  # stderr closed (ValueError) or a broken pipe (OSError): nobody to tell


def _after_fork_in_child() -> None:
    global _global_lock
    _global_lock = threading.Lock()  # a parent thread may have held it at the fork
    for loop_thread in list(_live):
        loop_thread.after_fork_in_child()


# Private, and not in typeshed: the hook concurrent.futures.thread uses, which runs before
# the interpreter joins non-daemon threads (atexit would run after: too late).
threading._register_atexit(_python_exit)  # type: ignore[attr-defined]  # private stdlib API
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
