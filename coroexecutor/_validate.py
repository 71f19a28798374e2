"""Validation of constructor and method arguments, with the documented messages."""

from __future__ import annotations

import inspect
import math
from typing import Callable

from ._notes import describe_fn, safe_repr

__all__ = [
    "awaitable_answer", "check_callables", "check_finite", "check_initializer",
    "check_max_workers", "check_rate", "check_seconds", "check_switch", "initializer_ready",
    "is_async_callable", "plain_answer",
]


def check_finite(name: str, value: int | float) -> None:
    """Refuse an infinite ``value`` (a number, already checked for kind and sign) with
    the documented ValueError. An int too large for a float counts as infinite: every
    time, rate, burst and bound becomes a float somewhere (a deadline, the token bucket,
    the adaptive limit), where ``10**400`` would raise OverflowError, away from the call
    that passed it. A retry policy's delay is read the same way (_retry._as_seconds)."""
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond the largest float
        finite = False
    if not finite:
        raise ValueError(f"{name} must be a finite number (got {safe_repr(value)})")


def check_rate(max_per_second: object, burst: object) -> tuple[float | None, int]:
    """Validate max_per_second and burst; return them normalised."""
    if burst is not None:
        if type(burst) is not int:  # bool too: True is no count
            raise TypeError(f"burst must be an int or None (got {burst!r})")
        if burst < 1:
            raise ValueError(f"burst must be an int greater than 0 (got {burst!r})")
        check_finite("burst", burst)  # the token bucket counts in floats
    if max_per_second is None:
        if burst is not None:
            raise ValueError("burst requires max_per_second")
        return None, 1
    if isinstance(max_per_second, bool) or not isinstance(max_per_second, (int, float)):
        raise TypeError(f"max_per_second must be a number or None (got {max_per_second!r})")
    if not max_per_second > 0:  # NaN too
        raise ValueError(f"max_per_second must be greater than 0 (got {max_per_second!r})")
    check_finite("max_per_second", max_per_second)  # no limit is None, as for every wait
    _check_spacing(max_per_second)
    return float(max_per_second), 1 if burst is None else burst


def _check_spacing(max_per_second: int | float) -> None:
    """Refuse a rate so small that the spacing of its starts, ``1 / max_per_second``,
    overflows to infinity (below about 5.6e-309): the rate limiter would wait an infinite
    time for its next token, and a second submit() waited for ever (brk20: 1e-320). It
    is an infinite time in disguise, refused as one is."""
    if not math.isfinite(1 / max_per_second):  # (an int rate is at least 1)
        raise ValueError(
            "max_per_second must be large enough that 1/max_per_second is finite"
            f" (got {max_per_second!r})"
        )


def check_seconds(name: str, value: object) -> float | None:
    """Validate an optional, positive, finite number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None (got {value!r})")
    if not value > 0:  # NaN too
        raise ValueError(f"{name} must be greater than 0 (got {value!r})")
    # As the stdlib's waits (Future.result(timeout=inf) raises OverflowError there):
    # no limit is spelled None.
    check_finite(name, value)
    return float(value)


def check_max_workers(value: object) -> int:
    """Validate max_workers as the stdlib does, plus a type check."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_workers must be an int (got {value!r})")
    if value <= 0:
        raise ValueError("max_workers must be greater than 0")
    return value


def check_callables(**options: object) -> None:
    """Each option given must be a callable or None."""
    for name, value in options.items():
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be a callable or None (got {value!r})")


_INITIALIZER_CALL_HINT = """\
initializer must be a callable or None, not a coroutine object (got {got})
  wrong: initializer=setup(conn)
  right: initializer=setup, initargs=(conn,)"""


def check_initializer(initializer: object) -> None:
    """``initializer=``: a callable or None. Not the call passed instead of the function (a
    coroutine object, closed here so that no "never awaited" warning follows the error),
    nor an async generator function, whose call returns a generator that nothing would
    run: the set-up would be skipped without a word."""
    if initializer is None:
        return
    if callable(initializer):
        if inspect.isasyncgenfunction(initializer):
            raise TypeError(_async_generator_initializer(initializer))
        return
    if inspect.iscoroutine(initializer):
        initializer.close()
    if inspect.isawaitable(initializer):
        raise TypeError(_INITIALIZER_CALL_HINT.format(got=safe_repr(initializer)))
    raise TypeError(f"initializer must be a callable or None (got {initializer!r})")


def initializer_ready(ready: object, initializer: object) -> object:
    """What ``initializer(*initargs)`` returned, refused if it is an async generator (an
    async generator function behind a decorator, which check_initializer cannot see):
    its body would never run. (Never started, it needs no closing.)"""
    if inspect.isasyncgen(ready):
        raise TypeError(_async_generator_initializer(initializer))
    return ready


def _async_generator_initializer(initializer: object) -> str:
    return (
        "initializer must be a plain or async function, not an async generator function"
        f" (got {describe_fn(initializer)}): its body would never run"
    )


def check_switch(name: str, value: object) -> bool:
    """A True/False option whose wrong spelling must not pass as truthy (``"false"``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False (got {value!r})")
    return value


def is_async_callable(fn: Callable[..., object]) -> bool:
    """Whether ``fn``, given where a plain function is called (a retry policy, key=,
    max_per_key=, an Adaptive overload, on_job_done), is an ``async def``: a coroutine
    function, or an async generator function (its ``yield`` makes it one), whose call
    would return a coroutine or a generator object and run none of its body. The inspect
    tests see through functools.partial; an object with an async ``__call__`` is checked
    through its class."""
    call = type(fn).__call__
    return (
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(call)
        or inspect.isasyncgenfunction(fn)
        or inspect.isasyncgenfunction(call)
    )


def plain_answer(answer: object, who: str) -> object:
    """What a plain function of the user's (``who``) returned, refused if it is awaitable:
    an async function behind a decorator, which no check of the function itself can see
    (its coroutine, closed here, would otherwise be a true answer, never awaited)."""
    if inspect.isawaitable(answer):
        raise awaitable_answer(answer, who)
    return answer


def awaitable_answer(answer: object, who: str) -> TypeError:
    """The error for an awaitable ``answer`` of ``who`` (see plain_answer), which it closes
    if it is a coroutine, so no "never awaited" warning follows the error. For callers
    that test the answer more cheaply than plain_answer does, on a hot path."""
    if inspect.iscoroutine(answer):
        answer.close()
    return TypeError(f"{who} must be a plain function: it returned {answer!r}")
