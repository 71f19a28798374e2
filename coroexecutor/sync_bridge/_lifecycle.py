"""BridgeState: the life of one loop thread, and the errors a bridge that refuses jobs raises."""

from __future__ import annotations

import enum
from typing import Optional

from .._errors import BrokenLoopExecutor
from . import _process

__all__ = [
    "ACCEPTING",
    "EXIT_MESSAGE",
    "FORK_MESSAGE",
    "GONE",
    "INITIALIZER_FAILED",
    "LOOP_FAILED",
    "SHUTDOWN_MESSAGE",
    "BridgeState",
    "refusal",
]

SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"
EXIT_MESSAGE = "cannot schedule new futures after interpreter shutdown"
FORK_MESSAGE = (
    "{name} belongs to the parent process: after os.fork() its loop thread does not exist "
    "in the child; create a new executor in the child"
)

# Why a bridge is broken (BROKEN below), for refusal(): what its initializer raised, or
# what its loop raised for the task that runs everything else (see LoopThread._run).
INITIALIZER_FAILED = "its initializer raised {error!r}"
LOOP_FAILED = "its event loop could not start its first task: {error!r}"


class BridgeState(enum.Enum):
    """The bridge's lifecycle (the core's own is ``coroexecutor._state.State``)."""

    STARTING = "starting"  # the loop runs the initializer; jobs wait in the backlog
    RUNNING = "running"  # accepting jobs
    SHUTTING_DOWN = "shutting down"  # no new jobs; accepted ones finish or are cancelled
    BROKEN = "broken"  # the initializer failed; the thread has stopped or is stopping
    CLOSED = "closed"  # the loop has finished every job and stopped; terminal
    FORKED = "forked"  # this is a forked child: the loop thread exists only in the parent


# Groups of states, as tuples: `state in ACCEPTING` tests identity first, one step each
# (a member read through the class costs more: BridgeState.RUNNING is an attribute lookup).
ACCEPTING = (BridgeState.RUNNING, BridgeState.STARTING)
GONE = (BridgeState.CLOSED, BridgeState.FORKED, BridgeState.BROKEN)  # the loop runs no more


def refusal(
    state: BridgeState,
    broken: Optional[BaseException],
    owner_repr: str,
    why: str = INITIALIZER_FAILED,
) -> BaseException:
    """The error for a job refused in ``state`` (``broken``: what broke it, ``why``: how)."""
    if state is BridgeState.BROKEN:
        error = BrokenLoopExecutor(f"{owner_repr} is broken: {why.format(error=broken)}")
        error.__cause__ = broken
        return error
    if state is BridgeState.FORKED:
        return RuntimeError(FORK_MESSAGE.format(name=owner_repr))
    if _process.interpreter_exiting():
        return RuntimeError(EXIT_MESSAGE)
    return RuntimeError(SHUTDOWN_MESSAGE)
