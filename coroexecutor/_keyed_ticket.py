"""Ticket, a waiting job's place in a KeyedLine, and Line, one active key's state."""

from __future__ import annotations

import collections
from collections.abc import Hashable
from typing import Any, Generic, Optional, TypeVar

from ._typing import final

__all__ = ["NO_TICKETS", "Line", "Ticket", "clean_left"]

T = TypeVar("T")


@final
class Ticket(Generic[T]):
    """A waiting job's place in its key's line. ``live`` until it starts or leaves."""

    __slots__ = ("item", "key", "line", "live", "seq")

    def __init__(self, key: Hashable, item: T, seq: int) -> None:
        self.key = key
        self.item = item
        self.seq = seq  # arrival order, across all keys
        self.live = True
        self.line: Optional[Line] = None  # its key's line, from enter() on

    def __repr__(self) -> str:
        return f"<Ticket #{self.seq} key={self.key!r} {'waiting' if self.live else 'done'}>"


NO_TICKETS: collections.deque[Any] = collections.deque(maxlen=0)  # appends: dropped


@final
class Line:
    """One active key: how many of its jobs run, its limit, and its waiting jobs in
    arrival order. Dropped once nothing runs and nobody waits.

    A job granted room in its key holds the key's Line and gives the room back to it, not
    to the key: a key object whose hash or equality changes (or starts raising) after its
    job was accepted cannot find its line any more, and the jobs waiting in it must go on
    all the same. Only a new job looks its key up.

    The first ticket is always live (dead ones are cleaned off the front); a job that
    leaves from the middle leaves a dead ticket behind until the line is compacted."""

    __slots__ = ("key", "limit", "running", "tickets", "waiting")

    def __init__(self, key: Hashable, limit: int) -> None:
        self.key = key  # the key object the line is filed under
        self.limit = limit  # max_per_key(key), from when the key became active
        self.running = 0
        # NO_TICKETS (shared, always empty) until a job waits: most keys' jobs never
        # wait, and the key's start pays for no deque. enter() makes its own.
        self.tickets: collections.deque[Ticket[Any]] = NO_TICKETS
        self.waiting = 0  # live tickets

    def __repr__(self) -> str:
        return f"<Line key={self.key!r} running={self.running} waiting={self.waiting}>"


def clean_left(line: Line) -> None:
    """Drop dead tickets from the front of a line that still has a live one."""
    tickets = line.tickets
    while not tickets[0].live:
        tickets.popleft()
