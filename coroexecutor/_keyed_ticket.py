"""Ticket, a waiting job's place in a KeyedLine, and Line, the tickets of one key."""

from __future__ import annotations

import collections
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from ._typing import final

__all__ = ["Line", "Ticket", "clean_left"]

T = TypeVar("T")


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


class Line:
    """The waiting jobs of one key, in arrival order. Dropped once nobody waits.

    The first ticket is always live (dead ones are cleaned off the front); a job that
    leaves from the middle leaves a dead ticket behind until the line is compacted."""

    __slots__ = ("tickets", "waiting")

    def __init__(self) -> None:
        self.tickets: collections.deque[Ticket[Any]] = collections.deque()
        self.waiting = 0  # live tickets


def clean_left(line: Line) -> None:
    """Drop dead tickets from the front of a line that still has a live one."""
    tickets = line.tickets
    while not tickets[0].live:
        tickets.popleft()
