"""KeyedSlots: the bridge's slots with per-key limits (``key=``, ``max_per_key=``).

The bridge counts the slots of both kinds of job (coroutine jobs on the loop, blocking
jobs on worker threads) itself, so the per-key limits live here too and hold for both
kinds. Jobs that wait wait in a :class:`~coroexecutor._keyed.KeyedLine` instead of the
FIFO backlog: the oldest job whose key has room takes a free slot, so a key at its limit
holds back no job of another key.

Like Slots, guarded by the HandOff's one lock. The submitter calls ``key()`` and a
callable ``max_per_key`` before it takes the lock (see :func:`key_of`), and the line
reads the limit it was handed (it asks only for the key of the job at hand). The one
user code that does run under the lock is the key's ``__hash__`` and ``__eq__``, as the
line's dicts file and find it: a limit documented in docs/bridge.rst ("Keys and the
bridge's lock"). Hashing the key before the lock would leave ``__eq__``; a token per
active key, found outside the lock, would cost every keyed job a lookup and a second
hold of the lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from concurrent.futures._base import FINISHED, PENDING
from types import CoroutineType
from typing import Any, Callable, Optional

from .._key_limits import check_limit, unhashable
from .._keyed import KeyedLine, MaxPerKey, Ticket
from .._stats import ExecutorStats
from .._validate import awaitable_answer
from ._future import BridgeFuture
from ._job import Job
from ._options import CoreOptions
from ._slots import Slots
from ._tuning import BridgeTuner

__all__ = ["KeyedSlots", "key_of", "make_slots"]

_MISSING: Any = object()


def make_slots(
    core: CoreOptions, tuner: Optional[BridgeTuner], key_lost: Callable[[Exception], None]
) -> Slots:
    """The bridge's slots: KeyedSlots with ``key=`` (the constructor checked the pair).
    ``key_lost``: see KeyedSlots."""
    if core.key is None or core.max_per_key is None:
        return Slots(core.max_workers, tuner)
    return KeyedSlots(core.max_workers, tuner, core.max_per_key, key_lost)


def key_of(
    key: Callable[..., Hashable], max_per_key: Optional[MaxPerKey], job: Job
) -> tuple[Hashable, int]:
    """The job's key and its key's limit, computed by the submitter before it takes the
    lock: what ``key()`` or ``max_per_key()`` raises (or a key that is no hashable or a
    coroutine, or a limit that is no int above 0) goes to the caller of submit."""
    value = key(*job.args, **job.kwargs)
    if type(value) is CoroutineType:  # see the core's KeyedSlots.take_key_nowait
        raise awaitable_answer(value, "key")
    try:
        hash(value)
    except TypeError as exc:
        raise unhashable(value) from exc
    if isinstance(max_per_key, int) or max_per_key is None:
        return value, max_per_key or 1  # (None: not reached, the constructor checks)
    return value, check_limit(max_per_key(value), value)


class KeyedSlots(Slots):
    """Slots whose waiting jobs queue per key (see the module docstring).

    Invariants (besides Slots'): ``keys`` holds the key of every job holding a slot that
    came through :meth:`take_key` or the line, and whose room in its key is not given
    back yet (nor lost: see :meth:`_lose_room`); ``tickets`` the ticket of every job
    waiting in the line (``_in_backlog`` set on its future).

    ``key_lost(exc)`` is called, under the lock, with the error of a key whose
    ``__hash__`` or ``__eq__`` raised as its room was given back: the HandOff reports it
    once the lock is free (it calls no user code)."""

    def __init__(
        self,
        max_workers: int,
        tuner: Optional[BridgeTuner],
        max_per_key: MaxPerKey,
        key_lost: Callable[[Exception], None],
    ) -> None:
        super().__init__(max_workers, tuner)
        self._key_lost = key_lost
        self.keyed = True
        self.limit = 0  # the limit of the key at hand: key_of() computed it unlocked
        per_key = max_per_key if isinstance(max_per_key, int) else self._limit_at_hand
        self.line: KeyedLine[Job] = KeyedLine(per_key)
        self.keys: dict[BridgeFuture[Any], Hashable] = {}
        self.tickets: dict[BridgeFuture[Any], Ticket[Job]] = {}
        # The job take_key has at hand, its key, and how many of that key ran before it:
        # undo_submit reads whether the line counted it, which ``keys`` may not say yet.
        self.at_hand: Optional[tuple[BridgeFuture[Any], Hashable, int]] = None

    def _limit_at_hand(self, key: Hashable) -> int:
        return self.limit

    def take_nowait(self) -> bool:
        return False  # a keyed job needs its key: see take_key

    def take_key(self, job: Job, key: Hashable, limit: int) -> bool:
        """Give the job a slot and room in ``key`` now (True), or put it in its key's
        line (False). ``limit``: ``max_per_key(key)``, from key_of()."""
        future = job.future
        self.limit = limit
        self.at_hand = (future, key, self.line.running_of(key))
        if (
            self.held < self.max_workers
            and not self.paused
            and not self.backlog  # retries waiting for a slot after their pause go first
            and self.line.try_start(key)
        ):
            self.held += 1
            self.keys[future] = key
            return True
        # Recorded before it enters the line, which it does whole or not at all: a
        # submit() cut short anywhere here is undone by withdraw_waiting (undo_submit).
        future._in_backlog = True
        self.tickets[future] = ticket = self.line.ticket(key, job)
        self.line.enter(ticket)
        return False

    def undo_submit(
        self, job: Job, submitted: int, held: int, unstart: Callable[[Job], None]
    ) -> None:
        """As Slots.undo_submit, and the room in its key that take_key took: the line may
        have counted the job (try_start) before ``keys`` recorded it, for release."""
        at_hand, self.at_hand = self.at_hand, None
        if at_hand is not None and at_hand[0] is job.future and job.future not in self.keys:
            _, key, before = at_hand
            if self.line.running_of(key) > before:
                self.line.release(key)
        super().undo_submit(job, submitted, held, unstart)

    def next_job(self) -> Optional[Job]:
        """Give a free slot to a retried job waiting after its pause (in the plain
        backlog: it holds its key's room already), else to the oldest waiting job whose
        key has room, if any."""
        if self.held >= self.max_workers or self.paused:
            return None
        if self.backlog:
            job = super().next_job()
            if job is not None:
                return job
        line = self.line
        while True:
            ticket = line.pop()  # counts it in its key
            if ticket is None:
                return None
            job = ticket.item
            future = job.future
            del self.tickets[future]
            future._in_backlog = False
            if future._state == PENDING:
                self.held += 1
                self.keys[future] = ticket.key
                if self.tuner is not None:
                    self.tuner.started(future)
                return job
            # Cancelled while it waited, and not counted yet: cancel() changes the state
            # before HandOff.cancel_job_threadsafe withdraws it (under the lock).
            line.release(ticket.key)
            self.cancelled += 1

    def release(self, future: BridgeFuture[Any]) -> None:
        super().release(future)
        self._give_room_back(future)

    def pause(self, future: BridgeFuture[Any], core_failed: Optional[bool]) -> bool:
        """As Slots.pause: the job keeps its key's room while it pauses, unless it is
        cancelled instead of pausing."""
        if super().pause(future, core_failed):
            return True
        self._give_room_back(future)
        return False

    def cancelled_waiting(self, future: BridgeFuture[Any]) -> None:
        self._give_room_back(future)  # a retry after its pause holds its key's room

    def withdraw_waiting(self, future: BridgeFuture[Any]) -> None:
        ticket = self.tickets.pop(future, None)
        if ticket is not None:
            self.line.discard(ticket)

    def withdraw_pausing(self, future: BridgeFuture[Any]) -> bool:
        """As Slots.withdraw_pausing: the job cancelled in its pause gives its key's room
        back (the caller then grants the free slots: a job of its key may start). The
        room first: a Ctrl-C after it leaves the job pausing, and cancel() then calls this
        again, which does the rest (the room is not given twice)."""
        if future not in self.pausing:
            return False
        self._give_room_back(future)
        return super().withdraw_pausing(future)

    def _give_room_back(self, future: BridgeFuture[Any]) -> None:
        """Whole or not at all (a KeyboardInterrupt at any step). A key whose
        ``__hash__`` or ``__eq__`` raises keeps its room: see _lose_room."""
        key = self.keys.get(future, _MISSING)
        if key is _MISSING:
            return
        try:
            running = self.line.running_of(key)
        except Exception as exc:  # the key's __hash__ or __eq__: nothing changed yet
            self._lose_room(future, exc)
            return
        try:
            del self.keys[future]
            self.line.release(key)  # whole or not at all
        except Exception as exc:  # the key's, again: one that raises only at times
            self._lose_room(future, exc)
        except BaseException:
            if future not in self.keys and self.line.running_of(key) == running:
                self.line.release(key)  # out of keys: give its room back, once
            raise

    def _lose_room(self, future: BridgeFuture[Any], exc: Exception) -> None:
        """The job's key cannot be found to give its room back: its ``__hash__`` or
        ``__eq__`` raised ``exc`` (a key that changed while its job ran: not supported,
        see semantics.rst). The room stays taken and the key active; the jobs waiting in
        its line never start (a shutdown cancels them: HandOff.idle_at_shutdown). The
        job is forgotten here, so that nothing hashes its key again (counts), and the
        error is reported. Once raised from here, it killed the worker thread that ended
        a blocking job, or cut short the loop's settling of coroutine jobs: the slots of
        the jobs that ended with it never came back, nor did waiting jobs start."""
        self.keys.pop(future, None)
        self._key_lost(exc)

    def withdraw(self, future: BridgeFuture[Any]) -> bool:
        """As Slots.withdraw, out of its key's line first, so that a Ctrl-C anywhere
        leaves it in the line and uncounted, or out and counted, or out and uncounted
        with ``_in_backlog`` still set: cancel() then calls this again, which counts it."""
        if not future._in_backlog:
            return False
        ticket = self.tickets.get(future)  # (None: drain() took it out of the line already)
        if ticket is not None:
            self.line.discard(ticket)  # whole or not at all; False once it is out
            del self.tickets[future]
        return super().withdraw(future)

    def waiting(self) -> list[BridgeFuture[Any]]:
        return super().waiting() + list(self.tickets)  # (tickets: the line's, in order)

    def drain(self) -> list[Job]:
        jobs = super().drain() + self.line.drain()
        self.tickets.clear()
        return jobs

    def counts(
        self,
        core: ExecutorStats,
        unstarted: int,
        early: Sequence[object] = (),
        *,
        failed: int = 0,
        unbegun: int = 0,
    ) -> ExecutorStats:
        stats = super().counts(core, unstarted, early, failed=failed, unbegun=unbegun)
        line = self.line
        active = line.active_keys - self._idling()
        return dataclasses.replace(stats, active_keys=active, busiest_key=line.busiest())

    def _idling(self) -> int:
        """How many active keys are idle but for direct jobs that are over: as Slots.counts
        does for the jobs, a direct job whose future is set is over, though its worker has
        not given its key's room back yet. A key whose ``__hash__`` or ``__eq__`` raises
        counts as active, as it stays once its room is lost (_lose_room). (Raised, the
        error failed the read of ``stats`` that a done callback of the job, in its
        worker, posted to the loop: the read never returned, nor the slot.)"""
        line = self.line
        ended: dict[Hashable, int] = {}
        idling = 0
        for future in self.direct:
            if future._state == FINISHED and future in self.keys:
                key = self.keys[future]
                try:
                    ended[key] = ended.get(key, 0) + 1
                except Exception:  # the key's __hash__ or __eq__ (see above)
                    continue
        for key, n in ended.items():
            try:
                idling += line.running_of(key) == n and not line.waiting_of(key)
            except Exception:  # the key's, again: one that raises only at times
                continue
        return idling
