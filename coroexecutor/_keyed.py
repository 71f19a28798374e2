"""KeyedLine: per-key limits on running jobs (``key=``, ``max_per_key=``), loop-free.

A job has a key (say, the host of its URL). At most ``max_per_key`` jobs of one key run
at once; the jobs of a key wait in their own FIFO line, and when a global slot frees,
the *oldest startable* job goes first: the oldest waiting job whose key has room. A key
at its limit therefore never holds back jobs of other keys (no head-of-line blocking).

The global limit (``max_workers``), the rate limit and the start itself belong to the
caller: this structure answers "may this job start now?" and "which waiting job goes
next?", and counts. It never calls back into the caller; nothing in it knows of event
loops. Its memory is bounded by what is live: a key with nothing running and nothing
waiting has no state left, so a crawl over a million hosts does not grow per host seen.

Costs: starting at once and finishing are a few dict operations (the executor's fast
path); leaving the line is O(1) amortised; waiting and being picked are O(log k), k the
number of keys with room and a waiting job (a heap holds the head of each such key's
line, ordered by arrival).
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Hashable
from typing import Generic, Optional, TypeVar

from ._key_counts import KeyCounts
from ._key_limits import MaxPerKey, check_max_per_key, unhashable
from ._keyed_ticket import Line, Ticket, clean_left
from ._typing import final

__all__ = ["KeyedLine", "MaxPerKey", "Ticket", "check_max_per_key"]

T = TypeVar("T")

@final
class KeyedLine(KeyCounts, Generic[T]):
    """Per-key running counts and FIFO lines, with the oldest startable job first.

    The caller owns the global limit: it calls :meth:`try_start` on its fast path when a
    global slot is free, :meth:`push` when the job must wait, :meth:`pop` while global
    slots are free, :meth:`release` when a job of a key ends, and :meth:`discard` when a
    waiting job is cancelled. With a ``max_per_key`` function that is user code, it calls
    :meth:`prepare` first, for each job. The counts and limits of each key are kept by
    the base, :class:`~coroexecutor._key_counts.KeyCounts`.
    """

    __slots__ = ("_heads", "_lines", "_lone_lines", "_seq", "waiting")

    def __init__(self, max_per_key: MaxPerKey) -> None:
        super().__init__(max_per_key)
        # With the base's _running and _limits, these hold active keys only.
        self._lines: dict[Hashable, Line] = {}  # keys with jobs waiting
        self._lone_lines = 0  # keys in _lines with nothing running
        # The head ticket of every key with room and a waiting job, as (seq, ticket);
        # also dead entries (tickets that left the line) until they surface or compaction.
        self._heads: list[tuple[int, Ticket[T]]] = []
        self._seq = 0
        self.waiting = 0  # jobs waiting, all keys (read on the hot path: no __len__ call)

    def __repr__(self) -> str:
        return f"<KeyedLine keys={self.active_keys} waiting={self.waiting}>"

    def __len__(self) -> int:
        """How many jobs wait (all keys)."""
        return self.waiting

    @property
    def active_keys(self) -> int:
        """How many keys have a job running or waiting."""
        return len(self._running) + self._lone_lines

    def waiting_of(self, key: Hashable) -> int:
        return 0 if (line := self._lines.get(key)) is None else line.waiting

    #
    # The caller's operations
    #

    def try_start(self, key: Hashable) -> bool:
        """Count a job of ``key`` as running and return True if it may start now: its key
        has room, none of its key waits, and no startable job of any key waits (it would
        be older). Call it only with a global slot free."""
        running = self._running
        try:
            n = running.get(key, 0)
        except TypeError as exc:
            raise unhashable(key) from exc
        if key in self._lines or (self._heads and self.peek() is not None):
            return False
        if n >= (self._per_key if self._limit_of is None else self._limit(key)):
            return False  # (a key with no job running always has room)
        running[key] = n + 1
        return True

    def release(self, key: Hashable) -> None:
        """A running job of ``key`` ended (however it ended). Whole: an exception from a
        step after the count's (a KeyboardInterrupt) has the rest done (the caller's hot
        path: no call more for it, the handler costs nothing until it runs)."""
        running = self._running
        n = running[key] - 1
        try:
            if n:
                running[key] = n
            else:
                del running[key]
            line = self._lines.get(key)
            if line is None:
                if not n and self._limit_of is not None:
                    del self._limits[key]
                return
            if not n:
                self._lone_lines += 1
            if n == self._limit(key) - 1:  # it had no room: now its head is a candidate
                head = line.tickets[0]
                heapq.heappush(self._heads, (head.seq, head))
        except BaseException:
            if running.get(key, 0) != n:  # (else the count is done: see _resync)
                if n:
                    running[key] = n
                else:
                    running.pop(key, None)
            self._resync(key)
            raise

    def push(self, key: Hashable, item: T) -> Ticket[T]:
        """Put a job of ``key`` in its key's line; the ticket lets it leave the line."""
        ticket = self.ticket(key, item)
        self.enter(ticket)
        return ticket

    def ticket(self, key: Hashable, item: T) -> Ticket[T]:
        """A ticket for ``enter``, not live yet: a caller that must be able to take a job
        back after a KeyboardInterrupt records it first (``discard`` of it does nothing
        until ``enter`` has returned, or been cut short after its last step)."""
        self._seq += 1
        ticket = Ticket(key, item, self._seq)
        ticket.live = False
        return ticket

    def enter(self, ticket: Ticket[T]) -> None:
        """Put a ticket in its key's line, whole or not at all: an exception from any step
        (a KeyboardInterrupt) takes back those done before it."""
        key = ticket.key
        try:
            line = self._lines.get(key)
        except TypeError as exc:
            raise unhashable(key) from exc
        limit = self._limit(key)  # may raise (a bad max_per_key()): nothing changed yet
        lone, waiting = self._lone_lines, self.waiting  # for _undo_enter
        try:
            if line is None:
                line = self._lines[key] = Line()
                if key not in self._running:
                    self._lone_lines += 1
            line.tickets.append(ticket)
            line.waiting += 1
            self.waiting += 1
            self._count_waiting(key, line.waiting - 1, line.waiting)
            ticket.live = True
            if line.waiting == 1 and self._running.get(key, 0) < limit:
                heapq.heappush(self._heads, (ticket.seq, ticket))  # a dead entry is fine
        except BaseException:
            self._undo_enter(ticket, lone, waiting)
            raise

    def _undo_enter(self, ticket: Ticket[T], lone: int, waiting: int) -> None:
        """Take back any first steps of ``enter``: ``lone`` and ``waiting`` are the counts
        it found."""
        ticket.live = False  # its heap entry, if pushed, is a dead one
        key = ticket.key
        self._lone_lines, self.waiting = lone, waiting
        line = self._lines.get(key)
        if line is not None:
            if line.tickets and line.tickets[-1] is ticket:
                line.tickets.pop()
            line.waiting = sum(t.live for t in line.tickets)
            if not line.waiting:
                del self._lines[key]
        self._rebucket(key, 0 if line is None else line.waiting)
        if key not in self._lines and key not in self._running and self._limit_of is not None:
            self._limits.pop(key, None)

    def peek(self) -> Optional[Ticket[T]]:
        """The oldest waiting job whose key has room, without starting it."""
        heads = self._heads
        while heads:
            ticket = heads[0][1]
            if ticket.live:
                return ticket
            heapq.heappop(heads)  # it left the line after it became a head
        return None

    def pop(self) -> Optional[Ticket[T]]:
        """Start the oldest waiting job whose key has room: count it as running and
        return its ticket (no longer live). ``None`` if no waiting job may start."""
        ticket = self.peek()
        if ticket is None:
            return None
        heapq.heappop(self._heads)
        ticket.live = False
        key = ticket.key
        line = self._lines[key]
        assert line.tickets[0] is ticket
        line.tickets.popleft()
        line.waiting -= 1
        self.waiting -= 1
        self._count_waiting(key, line.waiting + 1, line.waiting)
        n = self._running.get(key, 0) + 1
        self._running[key] = n
        if n == 1:
            self._lone_lines -= 1
        if not line.waiting:
            del self._lines[key]
            return ticket
        clean_left(line)
        if n < self._limit(key):
            head = line.tickets[0]
            heapq.heappush(self._heads, (head.seq, head))
        return ticket

    def discard(self, ticket: Ticket[T]) -> bool:
        """Take a waiting job out of its line (it was cancelled), whole or not at all: an
        exception from any step (a KeyboardInterrupt) has the rest done. False if it had
        already started or left."""
        if not ticket.live:
            return False
        try:
            self._discard(ticket)
        except BaseException:
            ticket.live = False
            self._resync(ticket.key)
            raise
        return True

    def _discard(self, ticket: Ticket[T]) -> None:
        ticket.live = False
        key = ticket.key
        line = self._lines[key]
        line.waiting -= 1
        self.waiting -= 1
        self._count_waiting(key, line.waiting + 1, line.waiting)
        if not line.waiting:
            del self._lines[key]
            if key not in self._running:
                self._lone_lines -= 1
                if self._limit_of is not None:
                    del self._limits[key]
        else:
            was_head = line.tickets[0] is ticket
            clean_left(line)
            if was_head and self._running.get(key, 0) < self._limit(key):
                # Its heap entry is dead now: the next in line takes its place.
                head = line.tickets[0]
                heapq.heappush(self._heads, (head.seq, head))
            elif len(line.tickets) > 2 * line.waiting + 8:  # mostly dead: compact
                line.tickets = collections.deque(t for t in line.tickets if t.live)
        if len(self._heads) > 2 * len(self._lines) + 32:  # mostly dead heads: compact
            self._heads = [entry for entry in self._heads if entry[1].live]
            heapq.heapify(self._heads)

    def _resync(self, key: Hashable) -> None:
        """Bring what depends on ``key``'s running count and live tickets back in line with
        them, wherever a step cut short (discard, release) left it. Not the hot path: it
        counts every live line."""
        line = self._lines.get(key)
        left = 0
        if line is not None:
            line.waiting = left = sum(t.live for t in line.tickets)
            if left:
                clean_left(line)
                if self._running.get(key, 0) < self._limit(key):
                    head = line.tickets[0]  # a head already in the heap twice does no harm
                    heapq.heappush(self._heads, (head.seq, head))
            else:
                del self._lines[key]
        self.waiting = sum(line.waiting for line in self._lines.values())
        self._lone_lines = sum(k not in self._running for k in self._lines)
        self._rebucket(key, left)
        if not left and key not in self._running and self._limit_of is not None:
            self._limits.pop(key, None)

    def drain(self) -> list[T]:
        """Take every waiting job out of its line (the executor stops), oldest first.
        Running counts stay: each running job still calls :meth:`release`."""
        tickets = self.live()
        tickets.sort(key=lambda t: t.seq)
        for ticket in tickets:
            ticket.live = False
        if self._limit_of is not None:
            for key in self._lines:
                try:
                    if key not in self._running:
                        self._limits.pop(key, None)
                except Exception:  # the key's (or a colliding key's) hash or equality raised
                    # A key that broke as its job ended (see _settle._key_lost) is still
                    # among the running keys, and a lookup of it, or of any key its hash
                    # collides with, raises: its limit stays, and draining goes on.
                    continue
        self._lines.clear()
        self._heads.clear()
        self._by_waiting.clear()
        self._lone_lines = self.waiting = self._top = 0
        return [t.item for t in tickets]

    def live(self) -> list[Ticket[T]]:  # every waiting job's ticket, in no order
        return [t for line in self._lines.values() for t in line.tickets if t.live]
