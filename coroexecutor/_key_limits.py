"""max_per_key: the option (``max_per_key=``) and the limits it gives, checked.

``max_per_key`` is an int, or a plain function ``key -> int`` whose result is checked as
each key becomes active. Shared by :class:`~coroexecutor._key_counts.KeyCounts`, which keeps
the limit of every active key, and the constructors of both executors. Also the errors
both give of a key itself: one that is no dict key, and one that broke as its job ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Callable, Union

from ._notes import safe_repr
from ._validate import is_async_callable, plain_answer

__all__ = ["MaxPerKey", "check_limit", "check_max_per_key", "report_key_lost", "unhashable"]

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


def check_limit(limit: object, key: Hashable) -> int:
    """Validate what ``max_per_key(key)`` returned: an int greater than 0. An awaitable
    (a plain wrapper of an async function) is refused as the Adaptive predicate's is."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        plain_answer(limit, "max_per_key")  # raises for an awaitable, closing a coroutine
        raise TypeError(
            f"max_per_key() must return an int (got {safe_repr(limit)} for {safe_repr(key)})"
        )
    if limit < 1:
        raise ValueError(
            "max_per_key() must return an int greater than 0"
            f" (got {safe_repr(limit)} for {safe_repr(key)})"
        )
    return limit


def unhashable(key: object) -> TypeError:
    """The error for a key that cannot be a dict key (the caller chains it)."""
    return TypeError(f"key() must return a hashable value (got {safe_repr(key)})")


def report_key_lost(loop: asyncio.AbstractEventLoop, exc: Exception) -> None:
    """Tell ``loop``'s exception handler (on its thread) of a key whose ``__hash__`` or
    ``__eq__`` raised ``exc`` as its job ended, when the error policy does not raise it:
    the job kept its own outcome, and the key its room (see semantics.rst, per-key
    limits). The same words from both executors."""
    loop.call_exception_handler(
        {
            "message": "a key= key raised as its job ended: its room in the key is lost",
            "exception": exc,
        }
    )
