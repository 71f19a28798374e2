"""SlotLine: the base of Slots that owns their counts and the line for slots: the FIFO
backlog, handing free slots to it in order (``admit``, the wake-up timer), and a grant
that a shrink of the limit takes back before its waiter uses it.

Part of the one owner of the counts (see :class:`~coroexecutor._slots.Slots`, where the
invariant and the backlog are described, and the operations its callers use are). It
calls nothing of its subclasses but what it defines itself (``admit``, ``startable``,
``schedule_wake`` and ``_wait_sent_back``, which KeyedSlots extends), and, as Slots,
nothing above it but the start function a queued job brought with it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Hashable
from typing import Any, Callable

from ._entries import FIRST, Queued, SentBack
from ._ratelimit import RateLimiter

__all__ = ["UNKEYED", "SlotLine"]

UNKEYED: Any = object()  # the key of a slot waiter without one (see _wait_sent_back)


class SlotLine:
    """The counts and the backlog of :class:`~coroexecutor._slots.Slots`, and how slots
    reach the entries in line (see there)."""

    __slots__ = (
        "backlog", "free", "granted", "held", "limit", "limiter", "loop", "pausing",
        "queued", "refusal", "unheld", "unresumed", "waiting", "wake_handle",
    )

    loop: asyncio.AbstractEventLoop  # set by bind(), before anything can wait or queue

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.free = limit  # slots neither held by a job nor granted to a waiter
        self.granted = 0  # slots handed to a waiter that has not resumed yet
        # Those waiters, each with the error it was turned away with since (see refuse).
        self.unresumed: dict[asyncio.Future[None], BaseException | None] = {}
        self.waiting = 0  # live slot waiters in the backlog (not yet accepted)
        self.queued = 0  # live queued jobs in the backlog (accepted: stats show them)
        self.pausing = 0  # jobs between two attempts (retry=): accepted, holding no slot
        self.unheld: set[object] = set()  # pausing jobs cancelled, not settled yet
        self.backlog: collections.deque[Queued | asyncio.Future[None]] = collections.deque()
        self.limiter: RateLimiter | None = None
        self.wake_handle: asyncio.Handle | None = None
        self.held = False  # hold(): nothing starts (the initializer runs)
        # drain()'s error factory: from then on every waiter is refused with it.
        self.refusal: Callable[[], BaseException] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    #
    # Counts
    #

    @property
    def running(self) -> int:
        """Slots held by jobs (a waiter granted one counts only once it resumes)."""
        return self.limit - self.free - self.granted

    @property
    def busy(self) -> bool:
        """Whether a job runs, or a slot is granted, or anything waits in the backlog."""
        return self.limit != self.free or bool(self.queued or self.waiting or self.pausing)

    #
    # The backlog
    #

    @property
    def startable(self) -> bool:
        """Whether admit() would hand out a slot now (a token aside)."""
        return self.free > 0 and bool(self.backlog) and not self.held

    def admit(self) -> None:
        """Hand free slots to the backlog in FIFO order while slots and tokens last.

        A waiter's future is resolved (it resumes in a later turn, see take()); a queued
        job's ``start`` runs now, in its context."""
        if self.held:
            return  # release_hold() admits
        backlog = self.backlog
        while self.free > 0 and backlog:
            entry = backlog[0]
            if entry.done():  # a waiter whose caller was cancelled, or a cancelled job
                backlog.popleft()  # already uncounted
                continue
            if self.limiter is not None and not self.limiter.try_take():
                self.schedule_wake()
                return
            backlog.popleft()
            self.hand_slot(entry)

    def hand_slot(self, entry: Queued | asyncio.Future[None]) -> None:
        """Hand a free slot to the entry just taken from the front of a line (and its
        start token, already taken): a queued job starts now, in its context; a waiter is
        granted it and resumes in a later turn, until when it may still be turned away
        (refuse)."""
        self.free -= 1
        if isinstance(entry, Queued):
            self.queued -= 1
            entry.leave_to_start()  # a cancel from now on drops nothing
            entry.ctx.run(entry.start, entry)
        else:
            self.waiting -= 1
            self.granted += 1
            self.unresumed[entry] = None
            entry.set_result(None)

    def schedule_wake(self) -> None:
        """Make sure the backlog moves in a later turn when a slot or a token is already
        available (one timer at a time; timed for the next token under a rate limit)."""
        if self.free > 0 and self.wake_handle is None:
            delay = 0.0 if self.limiter is None else self.limiter.delay()
            self.wake_handle = self.loop.call_later(delay, self._on_wake)

    def _on_wake(self) -> None:
        self.wake_handle = None
        self.admit()

    #
    # Waiting in line
    #

    async def _wait_in_line(self, waiter: asyncio.Future[None], key: Hashable = UNKEYED) -> None:
        """Wait as ``waiter`` (``key``: the keyed waiter's, see KeyedSlots.take_key) until
        granted a slot that is still there as it resumes (see _must_wait_again)."""
        try:
            await waiter
            self._resumed(waiter)
            while self.free + self.granted <= 0 or (
                self.backlog and isinstance(self.backlog[0], FIRST)
            ):
                if not self._must_wait_again(waiter):
                    break
                waiter = self._wait_again(waiter)
                await self._wait_sent_back(waiter, key)
                self._resumed(waiter)
        except asyncio.CancelledError:
            self._left_line(waiter)
            raise
        self.granted -= 1

    def _resumed(self, waiter: asyncio.Future[None]) -> None:
        """A waiter granted a slot resumes: unless it was turned away since (refuse), when
        the slot goes back unused and its error is raised (the caller passes the slot on)."""
        error = self.unresumed.pop(waiter, None)
        if error is not None:
            self._ungrant()
            raise error

    #
    # A shrink between a grant and its use
    #

    def _must_wait_again(self, waiter: asyncio.Future[None]) -> bool:
        """Whether a waiter just resumed with a granted slot must give it back.

        Yes if ``limit`` jobs run (the limit shrank between the grant and now: granted
        waiters resume in the order they were granted, so the earliest start while there
        is room), or if a waiter ahead of it in the line was sent back so and still waits
        (a slot freed meanwhile must go to that one first). A waiter that was sent back
        itself has none of those ahead of it. Once drained, never: the caller gives the
        slot back and raises."""
        if self.refusal is not None:
            return False
        if self.free + self.granted <= 0:
            return True
        if isinstance(waiter, SentBack):
            return False
        for entry in self.backlog:
            if not isinstance(entry, FIRST):
                return False
            # (A done one was cancelled: it left the line. A Resuming one takes no slot
            # granted before it lined up; a Requeued job is no waiter: admit() starts it.)
            if type(entry) is SentBack and not entry.done():
                return True
        return False

    def _wait_again(self, waiter: asyncio.Future[None]) -> asyncio.Future[None]:
        """Give the granted slot back and wait again, ahead of every waiter never granted
        one and behind those sent back before us (see _must_wait_again). ``waiter``: the
        place in line that was granted the slot."""
        self._ungrant()
        first = waiter.first if isinstance(waiter, SentBack) else waiter
        waiter = self._line_up_first(first=first)
        if self.free > 0:  # we stepped aside for a waiter sent back before us: grant it
            self.admit()
        return waiter

    async def _wait_sent_back(self, waiter: asyncio.Future[None], key: Hashable) -> None:
        """Wait in the place _wait_again gave a waiter. KeyedSlots extends it: a keyed
        waiter keeps its key's room meanwhile, yet waits (see count_sent_back)."""
        await waiter

    def _ungrant(self) -> None:
        """A granted slot comes back unused, with its start token: no start came of it."""
        self.granted -= 1
        self.free += 1
        if self.limiter is not None:
            self.limiter.put_back()

    def _line_up_first(
        self, kind: type[SentBack] = SentBack, *, first: asyncio.Future[None] | None = None
    ) -> SentBack:
        """A waiter behind those that go first (SentBack, Resuming and Requeued entries)
        and ahead of everyone else (``first``: see SentBack)."""
        waiter = kind(loop=self.loop)
        waiter.first = first
        self.backlog.insert(self._first_place(), waiter)
        self.waiting += 1
        return waiter

    def _first_place(self) -> int:
        """Where an entry that goes first lines up: behind the others that do (FIRST, a
        prefix of the backlog), ahead of every entry never granted a slot."""
        backlog = self.backlog
        ahead = 0
        while ahead < len(backlog) and isinstance(backlog[ahead], FIRST):
            ahead += 1
        return ahead

    def live_waiters(self) -> list[asyncio.Future[None]]:
        """The waiters that can still be turned away (refuse()): those in line, and those
        granted a slot that have not resumed yet (nor been turned away)."""
        live = [e for e in self.backlog if not isinstance(e, Queued) and not e.done()]
        live += [waiter for waiter, error in self.unresumed.items() if error is None]
        return live

    def place_of(self, first: asyncio.Future[None]) -> asyncio.Future[None] | None:
        """Where the caller that lined up as ``first`` waits now, if it can still be turned
        away: there, or where a shrink sent it back to (see SentBack)."""
        for entry in self.live_waiters():
            if entry is first or (type(entry) is SentBack and entry.first is first):
                return entry
        return None

    def _left_line(self, waiter: asyncio.Future[None]) -> None:
        """A slot waiter was cancelled: leave the line, or give back a slot just granted
        (asyncio's Semaphore.acquire has the same race). The caller of take() passes that
        slot on (admit()), as it alone knows whether jobs may start now."""
        if self.unresumed.pop(waiter, False) is not False:
            self._ungrant()  # granted (and perhaps turned away since): never resumed
        elif waiter.cancelled():
            self.waiting -= 1  # we left the line; admit() will skip the entry
        elif waiter.exception() is None:
            self._ungrant()
