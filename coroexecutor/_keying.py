"""Per-key limits on the executor (``key=``, ``max_per_key=``): how a keyed job starts.

The executor's fast paths ask ``Slots.take_nowait()``, which a
:class:`~coroexecutor._keyed_slots.KeyedSlots` always refuses, so every start of a keyed
executor comes here from its slow path: the job's key is computed (its error goes to the
caller of submit, or to the map's consumer), then the job starts at once, or waits in its
key's line. A keyed job settles as a plain one does (in-line in its own last step, or
from its done callback), where settle() gives the job's room in its key back
(KeyedSlots.end).

Functions of the executor (the first argument), on its event loop thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Callable

from ._entries import Queued, Submitting
from ._following import QueuedFuture
from ._idle import check_idle
from ._lifecycle import admit
from ._policy import JobKind
from ._queued import map_start_failed, start_queued, wake_watcher
from ._retry import INHERIT, Inherit, RetryPolicy
from ._start import start_job
from ._startup import check_accepting, check_loop, check_not_initializer
from ._state import State
from ._taking import give_back, turned_away

if TYPE_CHECKING:
    from ._core import Core
    from ._keyed_slots import KeyedSlots
    from ._map_state import MapJobs

__all__ = [
    "give_back_key", "queue_keyed", "start_keyed", "start_or_queue",
    "submit_nowait_keyed", "take_key",
]

_RUNNING = State.RUNNING


def _slots(exe: Core) -> KeyedSlots:
    """The executor's KeyedSlots (the functions here run only on keyed executors)."""
    slots = exe._keyed
    assert slots is not None, "a keyed start on an executor without key="
    return slots


def submit_nowait_keyed(
    exe: Core,
    slots: KeyedSlots,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> asyncio.Future[Any]:
    """submit_nowait() of a keyed executor: start now, or queue in the key's line."""
    key = slots.key(*args, **kwargs)
    if exe._state is not _RUNNING:
        # key() or max_per_key() stopped the executor: with an eager task factory, a job it
        # submitted failed at once (fail-fast), or a shutdown(wait=False) task it made ran.
        # This job was not accepted yet, so it is refused as after any shutdown (queued,
        # it would have started after the line was drained, only to be cancelled).
        check_accepting(exe)
    if slots.take_key_nowait(key):
        return start_keyed(exe, slots, fn, args, kwargs, "submit_nowait", key)
    check_loop(exe)  # only where we would queue, as on the plain fast path
    return queue_keyed(exe, key, fn, args, kwargs)


async def take_key(
    exe: Core, key: Hashable, where: str, waiter: Submitting | None = None
) -> None:
    """Wait in ``key``'s line for room in it and a slot (take_slot() for a keyed job;
    ``waiter``: as there). (submit() of a keyed executor calls it when take_key_nowait()
    refused.)"""
    check_loop(exe)  # only where we would wait, as on the plain fast path
    if exe._startup.task is not None:
        check_not_initializer(exe, f"{where}()")
    slots = _slots(exe)
    try:
        await slots.take_key(key, waiter)
    except BaseException:  # cancelled, or turned away (see refuse_submits)
        admit(exe)  # room and a slot granted meanwhile, given back, go to the next
        check_idle(exe)
        raise
    if turned_away(exe):
        slots.unstarted(key)
        give_back(exe)  # granted just before an abort
        check_accepting(exe)  # raises


def start_keyed(
    exe: Core,
    slots: KeyedSlots,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    where: str,
    key: Hashable,
    kind: JobKind = JobKind.POLICY,
    index: int | None = None,
    policy: RetryPolicy | Inherit | None = INHERIT,
    owner: MapJobs | None = None,
) -> asyncio.Future[Any]:
    """start_job() in a slot and the room in ``key`` the caller holds."""
    outer = slots.begin(key)  # an eager first step may settle the job before we return
    try:
        task = start_job(exe, fn, args, kwargs, where, kind, index, policy, owner)
    except BaseException:
        if not slots.started(None, key, outer):  # (unless the job ran and settled)
            give_back_key(exe, key)  # (start_job gave the slot back)
        raise
    slots.started(task, key, outer)
    return task


def start_or_queue(
    exe: Core,
    slots: KeyedSlots,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    where: str,
    kind: JobKind,
    index: int,
    policy: RetryPolicy | Inherit | None,
    owner: MapJobs,
) -> asyncio.Future[Any]:
    """A map's next job on a keyed executor: it starts, or waits in its key's line
    holding its place in the map's window (so one full key holds back no other).
    ``owner``: the map, whose window the job leaves while it pauses (see MapJobs)."""
    key = slots.key(*args)  # its errors, and max_per_key's, go out of the map as they are
    if slots.take_key_nowait(key):
        try:
            return start_keyed(exe, slots, fn, args, {}, where, key, kind, index, policy, owner)
        except BaseException as exc:  # fn(*args) raised: the input's job error
            return map_start_failed(exe, owner, args, index, exc)
    return queue_keyed(exe, key, fn, args, {}, where, kind, index, policy, owner)


def give_back_key(exe: Core, key: Hashable) -> None:
    """Room in ``key`` granted to a job that does not start: the next in line may."""
    slots = _slots(exe)
    slots.unstarted(key)
    slots.schedule_wake()


def queue_keyed(
    exe: Core,
    key: Hashable,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    where: str = "submit_nowait",
    kind: JobKind = JobKind.POLICY,
    index: int | None = None,
    policy: RetryPolicy | Inherit | None = INHERIT,
    owner: MapJobs | None = None,
) -> asyncio.Future[Any]:
    """Queue a job in ``key``'s line; returns the future that follows it."""

    def start(entry: Queued) -> None:
        slots = _slots(exe)
        outer = slots.begin(key)  # as in start_keyed
        try:
            task = start_queued(exe, entry, where, kind, index, policy, owner)
        except BaseException:  # (start_queued hands what it can to the future)
            if not slots.started(None, key, outer):
                give_back_key(exe, key)
            raise
        if not slots.started(task, key, outer):
            give_back_key(exe, key)

    def dropped(future: QueuedFuture) -> None:
        # Its future was cancelled while it waited (see QueuedFuture.on_drop): it leaves
        # its key's line now, so stats (queued, cancelled, busiest_key) show it at once.
        if _slots(exe).unqueue_key(ticket):
            exe._outcomes.cancelled += 1
            check_idle(exe)

    future = QueuedFuture(loop=exe._loop, on_drop=dropped)
    ticket = _slots(exe).queue_key(key, Queued(future, fn, args, kwargs, start))
    if owner is not None:
        future.add_done_callback(functools.partial(wake_watcher, exe))
    exe._outcomes.hook_when_done(future, exe._loop)
    return future
