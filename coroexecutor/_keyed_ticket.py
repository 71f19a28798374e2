"""Ticket, a waiting job's place in a KeyedLine, and the check of ``max_per_key``."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Callable, Generic, TypeVar, Union

from ._retry import is_async_callable
from ._typing import final

__all__ = ["MaxPerKey", "Ticket", "check_max_per_key", "unhashable"]

T = TypeVar("T")
MaxPerKey = Union[int, Callable[[Hashable], int]]


def check_max_per_key(value: object) -> MaxPerKey:
    """Validate ``max_per_key``: an int greater than 0, or a callable ``key -> int``."""
    if callable(value):
        if is_async_callable(value):
            raise TypeError(
                "max_per_key must be a plain function of the key, not an async one"
                f" (got {value!r})"
            )
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


def unhashable(key: object) -> TypeError:
    return TypeError(f"key() must return a hashable value (got {key!r})")
