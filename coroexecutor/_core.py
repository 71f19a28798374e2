"""The executor as its internals see it: the ``Core`` protocol, and the small state holders
(the block, the initializer) it is made of.

The functions of ``_start``, ``_lifecycle``, ``_idle``, ``_startup``, ``_shutdown`` and the
map modules take a ``Core`` as their first argument; CoroutineExecutor is the one class
that provides it. So every internal module depends on this protocol, never on the
public class, and the import graph has no circle, type checking included.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from ._entries import Queued
    from ._following import QueuedFuture
    from ._jobs import FactoryReader
    from ._keyed_slots import KeyedSlots
    from ._map_state import MapJobs
    from ._policy import Outcomes
    from ._retry import RetryPolicy
    from ._slots import Slots
    from ._state import State
    from ._tuning import Tuner

__all__ = ["Block", "Core", "Startup"]


class Block:
    """The ``async with`` block an executor is used as: the task running its body, and
    whether the executor has interrupted that body (fail-fast, the deadline), as
    asyncio.TaskGroup interrupts its parent task."""

    __slots__ = ("in_body", "interrupted", "parent")

    def __init__(self, parent: asyncio.Task[Any] | None) -> None:
        self.parent = parent
        self.in_body = False
        self.interrupted = False

    def interrupt(self) -> None:
        """Cancel the body at its next await, once, so a producer still submitting stops
        at once. withdraw() undoes it at the block's exit."""
        parent = self.parent
        if self.in_body and parent is not None and not parent.done() and not self.interrupted:
            self.interrupted = True
            parent.cancel()

    def withdraw(self) -> bool:
        """Withdraw our interruption of the body, once. True if the body's pending
        cancellation was only ours."""
        if not self.interrupted:
            return False
        self.interrupted = False
        if sys.version_info >= (3, 11):
            assert self.parent is not None  # interrupt() needs one
            return self.parent.uncancel() == 0
        return True  # 3.9/3.10 cannot count cancel requests: assume it was ours


class Startup:
    """The initializer: its function and arguments, its task while it runs, and what it
    raised (then the executor is broken). See _startup."""

    __slots__ = ("args", "broken", "fn", "task")

    def __init__(self, fn: Callable[..., object] | None, args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.task: asyncio.Task[None] | None = None  # while it runs
        self.broken: BaseException | None = None  # what it raised


class Core(Protocol):
    """What the internal functions read and change on the executor. Who owns what:

    - ``_slots`` (capacity, backlog, rate) and ``_outcomes`` (counts, the first error):
      components with methods of their own;
    - ``_state`` and the lifecycle fields below: _lifecycle, _idle, _startup and _shutdown;
    - ``_running`` and ``_watchers``: _start (and abort, which cancels every running job);
    - ``_maps``, ``_readers`` and ``_unread``: the map modules (abort closes the maps through
      ``_close_maps()``: _lifecycle cannot import them, they build on it).
    """

    _loop: asyncio.AbstractEventLoop  # once bound (_bound)
    _state: State
    _slots: Slots
    _keyed: KeyedSlots | None  # with key=, the same object as _slots (else None)
    # In-line jobs and no key=: submit() may start a job in the plain lane, and an in-line
    # job's runner may settle its success itself (see run_job). Tests turn it off.
    _plain: bool
    _outcomes: Outcomes
    _startup: Startup
    _running: dict[object, asyncio.Future[Any]]
    _watchers: dict[asyncio.Future[Any], asyncio.Future[None]]
    _maps: set[MapJobs]
    _readers: set[asyncio.Task[Any]]  # stopped map readers still closing their inputs
    _unread: set[MapJobs]  # closed maps no reader could be made for: see close_unread
    _block: Block | None
    _outer: Core | None
    _spared: asyncio.Future[Any] | None
    _ending: asyncio.Future[Any] | None  # a job's task in its last step, while it settles
    _idle_waiters: list[asyncio.Future[None]]
    _idle_handle: asyncio.Handle | None
    _deadline_handle: asyncio.TimerHandle | None
    _grace_handle: asyncio.TimerHandle | None
    _timeout: float | None
    _job_timeout: float | None
    _inline: bool
    _tuner: Tuner | None  # max_workers=Adaptive: see _tuning
    _task_factory_of: FactoryReader | None  # None: read loop._task_factory
    _loop_watch: AsyncGenerator[None, None] | None
    _rate: float | None
    _burst: int
    _retry: RetryPolicy | None
    _annotate: bool

    @property
    def _bound(self) -> bool: ...

    def _on_job_done(self, task: asyncio.Future[Any]) -> None: ...

    def _on_result_job_done(self, task: asyncio.Future[Any]) -> None: ...

    def _on_queued_dropped(self, future: QueuedFuture) -> None: ...

    def _start_queued(self, entry: Queued) -> None: ...

    def _close_maps(self) -> None: ...
