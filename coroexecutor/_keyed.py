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

Costs: starting at once, finishing and leaving the line are O(1); waiting and being
picked are O(log k), k the number of keys with room and a waiting job (a heap holds the
head of each such key's line, ordered by arrival).
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Hashable
from typing import Any, Callable, Generic, Optional, TypeVar, Union

from ._typing import final

__all__ = ["KeyedLine", "Ticket", "check_max_per_key"]

T = TypeVar("T")
MaxPerKey = Union[int, Callable[[Hashable], int]]


def check_max_per_key(value: object) -> MaxPerKey:
    """Validate ``max_per_key``: an int greater than 0, or a callable ``key -> int``."""
    if callable(value):
        return value  # its results are checked per key, when it is called
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_per_key must be an int or a callable (got {value!r})")
    if value < 1:
        raise ValueError(f"max_per_key must be greater than 0 (got {value!r})")
    return value


@final
class Ticket(Generic[T]):
    """A waiting job's place in its key's line. ``live`` until it starts or leaves."""

    __slots__ = ("item", "key", "live", "seq")

    def __init__(self, key: Hashable, item: T, seq: int) -> None:
        self.key = key
        self.item = item
        self.seq = seq  # arrival order, across all keys
        self.live = True

    def __repr__(self) -> str:
        return f"<Ticket #{self.seq} key={self.key!r} {'waiting' if self.live else 'done'}>"


class _Key:
    """What one active key holds. Dropped as soon as it is idle."""

    __slots__ = ("limit", "line", "running", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.waiting = 0  # live tickets in the line
        # Tickets in arrival order; the first is always live (left ends are cleaned).
        # Leaving the line from the middle leaves a dead ticket behind until compaction.
        # None while nobody waits: a key that only runs jobs costs no deque.
        self.line: Optional[collections.deque[Ticket[Any]]] = None


@final
class KeyedLine(Generic[T]):
    """Per-key running counts and FIFO lines, with the oldest startable job first.

    The caller owns the global limit: it calls :meth:`try_start` on its fast path when a
    global slot is free, :meth:`push` when the job must wait, :meth:`pop` while global
    slots are free, :meth:`release` when a job of a key ends, and :meth:`discard` when a
    waiting job is cancelled.
    """

    __slots__ = ("_by_load", "_heads", "_keys", "_limit_of", "_per_key", "_seq", "_top", "_waiting")

    def __init__(self, max_per_key: MaxPerKey) -> None:
        max_per_key = check_max_per_key(max_per_key)
        self._per_key = max_per_key if isinstance(max_per_key, int) else 0
        self._limit_of = None if isinstance(max_per_key, int) else max_per_key
        self._keys: dict[Hashable, _Key] = {}
        # The head ticket of every key with room and a waiting job, as (seq, ticket);
        # also dead entries (tickets that left the line) until they surface or compaction.
        self._heads: list[tuple[int, Ticket[T]]] = []
        self._seq = 0
        self._waiting = 0
        # Keys by load (running + waiting): the most loaded key in O(1). Loads move by
        # one at a time, so when the top bucket empties the next one down is not empty.
        self._by_load: dict[int, dict[Hashable, None]] = {}
        self._top = 0

    def __repr__(self) -> str:
        return f"<KeyedLine keys={len(self._keys)} waiting={self._waiting}>"

    def __len__(self) -> int:
        """How many jobs wait (all keys)."""
        return self._waiting

    @property
    def active_keys(self) -> int:
        """How many keys have a job running or waiting."""
        return len(self._keys)

    def busiest(self) -> Optional[tuple[Hashable, int]]:
        """The most loaded key and its load (running + waiting jobs), or ``None``."""
        if not self._top:
            return None
        return next(iter(self._by_load[self._top])), self._top

    def running_of(self, key: Hashable) -> int:
        state = self._keys.get(key)
        return 0 if state is None else state.running

    def waiting_of(self, key: Hashable) -> int:
        state = self._keys.get(key)
        return 0 if state is None else state.waiting

    #
    # The caller's operations
    #

    def try_start(self, key: Hashable) -> bool:
        """Count a job of ``key`` as running and return True if it may start now: its key
        has room, none of its key waits, and no startable job of any key waits (it would
        be older). Call it only with a global slot free."""
        state = self._get(key)
        if state is not None and (state.waiting or state.running >= state.limit):
            return False
        if self._heads and self.peek() is not None:
            return False
        if state is None:
            state = self._keys[key] = _Key(self._new_limit(key))
        state.running += 1
        self._moved(key, state.running - 1 + state.waiting)
        return True

    def push(self, key: Hashable, item: T) -> Ticket[T]:
        """Put a job of ``key`` in its key's line; the ticket lets it leave the line."""
        state = self._get(key)
        if state is None:
            state = self._keys[key] = _Key(self._new_limit(key))
        self._seq += 1
        ticket = Ticket(key, item, self._seq)
        line = state.line
        if line is None:
            line = state.line = collections.deque()
        line.append(ticket)
        state.waiting += 1
        self._waiting += 1
        self._moved(key, state.running + state.waiting - 1)
        if state.waiting == 1 and state.running < state.limit:
            heapq.heappush(self._heads, (ticket.seq, ticket))
        return ticket

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
        state = self._keys[ticket.key]
        line = state.line
        assert line is not None
        assert line[0] is ticket
        line.popleft()
        state.waiting -= 1
        self._waiting -= 1
        state.running += 1
        _clean_left(state)
        if state.line and state.running < state.limit:
            head = state.line[0]
            heapq.heappush(self._heads, (head.seq, head))
        return ticket

    def release(self, key: Hashable) -> None:
        """A running job of ``key`` ended (however it ended)."""
        state = self._keys[key]
        state.running -= 1
        self._moved(key, state.running + 1 + state.waiting)
        if state.waiting:
            if state.running == state.limit - 1:  # it had no room: its head is no candidate
                assert state.line is not None
                head = state.line[0]
                heapq.heappush(self._heads, (head.seq, head))
        elif not state.running:
            del self._keys[key]

    def discard(self, ticket: Ticket[T]) -> bool:
        """Take a waiting job out of its line (it was cancelled). False if it had already
        started or left."""
        if not ticket.live:
            return False
        ticket.live = False
        key = ticket.key
        state = self._keys[key]
        state.waiting -= 1
        self._waiting -= 1
        self._moved(key, state.running + state.waiting + 1)
        line = state.line
        assert line is not None
        was_head = line[0] is ticket
        _clean_left(state)
        if not state.waiting:
            if not state.running:
                del self._keys[key]
        elif was_head and state.running < state.limit:
            # Its heap entry is dead now: the next in line takes its place.
            assert state.line is not None
            head = state.line[0]
            heapq.heappush(self._heads, (head.seq, head))
        elif len(line) > 2 * state.waiting + 8:  # mostly dead tickets: compact the line
            state.line = collections.deque(t for t in line if t.live)
        if len(self._heads) > 2 * len(self._keys) + 32:  # mostly dead heads: compact
            self._heads = [entry for entry in self._heads if entry[1].live]
            heapq.heapify(self._heads)
        return True

    #
    # Helpers
    #

    def _get(self, key: Hashable) -> Optional[_Key]:
        try:
            return self._keys.get(key)
        except TypeError as exc:
            raise TypeError(f"key() must return a hashable value (got {key!r})") from exc

    def _new_limit(self, key: Hashable) -> int:
        limit_of = self._limit_of
        if limit_of is None:
            return self._per_key
        limit = limit_of(key)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"max_per_key() must return an int (got {limit!r} for {key!r})")
        if limit < 1:
            raise ValueError(
                f"max_per_key() must return an int greater than 0 (got {limit!r} for {key!r})"
            )
        return limit

    def _moved(self, key: Hashable, old: int) -> None:
        """Move ``key`` from load ``old`` to its load now (they differ by one)."""
        state = self._keys.get(key)
        new = 0 if state is None else state.running + state.waiting
        by_load = self._by_load
        if old:
            bucket = by_load[old]
            del bucket[key]
            if not bucket:
                del by_load[old]
                if old == self._top:
                    self._top = new  # the key moved one down (or the top was 1)
        if new:
            bucket_new = by_load.get(new)
            if bucket_new is None:
                bucket_new = by_load[new] = {}
            bucket_new[key] = None
            if new > self._top:
                self._top = new


def _clean_left(state: _Key) -> None:
    """Drop dead tickets from the front of a key's line (and the line, once empty)."""
    line = state.line
    if line is None:
        return
    while line and not line[0].live:
        line.popleft()
    if not line:
        state.line = None
