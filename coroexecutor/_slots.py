"""Slots: the executor's capacity (max_workers), its FIFO backlog and its start-rate limit.

One object owns every count that the invariant below ties together, and every change of
them is a method here or in its base, :class:`~coroexecutor._slot_line.SlotLine` (the
counts, admitting the backlog, waiting in line). It runs on the executor's event loop
thread only, holds no bound method of the executor and calls nothing above it: the one
thing it calls is the start function of a queued job, which the job brought with it (as
a future calls its done callbacks).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Hashable
from typing import Callable

from ._entries import Queued, Requeued, Resuming
from ._ratelimit import RateLimiter
from ._slot_line import SlotLine

__all__ = ["Slots"]


class Slots(SlotLine):
    """How many jobs may run, which wait, and in what order they start.

    Invariant: ``free + running + granted == limit``, where *running* counts the slots
    held by jobs (and by callers about to start one) and *granted* the slots handed to a
    waiter that has not resumed yet. ``free`` may go negative while the limit shrinks
    under running jobs: nothing starts until it is positive again.

    The backlog is one FIFO of two kinds of entry: slot waiters (futures, from ``take()``:
    submit() and map()) and queued jobs (:class:`Queued`, from submit_nowait()). A slot
    that comes free goes to the entry at the front, so producers of both kinds share the
    slots in arrival order. Entries cancelled while they wait stay in the deque, already
    uncounted, until they reach the front.

    Vocabulary: ``take_nowait()`` (the fast path: a slot now, or False), ``take()`` (the
    same plus a wait in line), ``release()`` (a slot comes back), ``queue()`` (a job
    waits for a slot without a waiter), ``admit()`` (hand free slots to the backlog in
    order), ``drain()`` (refuse everyone still waiting), ``resize()`` and ``hold()``.
    """

    __slots__ = ()

    def key_stats(self) -> tuple[int | None, tuple[Hashable, int] | None]:
        """``stats.active_keys`` and ``stats.busiest_key``: None without key=."""
        return None, None

    #
    # Taking and giving back
    #

    def take_nowait(self) -> bool:
        """Take a slot if one is free, nobody waits ahead and a start token is at hand.

        The fast path of every job start: reads two fields and, with a rate limit,
        asks the limiter."""
        if self.free > 0 and not self.backlog and (
            self.limiter is None or self.limiter.try_take()
        ):
            self.free -= 1
            return True
        return False

    def token_delay(self) -> float | None:
        """Seconds until a start token arrives, if a token is all take_nowait() lacked."""
        if self.limiter is not None and self.free > 0 and not self.backlog:
            return self.limiter.delay()
        return None

    async def take(self, waiter: asyncio.Future[None] | None = None) -> None:
        """Wait in line for a slot (FIFO with every other waiter and queued job), as
        ``waiter`` (a submit()'s, see refuse) or a new future. Returns holding a slot,
        used only while fewer than ``limit`` jobs run and no waiter sent back by a
        shrink is ahead: see _must_wait_again.

        Cancellation: leaves the line; a slot granted at that moment is given back, and
        the caller passes it on (admit()). Raises what drain() was given, if the line is
        drained meanwhile (or refuse() its error).
        """
        if self.refusal is not None:
            raise self.refusal()
        waiter = self.loop.create_future() if waiter is None else waiter
        self.backlog.append(waiter)
        self.waiting += 1
        self.schedule_wake()
        await self._wait_in_line(waiter)

    async def take_again(self) -> None:
        """Wait for a slot ahead of every waiter and queued job never granted one: a job
        that gave its slot back between two attempts (retry=) takes one again. Behaves as
        a waiter sent back by a shrink (see _wait_again), but takes no slot granted before
        it lined up (see Resuming), and as take() otherwise."""
        if self.refusal is not None:
            raise self.refusal()
        waiter = self._line_up_first(Resuming)
        self.schedule_wake()
        await self._wait_in_line(waiter)

    def release(self) -> None:
        """A slot comes back (its job ended, or its holder will not start one).

        Does not start the backlog: the caller calls admit() when it may start jobs
        now, or schedule_wake() to have it done in a later turn."""
        self.free += 1

    def pause(self) -> None:
        """A job gives its slot back between two attempts (retry=); it stays accepted.

        The next in line gets the slot first thing in the next turn (not now: we are
        inside the job's step), before the job's own next step, so even after a pause of
        0 seconds the job lines up again (take_again()) only once the slot has reached
        that one. A wake-up timer due now would come too late: a timer runs after the
        ready callbacks of its turn, the job's step among them. A wake-up timed for the
        next start token keeps its time: the job lines up for that token first, as after
        any pause shorter than the wait for it."""
        self.free += 1
        self.pausing += 1
        if not self.startable:
            return  # nobody waits (or the initializer runs: release_hold() admits)
        if self.limiter is not None and self.limiter.delay() > 0:
            self.schedule_wake()
            return
        if self.wake_handle is not None:
            self.wake_handle.cancel()
        self.wake_handle = self.loop.call_soon(self._on_wake)

    def queue_again(self, entry: Requeued) -> None:
        """Put the next attempt of a job that has run before in line for a slot (the
        bridge's retry=: each attempt is a job of the core), ahead of every job never
        started, as take_again() puts a job of ours (see _first_place)."""
        self.backlog.insert(self._first_place(), entry)
        self.queued += 1
        self.schedule_wake()

    def resumed(self) -> None:
        """A pausing job holds a slot again (take_again() returned)."""
        self.pausing -= 1

    def abandon(self, job: object) -> None:
        """A pausing job (its task: ``job``) is cancelled: it ends holding no slot, still
        counted as pausing until it settles (see release_job)."""
        self.unheld.add(job)

    def release_job(self, job: object) -> None:
        """A job that did not succeed settles: release() its slot, or, if it ended in a
        pause (abandon), leave the pausing jobs (it had no slot)."""
        if self.unheld and job in self.unheld:
            self.unheld.discard(job)
            self.pausing -= 1
        else:
            self.free += 1

    def queue(self, entry: Queued) -> None:
        """Put a job in line for a slot; entry.start() runs once it has one."""
        self.backlog.append(entry)
        self.queued += 1
        self.schedule_wake()

    def unqueue(self) -> None:
        """A queued job left the line: its future was cancelled (from its cancel(), see
        QueuedFuture.on_drop; its entry stays in the backlog, done, until admit() or
        drain() drops it)."""
        self.queued -= 1

    def resize(self, limit: int) -> None:
        """Change the limit. Shrinking cancels nothing: running jobs keep their slots and
        ``free`` stays below 1 until enough of them end."""
        self.free += limit - self.limit
        self.limit = limit

    #
    # Refusing and holding
    #

    def drain(self, refusal: Callable[[], BaseException]) -> list[Queued]:
        """Empty the backlog for good: every slot waiter fails with ``refusal()`` (and so
        does every later take()); the live queued jobs are returned, already uncounted,
        for the caller to end."""
        self.refusal = refusal
        backlog, self.backlog = self.backlog, collections.deque()
        jobs: list[Queued] = []
        for entry in backlog:
            if entry.done():
                continue  # left the line: already uncounted
            if isinstance(entry, Queued):
                self.queued -= 1
                entry.leave()
                jobs.append(entry)
            else:
                self.refuse(entry, refusal())
        return jobs

    def refuse(self, waiter: asyncio.Future[None], error: BaseException) -> None:
        """Turn a slot waiter away with ``error``. Done, it stays in line: admit() drops it.
        One granted a slot that has not resumed yet gives the slot back as it resumes,
        and raises ``error`` then (see SlotLine._resumed)."""
        if waiter in self.unresumed:
            self.unresumed[waiter] = error
            return
        self.waiting -= 1
        waiter.set_exception(error)
        waiter.exception()  # no log if its caller is gone

    def hold(self) -> None:
        """Start nothing until release_hold(); until then every take_nowait() fails (a
        done gate at the front of the backlog sends callers to their slow path, so the
        fast path pays nothing for this), and the hold counts as a waiter (``busy``)."""
        gate: asyncio.Future[None] = self.loop.create_future()
        gate.cancel()  # a stale entry: admit() drops it once the hold is released
        self.backlog.append(gate)
        self.waiting += 1
        self.held = True

    def release_hold(self) -> None:
        self.held = False
        self.waiting -= 1

    #
    # The start rate
    #

    def set_rate(self, rate: float | None, burst: int) -> None:
        """Limit the start rate from now on (``None``: no limit)."""
        if rate is None:
            self.limiter = None
        elif self.limiter is None:
            self.limiter = RateLimiter(rate, burst, self.loop.time)
        else:
            self.limiter.reconfigure(rate, burst)
        # A wake-up for the backlog was timed for the old rate: time it for the new one.
        if self.wake_handle is not None:
            self.wake_handle.cancel()
            self.wake_handle = None
        if self.backlog:
            self.schedule_wake()

    def close(self) -> None:
        """The executor closed: no wake-up is left behind."""
        self.backlog.clear()
        if self.wake_handle is not None:
            self.wake_handle.cancel()
            self.wake_handle = None
