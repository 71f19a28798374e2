"""KeyedSlots: the Slots of an executor with per-key limits (``key=``, ``max_per_key=``).

The same owner of the counts as :class:`~coroexecutor._slots.Slots` (the invariant
``free + running + granted == limit`` holds as there), with a second line: jobs that
wait for a slot wait in a :class:`~coroexecutor._keyed.KeyedLine` instead of the plain
backlog, so a job whose key is at its limit holds back no job of another key. The plain
backlog keeps what goes first: the initializer's hold and the waiters sent back by a
shrink or between two attempts (retry=), which already hold their key's room.

A job counts against its key from the moment it is granted a slot until it settles
(between two attempts too): ``jobs`` maps a started job's task to its key. Keyed jobs
settle in-line as plain ones do, in their own last step, where settle() finds the key by
the current task. An eager task factory can run a job to its end inside create_task,
before its start returns and records it: such a job is the innermost one being started,
whose key ``starting`` holds (see begin() and started()).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Hashable
from types import CoroutineType
from typing import Any, Callable, Union

from ._entries import Queued
from ._keyed import KeyedLine, MaxPerKey, Ticket, check_max_per_key
from ._slot_line import UNKEYED
from ._slots import Slots
from ._validate import awaitable_answer, is_async_callable

__all__ = ["SETTLED", "KeyFn", "KeyedSlots", "check_keying", "make_slots"]

KeyFn = Callable[..., Hashable]
_Entry = Union[Queued, "asyncio.Future[None]"]


class KeyedSlots(Slots):
    """Slots whose waiting jobs queue per key; the oldest startable job goes first."""

    __slots__ = ("jobs", "key", "line", "starting")

    def __init__(self, limit: int, key: KeyFn, max_per_key: MaxPerKey) -> None:
        super().__init__(limit)
        self.line: KeyedLine[_Entry] = KeyedLine(max_per_key)
        # What the executor calls for a job's key: key(), then with a max_per_key function,
        # line.prepare() (see _key_and_limit).
        self.key: KeyFn = (
            key if isinstance(max_per_key, int)
            else functools.partial(_key_and_limit, key, self.line.prepare)
        )
        self.jobs: dict[object, Hashable] = {}  # a started job's task -> its key
        # The key of the job being started now (begin() to started()), SETTLED once that
        # job has settled inside its start, _MISSING outside any start.
        self.starting: Any = _MISSING

    def take_nowait(self) -> bool:
        """Never: a keyed start needs its key (see take_key_nowait). The executor's plain
        fast paths therefore send every keyed start to its slow path."""
        return False

    def take_key_nowait(self, key: Hashable) -> bool:
        """Take a slot and room in ``key`` if both are free, nobody waits ahead (no older
        startable job of any key) and a start token is at hand.

        Every keyed start asks here first, with the key that key() returned: a coroutine
        there is key= wrapping an async function (``key=lambda u: host_of(u)``), which the
        constructor cannot see; a new key per job, no limit would hold. Refused here, at
        the call that asked for the key, with the test that costs the least per job."""
        if type(key) is CoroutineType:
            raise awaitable_answer(key, "key")
        if self.free > 0 and not self.backlog and self.line.try_start(key):
            if self.limiter is None or self.limiter.try_take():
                self.free -= 1
                return True
            self.line.release(key)
        return False

    async def take_key(self, key: Hashable, waiter: asyncio.Future[None] | None = None) -> None:
        """Wait in ``key``'s line for room in it and a slot (see Slots.take; ``waiter``: as
        there).

        Cancellation: leaves the line, or gives back the room and the slot granted at
        that moment (the caller passes them on with admit())."""
        if self.refusal is not None:
            raise self.refusal()
        waiter = self.loop.create_future() if waiter is None else waiter
        ticket = self.line.push(key, waiter)  # raises for a bad key: nothing changed
        self.waiting += 1
        self.schedule_wake()
        try:
            await self._wait_in_line(waiter, key)
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.line.release(key)  # granted, then cancelled or refused
            else:
                self.line.discard(ticket)  # (a no-op if drain() took it)
            raise

    async def _wait_sent_back(self, waiter: asyncio.Future[None], key: Hashable) -> None:
        """SlotLine._wait_sent_back: a waiter of ``key`` sent back by a shrink holds its
        key's room (counted running there since its grant) but waits for a slot, as
        ``stats`` count it: busiest_key counts it waiting until it stops waiting. Off the
        fast path: only a shrink between a grant and its use sends a waiter back."""
        if key is UNKEYED:  # take_again() between two attempts, or a plain take()
            await waiter
            return
        line = self.line
        line.count_sent_back(key)
        try:
            await waiter
        finally:
            line.uncount_sent_back(key)

    def queue_key(self, key: Hashable, entry: Queued) -> Ticket[_Entry]:
        """Put a job (submit_nowait(), or a map's) in ``key``'s line; entry.start() runs
        once it has a slot and room in its key."""
        ticket = self.line.push(key, entry)
        self.queued += 1
        self.schedule_wake()
        return ticket

    def unqueue_key(self, ticket: Ticket[_Entry]) -> bool:
        """A queued job's future was cancelled (from its cancel(), see
        QueuedFuture.on_drop): leave the line. False if it had left it already (started,
        or taken by drain()): nothing to undo."""
        if not self.line.discard(ticket):
            return False
        self.queued -= 1
        return True

    def begin(self, key: Hashable) -> Any:
        """A job of ``key`` is about to start (its function is called, its task made).
        Returns the start this one is nested in, for started(): a job's eager first step
        may start jobs of its own."""
        outer = self.starting
        self.starting = key
        return outer

    def started(self, task: object | None, key: Hashable, outer: Any) -> bool:
        """The start begun by begin() returned ``task`` (None: it did not start). Records
        the key of a job still running; False if the caller must give back the room (no
        job started, and none settled)."""
        settled = self.starting is SETTLED  # the job ran to its end in its start
        self.starting = outer
        if settled:
            return True
        if task is None:
            return False
        self.jobs[task] = key
        return True

    def end(self, task: object) -> None:
        """A started job settled (``task``: its task): give back its room in its key."""
        key = self.jobs.pop(task, _MISSING)
        if key is _MISSING:
            # Not recorded: an eager first step ran the job to its end inside its start,
            # so it is the innermost job being started (a job that settles from a done
            # callback settles in a later turn, recorded by then).
            key = self.starting
            if key is _MISSING or key is SETTLED:
                return  # (no keyed job: nothing to give back)
            self.starting = SETTLED
        self.line.release(key)

    def unstarted(self, key: Hashable) -> None:
        """A job granted room in ``key`` did not start (its start raised, or its map
        closed): give the room back. The caller gives the slot back."""
        self.line.release(key)

    @property
    def startable(self) -> bool:
        return super().startable or (
            self.free > 0 and not self.held and not self.backlog
            and self.line.peek() is not None
        )

    def admit(self) -> None:
        """Slots.admit, then the oldest startable keyed jobs while slots and tokens last."""
        super().admit()
        if self.held or self.backlog:
            return  # the plain backlog goes first (it holds no job without its room)
        line = self.line
        while self.free > 0:
            ticket = line.peek()
            if ticket is None:
                return
            entry = ticket.item
            if type(entry) is not Queued and entry.done():
                # A waiter cancelled before its task could leave the line (that task
                # runs take_key's except in a later step): it leaves now, uncounted by
                # _left_line, and its discard there finds nothing to undo.
                line.discard(ticket)
                continue
            if self.limiter is not None and not self.limiter.try_take():
                self.schedule_wake()
                return
            line.pop()
            self.hand_slot(entry)

    def schedule_wake(self) -> None:
        if self.free > 0 and self.wake_handle is None and (self.backlog or len(self.line)):
            delay = 0.0 if self.limiter is None else self.limiter.delay()
            self.wake_handle = self.loop.call_later(delay, self._on_wake)

    def drain(self, refusal: Callable[[], BaseException]) -> list[Queued]:
        jobs = super().drain(refusal)
        for entry in self.take_line():
            if isinstance(entry, Queued):
                jobs.append(entry)
            else:
                self.refuse(entry, refusal())
        return jobs

    @property
    def stranded(self) -> bool:
        """Whether jobs wait in the key lines that can never start: no job holds a slot
        (or is granted one), none pauses between two attempts, nothing waits in the
        plain backlog (a waiter sent back there holds its key's room), and no waiting
        job's key has room. What holds them back then is a key's room that no job will
        give back: lost by a job whose key raised as it ended (_settle._key_lost), or
        taken by one whose key changed. Not the hot path: asked only while someone waits
        for the executor to be idle (see _idle.check_idle)."""
        return (
            bool(self.line.waiting) and self.free == self.limit
            and not (self.pausing or self.held)
            and self.line.peek() is None
            and all(entry.done() for entry in self.backlog)  # (left the line: stale)
        )

    def take_line(self) -> list[_Entry]:
        """Take every job out of the key lines (the executor stops: drain; or they are
        stranded, see there): the queued jobs leave, uncounted, and are returned with the
        waiters still in line, for the caller to end. Rooms already taken stay so, as
        ``stats`` show them."""
        entries: list[_Entry] = []
        for entry in self.line.drain():
            if isinstance(entry, Queued):
                # (Live: a job whose future was cancelled left the line then, unqueue_key.)
                self.queued -= 1
                entry.leave()
                entries.append(entry)
            elif not entry.done():
                entries.append(entry)
            # (A waiter cancelled with its task, which has not left the line yet: it
            # uncounts itself in take_key's except, as in Slots.drain.)
        return entries

    def key_stats(self) -> tuple[int | None, tuple[Hashable, int] | None]:
        """How many keys have a job running or waiting, and the key with the most jobs
        waiting with their number (``None`` when no job waits)."""
        return self.line.active_keys, self.line.busiest()


_MISSING: Any = object()
SETTLED: Any = object()  # KeyedSlots.starting once the job being started has settled


def _key_and_limit(
    key: KeyFn, prepare: Callable[[Hashable], None], /, *args: Any, **kwargs: Any
) -> Hashable:
    """The job's key, then its key's limit if the key is not active. Both functions are
    the user's, so both run before the job's start or its place in line touches a count:
    a job either of them submits (of the same key too) finds every key whole, active
    with its limit or not active yet."""
    value = key(*args, **kwargs)
    if type(value) is CoroutineType:  # (see take_key_nowait) before max_per_key sees it
        raise awaitable_answer(value, "key")
    prepare(value)
    return value


def check_keying(key: object, max_per_key: object) -> MaxPerKey | None:
    """Validate the constructors' ``key`` and ``max_per_key`` (both doors): they go
    together, either without the other is a ``TypeError``. Returns ``max_per_key``."""
    if key is None and max_per_key is None:
        return None
    if key is None:
        raise TypeError("max_per_key needs key= (the function giving each job its key)")
    if not callable(key):
        raise TypeError(f"key must be a callable or None (got {key!r})")
    if is_async_callable(key):
        # Its coroutine would be the key: a new one per job, so no limit would hold.
        raise TypeError(
            f"key must be a plain function returning the key, not an async one (got {key!r})"
        )
    if max_per_key is None:
        raise TypeError("key= needs max_per_key= (how many jobs of one key may run)")
    return check_max_per_key(max_per_key)


def make_slots(
    limit: int, key: KeyFn | None, max_per_key: object
) -> tuple[Slots, KeyedSlots | None]:
    """The constructor's slots, and the same object again if they are KeyedSlots (when
    ``key`` is given: see check_keying), else None."""
    per_key = check_keying(key, max_per_key)
    if key is None or per_key is None:
        return Slots(limit), None
    slots = KeyedSlots(limit, key, per_key)
    return slots, slots
