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

Each active key has a :class:`~coroexecutor._keyed_ticket.Line`. Only a new job looks
its key up; a job granted room gives it back to its key's Line, so a key that changes
after its job was accepted strands nobody (see Line, and _keyed_lost for its leaving).

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

from ._key_limits import MaxPerKey, check_limit, check_max_per_key, unhashable
from ._keyed_lost import drop_line
from ._keyed_ticket import NO_TICKETS, Line, Ticket, clean_left
from ._typing import final

__all__ = ["KeyedLine", "Line", "MaxPerKey", "Ticket", "check_max_per_key"]

T = TypeVar("T")

@final
class KeyedLine(Generic[T]):
    """Per-key running counts and FIFO lines, with the oldest startable job first.

    The caller owns the global limit: it calls :meth:`try_start` on its fast path when a
    global slot is free, :meth:`push` when the job must wait, :meth:`pop` while global
    slots are free, :meth:`release` with the job's Line when a job ends, and
    :meth:`discard` when a waiting job is cancelled. With a ``max_per_key`` function that
    is user code, it calls :meth:`prepare` first, for each job. What a key's ``__hash__``
    or ``__eq__`` raised as its idle line left is kept in ``key_errors`` for the caller to
    report: the line is whole, and the call that dropped it returned as usual.
    """

    __slots__ = (
        "_at_hand",
        "_by_waiting",
        "_heads",
        "_limit_of",
        "_lines",
        "_per_key",
        "_seq",
        "_top",
        "key_errors",
        "stale",
        "waiting",
    )

    def __init__(self, max_per_key: MaxPerKey) -> None:
        max_per_key = check_max_per_key(max_per_key)
        self._per_key = max_per_key if isinstance(max_per_key, int) else 0
        self._limit_of = None if isinstance(max_per_key, int) else max_per_key
        # Every active key's line (jobs running or waiting), by key; it goes as the key
        # idles. Invariant: an idle line in it is one its key could not remove (stale).
        self._lines: dict[Hashable, Line] = {}
        self.stale = 0  # idle lines kept in _lines (see drop_line)
        self.key_errors: list[Exception] = []  # for the caller to report (see the class)
        self._at_hand: Optional[tuple[Hashable, int]] = None  # see prepare()
        # The head ticket of every key with room and a waiting job, as (seq, ticket);
        # also dead entries (tickets that left the line) until they surface or compaction.
        self._heads: list[tuple[int, Ticket[T]]] = []
        self._seq = 0
        self.waiting = 0  # jobs waiting, all keys (read on the hot path: no __len__ call)
        # Lines by how many of their jobs wait: the longest in O(1). Counts move by one
        # at a time, so when the top bucket empties the next one down is not empty.
        self._by_waiting: dict[int, dict[Line, None]] = {}
        self._top = 0

    def __repr__(self) -> str:
        return f"<KeyedLine keys={self.active_keys} waiting={self.waiting}>"

    def __len__(self) -> int:  # how many jobs wait (all keys)
        return self.waiting

    @property
    def active_keys(self) -> int:
        """How many keys have a job running or waiting."""
        return len(self._lines) - self.stale

    def busiest(self) -> Optional[tuple[Hashable, int]]:
        """The key with the most jobs waiting and how many, or ``None`` if none waits."""
        if not self._top:
            return None
        return next(iter(self._by_waiting[self._top])).key, self._top

    def line_of(self, key: Hashable) -> Optional[Line]:
        return self._lines.get(key)

    def running_of(self, key: Hashable) -> int:
        line = self._lines.get(key)
        return 0 if line is None else line.running

    #
    # The caller's operations
    #

    def prepare(self, key: Hashable) -> None:
        """Call ``max_per_key(key)`` now if ``key`` is not active, before try_start() or
        push() of its job touch anything: the call may use the executor (stats, a job
        submitted, of this key too) and finds every key whole. The result waits for
        the key's activation by the next try_start() or enter(); if the call made the key
        active (a job it submitted), the key keeps the limit it has. Raises what the call
        raises, or for a key that is not hashable, with nothing changed."""
        limit_of = self._limit_of
        if limit_of is None:
            return
        try:
            if key in self._lines:
                return
        except TypeError as exc:
            raise unhashable(key) from exc
        self._at_hand = key, check_limit(limit_of(key), key)

    def try_start(self, key: Hashable) -> Optional[Line]:
        """Count a job of ``key`` as running and return its key's Line (the job gives its
        room back to it) if it may start now: its key has room, none of its key waits,
        and no startable job of any key waits (it would be older). Else None. Call it
        only with a global slot free. Raises what the key's lookup raises (a key that is
        not hashable: TypeError), with nothing changed."""
        lines = self._lines
        try:
            line = lines.get(key)
        except TypeError as exc:
            raise unhashable(key) from exc
        if self._heads and self.peek() is not None:
            return None
        if line is None:
            line = Line(key, self._new_limit(key))  # may raise: nothing changed yet
            line.running = 1
            lines[key] = line
            return line
        n = line.running
        if line.waiting or n >= line.limit:
            return None  # (a key with no job running always has room)
        if not n:
            self.stale -= 1  # a stale line its key finds again: active again
        line.running = n + 1
        return line

    def release(self, line: Line) -> None:
        """A running job of ``line``'s key ended (however it ended). Whole: an exception
        from a step after the count's (a KeyboardInterrupt) has the rest done. Its key is
        not looked up unless the line goes idle and leaves."""
        try:
            n = line.running = line.running - 1  # (inside: an interrupt after it resyncs)
            if line.waiting:
                if n == line.limit - 1:  # it had no room: now its head is a candidate
                    head = line.tickets[0]
                    heapq.heappush(self._heads, (head.seq, head))
            elif not n:
                drop_line(self, line)
        except BaseException:
            self._resync(line)
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
        """Put a ticket in its key's line (``ticket.line`` from now on), whole or not at
        all: an exception from any step (a KeyboardInterrupt) takes back those done
        before it."""
        key = ticket.key
        try:
            line = self._lines.get(key)
        except TypeError as exc:
            raise unhashable(key) from exc
        # A bad max_per_key() raises here, with nothing changed yet.
        limit = self._new_limit(key) if line is None else 0
        waiting = self.waiting  # for _undo_enter
        try:
            if line is None:
                line = ticket.line = Line(key, limit)
                self._lines[key] = line
            else:
                ticket.line = line
                if not line.running and not line.waiting:
                    self.stale -= 1  # a stale line its key finds again: active again
            if line.tickets is NO_TICKETS:
                line.tickets = collections.deque()
            line.tickets.append(ticket)
            line.waiting += 1
            self.waiting += 1
            self._count_waiting(line, line.waiting - 1, line.waiting)
            ticket.live = True
            if line.waiting == 1 and line.running < line.limit:
                heapq.heappush(self._heads, (ticket.seq, ticket))  # a dead entry is fine
        except BaseException:
            self._undo_enter(ticket, waiting)
            raise

    def _undo_enter(self, ticket: Ticket[T], waiting: int) -> None:
        """Take back any first steps of ``enter``: ``waiting`` is the count it found."""
        ticket.live = False  # its heap entry, if pushed, is a dead one
        self.waiting = waiting
        line = ticket.line
        if line is not None:
            if line.tickets and line.tickets[-1] is ticket:
                line.tickets.pop()
            line.waiting = sum(t.live for t in line.tickets)
            self._rebucket(line, line.waiting)
            if not line.waiting:
                line.tickets.clear()
                if not line.running:
                    drop_line(self, line)
        self._count_stale()

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
        return its ticket (no longer live; the job gives its room back to
        ``ticket.line``). ``None`` if no waiting job may start."""
        ticket = self.peek()
        if ticket is None:
            return None
        heapq.heappop(self._heads)
        ticket.live = False
        line = ticket.line
        assert line is not None
        assert line.tickets[0] is ticket
        line.tickets.popleft()
        line.waiting -= 1
        self.waiting -= 1
        self._count_waiting(line, line.waiting + 1, line.waiting)
        n = line.running = line.running + 1
        if not line.waiting:
            line.tickets.clear()  # dead ones only: the next to enter is the first
        else:
            clean_left(line)
            if n < line.limit:
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
            if ticket.line is not None:
                self._resync(ticket.line)
            raise
        return True

    def _discard(self, ticket: Ticket[T]) -> None:
        ticket.live = False
        line = ticket.line
        assert line is not None
        line.waiting -= 1
        self.waiting -= 1
        self._count_waiting(line, line.waiting + 1, line.waiting)
        if line.waiting:
            was_head = line.tickets[0] is ticket
            clean_left(line)
            if was_head and line.running < line.limit:
                # Its heap entry is dead now: the next in line takes its place.
                head = line.tickets[0]
                heapq.heappush(self._heads, (head.seq, head))
            elif len(line.tickets) > 2 * line.waiting + 8:  # mostly dead: compact
                line.tickets = collections.deque(t for t in line.tickets if t.live)
        else:
            line.tickets.clear()
        if len(self._heads) > 2 * len(self._lines) + 32:  # mostly dead heads: compact
            self._heads = [entry for entry in self._heads if entry[1].live]
            heapq.heapify(self._heads)
        if not line.waiting and not line.running:
            drop_line(self, line)

    def _resync(self, line: Line) -> None:
        """Bring what depends on ``line``'s running count and live tickets back in line
        with them, wherever a step cut short (discard, release) left it. Not the hot
        path: it counts every live line."""
        line.waiting = left = sum(t.live for t in line.tickets)
        if left:
            clean_left(line)
            if line.running < line.limit:
                head = line.tickets[0]  # a head already in the heap twice does no harm
                heapq.heappush(self._heads, (head.seq, head))
        else:
            line.tickets.clear()
        self.waiting = sum(each.waiting for each in self._lines.values())
        self._rebucket(line, left)
        if not left and not line.running:
            drop_line(self, line)  # (a line gone already is not found: nothing happens)
        self._count_stale()

    def _count_stale(self) -> None:  # (the rare paths)
        self.stale = sum(not x.running and not x.waiting for x in self._lines.values())

    def drain(self) -> list[T]:
        """Take every waiting job out of its line (the executor stops), oldest first.
        Running counts stay: each running job still calls :meth:`release`."""
        lines = list(self._lines.values())
        tickets = [t for line in lines for t in line.tickets if t.live]
        tickets.sort(key=lambda t: t.seq)
        for ticket in tickets:
            ticket.live = False
        self._heads.clear()
        self._by_waiting.clear()
        self.waiting = self._top = 0
        for line in lines:
            line.tickets.clear()
            if line.waiting:
                line.waiting = 0
                if not line.running:
                    drop_line(self, line)
        return [t.item for t in tickets]

    #
    # Helpers
    #

    def _new_limit(self, key: Hashable) -> int:
        """max_per_key for ``key``, becoming active (its Line keeps it while active).

        A key becoming active takes what prepare() got for it. Without prepare() (the
        bridge's line, whose function returns the limit its submitter computed, and the
        tests) max_per_key(key) is called here, amid an update: it must not use the line."""
        limit_of = self._limit_of
        if limit_of is None:
            return self._per_key
        at_hand = self._at_hand
        if at_hand is not None and at_hand[0] is key:
            return at_hand[1]
        return check_limit(limit_of(key), key)

    def _rebucket(self, line: Line, waiting: int) -> None:
        """Put ``line`` in the bucket of its ``waiting`` jobs alone (none if 0), wherever
        a step cut short left it."""
        for count in list(self._by_waiting):
            bucket = self._by_waiting[count]
            bucket.pop(line, None)
            if not bucket:
                del self._by_waiting[count]
        if waiting:
            self._by_waiting.setdefault(waiting, {})[line] = None
        self._top = max(self._by_waiting, default=0)

    def _count_waiting(self, line: Line, old: int, new: int) -> None:
        """Move ``line`` from ``old`` to ``new`` jobs waiting (they differ by one)."""
        by_waiting = self._by_waiting
        if old:
            bucket = by_waiting[old]
            del bucket[line]
            if not bucket:
                del by_waiting[old]
                if old == self._top:
                    self._top = new  # the line moved one down (or the top was 1)
        if new:
            target = by_waiting.get(new)
            if target is None:
                target = by_waiting[new] = {}
            target[line] = None
            if new > self._top:
                self._top = new
