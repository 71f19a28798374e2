"""Retry policies: the built-in ``Retry`` and the one normaliser the executors call.

A policy is any callable ``policy(attempt, exc) -> float | None``: given the number of the
attempt that just failed (1 for the first run) and its exception, it returns the seconds
to wait before the next attempt, or ``None`` to give up. ``Retry`` is such a callable, so
the executors treat every policy alike and a user policy can delegate to a ``Retry``.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import math
import numbers
import random
import sys
from typing import Any, Callable, Optional, Protocol, Union

from ._notes import safe_repr
from ._typing import final
from ._validate import check_finite, is_async_callable

__all__ = [
    "INHERIT", "Inherit", "Retry", "RetryArg", "RetryPolicy", "RetrySource", "next_delay",
    "resolve_retry",
]

RetryPolicy = Callable[[int, BaseException], Optional[float]]
"""``policy(attempt, exc) -> float | None``: the delay before the next attempt, or None."""
RetryArg = Union["Retry", RetryPolicy, None]  # what a retry= argument takes


class Inherit:
    """The type of INHERIT: a call's ``retry=`` left out, so the executor's applies."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<the executor's retry policy>"


INHERIT = Inherit()


class RetrySource(Protocol):
    """What ``Retry(rng=...)`` needs: a ``random()`` from 0 to 1, as ``random.Random`` has
    (in [0, 1)); Retry refuses any other answer (see Retry.__call__)."""

    def random(self) -> float: ...


def _is_seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _exception_classes(on: object) -> tuple[type[Exception], ...]:
    classes = on if isinstance(on, tuple) else (on,)
    for cls in classes:
        # Only Exception subclasses: CancelledError, KeyboardInterrupt and SystemExit are
        # never retried, so naming them here could only be a mistake.
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            raise TypeError(
                f"on must be an Exception subclass or a tuple of them (got {safe_repr(on)})"
            )
    if not classes:
        raise ValueError("on must name at least one exception class (got ())")
    return classes


def _with_asyncio_timeout(
    classes: tuple[type[Exception], ...],
) -> tuple[type[Exception], ...]:
    # Before 3.11 asyncio.TimeoutError (raised by wait_for, aiohttp, our own job_timeout
    # errors too) is not the builtin TimeoutError; from 3.11 they are one class. So that
    # on=TimeoutError means the same on every version, it also matches asyncio's here.
    if sys.version_info < (3, 11) and builtins.TimeoutError in classes:  # pragma: no cover
        return (*classes, asyncio.TimeoutError)
    return classes


@final
class Retry:
    """Retry failed jobs with exponential backoff and full jitter.

    ``attempts`` counts every run of a job, the first included: ``Retry(attempts=3)``
    runs a job at most three times. A failure is retried when its exception is an
    instance of ``on`` (an exception class or a tuple of them; ``TimeoutError`` also
    matches ``asyncio.TimeoutError`` on Python 3.9 and 3.10, as it does from 3.11, but
    ``OSError`` does not: there ``asyncio.TimeoutError`` is no ``OSError``).

    The wait after attempt ``n`` fails is ``min(max_backoff, backoff * 2 ** (n - 1))``
    seconds, or with ``jitter=True`` (the default) a uniformly random time between 0 and
    that ("full jitter"), which keeps many jobs that failed together from retrying
    together. ``rng`` is the random source (anything with a ``random()`` method, such as
    ``random.Random(seed)``), for reproducible delays; by default the ``random`` module's.
    Its ``random()`` must return a number from 0 to 1 (see ``__call__``).

    A ``Retry`` is a retry policy itself: ``Retry()(attempt, exc)`` returns the delay
    before the next attempt, or ``None`` to give up. So a policy of your own can decide
    some cases and leave the rest to a ``Retry``. Instances are immutable and compare
    equal when their settings are equal (``rng`` aside).

    Raises:
        TypeError: a setting of the wrong kind (``attempts=2.5``, ``on="OSError"``).
        ValueError: a setting out of range (``attempts=0``, a negative or infinite
            backoff, ``max_backoff`` below ``backoff``, ``on=()``).
    """

    __slots__ = ("_attempts", "_backoff", "_jitter", "_match", "_max_backoff", "_on", "_rng")

    _attempts: int
    _on: tuple[type[Exception], ...]
    _backoff: float
    _max_backoff: float
    _jitter: bool
    _match: tuple[type[Exception], ...]
    _rng: RetrySource | None

    def __init__(
        self,
        attempts: int = 3,
        on: type[Exception] | tuple[type[Exception], ...] = (OSError, TimeoutError),
        backoff: float = 0.1,
        max_backoff: float = 30.0,
        jitter: bool = True,
        *,
        rng: RetrySource | None = None,
    ) -> None:
        if not isinstance(attempts, int) or isinstance(attempts, bool):
            raise TypeError(f"attempts must be an int (got {safe_repr(attempts)})")
        if attempts < 1:
            raise ValueError(f"attempts must be greater than 0 (got {safe_repr(attempts)})")
        classes = _exception_classes(on)
        for name, value in (("backoff", backoff), ("max_backoff", max_backoff)):
            if not _is_seconds(value):
                raise TypeError(f"{name} must be a number of seconds (got {safe_repr(value)})")
            if not value >= 0:  # NaN too
                raise ValueError(f"{name} must be 0 or greater (got {safe_repr(value)})")
            check_finite(name, value)  # 10**400 too: float() would overflow below
        if max_backoff < backoff:
            raise ValueError(
                f"max_backoff must not be less than backoff "
                f"(got max_backoff={safe_repr(max_backoff)}, backoff={safe_repr(backoff)})"
            )
        if not isinstance(jitter, bool):
            raise TypeError(f"jitter must be a bool (got {safe_repr(jitter)})")
        if rng is not None and not callable(getattr(rng, "random", None)):
            raise TypeError(
                f"rng must have a random() method, or be None (got {safe_repr(rng)})"
            )
        set_ = object.__setattr__
        set_(self, "_attempts", attempts)
        set_(self, "_on", classes)
        set_(self, "_backoff", float(backoff))
        set_(self, "_max_backoff", float(max_backoff))
        set_(self, "_jitter", jitter)
        set_(self, "_match", _with_asyncio_timeout(classes))
        set_(self, "_rng", rng)

    @property
    def attempts(self) -> int:
        """The most runs of a job, the first included."""
        return self._attempts

    @property
    def on(self) -> tuple[type[Exception], ...]:
        """The exception classes that are retried, as a tuple."""
        return self._on

    @property
    def backoff(self) -> float:
        """Seconds of the first wait (before jitter); each later wait doubles."""
        return self._backoff

    @property
    def max_backoff(self) -> float:
        """The longest wait in seconds (before jitter)."""
        return self._max_backoff

    @property
    def jitter(self) -> bool:
        """Whether each wait is drawn uniformly between 0 and its exponential value."""
        return self._jitter

    def __call__(self, attempt: int, exc: BaseException) -> float | None:
        """The delay before attempt ``attempt + 1``, or None to give up.

        ``attempt`` is the number of the attempt that just failed with ``exc`` (1 for
        the first run). A policy of one's own may call this too, so it checks both: an
        ``attempt`` that is not a whole number of 1 or more, or an ``exc`` that is not an
        exception instance (a class, say), is a mistake and raises, where it would
        otherwise have given a delay. So does an ``rng.random()`` outside 0 to 1 or NaN
        (``ValueError``), or no number (``TypeError``): the delay would leave its bounds.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, numbers.Integral):
            raise TypeError(
                "Retry: attempt must be a whole number, the number of the attempt that failed "
                f"(1 for the first run), not {type(attempt).__name__}"
            )
        if attempt < 1:
            raise ValueError(
                f"Retry: attempt must be 1 or more (1 for the first run), not {int(attempt)}"
            )
        if not isinstance(exc, BaseException):
            raise TypeError(
                "Retry: exc must be the exception instance the attempt failed with, not "
                + (f"the class {exc.__qualname__}" if isinstance(exc, type) else type(exc).__name__)
            )
        if attempt >= self._attempts or not isinstance(exc, self._match):
            return None
        try:
            ceiling = min(self._max_backoff, self._backoff * 2.0 ** (attempt - 1))
        except OverflowError:  # 2.0 ** 1024 and up: far past any max_backoff
            ceiling = self._max_backoff
        if not self._jitter:
            return ceiling
        rng = random if self._rng is None else self._rng
        return ceiling * _draw(rng)

    def __repr__(self) -> str:
        on = self.on[0] if len(self.on) == 1 else self.on
        names = (
            on.__qualname__
            if isinstance(on, type)
            else f"({', '.join(cls.__qualname__ for cls in on)})"
        )
        return (
            f"Retry(attempts={self.attempts!r}, on={names}, backoff={self.backoff!r}, "
            f"max_backoff={self.max_backoff!r}, jitter={self.jitter!r})"
        )

    def _key(self) -> tuple[Any, ...]:
        return (self.attempts, self.on, self.backoff, self.max_backoff, self.jitter)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Retry):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Retry is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Retry is immutable: cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # copy and pickle rebuild through __init__: the slots cannot be set one by one.
        return (_rebuild, (*self._key(), self._rng))


def _draw(rng: RetrySource) -> float:
    """``rng.random()``, checked: a number from 0 to 1 (1 gives the capped wait itself).
    Unchecked, a wait above max_backoff, a negative or a NaN one followed (brk28)."""
    value = rng.random()
    rule = "Retry: rng.random() must return a number from 0 to 1"
    if type(value) is not float and (
        isinstance(value, bool) or not isinstance(value, numbers.Real)
    ):
        raise TypeError(f"{rule} (got {safe_repr(value)})")
    if not 0 <= value <= 1:  # NaN too
        raise ValueError(f"{rule} (got {safe_repr(value)})")
    return float(value)  # (a float subclass, numpy's float32: no method of theirs runs later)


def _rebuild(
    attempts: int,
    on: tuple[type[Exception], ...],
    backoff: float,
    max_backoff: float,
    jitter: bool,
    rng: RetrySource | None,
) -> Retry:
    return Retry(attempts, on, backoff, max_backoff, jitter, rng=rng)


def resolve_retry(retry: object) -> RetryPolicy | None:
    """The policy for a ``retry=`` argument: None (no retries), a Retry or a callable.

    Raises:
        TypeError: anything else, including an ``async def`` function, an async
            generator function too (a policy is called synchronously, between attempts).
    """
    if retry is None:
        return None
    if isinstance(retry, Retry):
        return retry
    if isinstance(retry, type) and issubclass(retry, Retry):
        raise TypeError("retry must be a Retry instance, not the class: write retry=Retry()")
    if not callable(retry):
        raise TypeError(
            "retry must be a Retry, a callable policy(attempt, exc) or None"
            f" (got {safe_repr(retry)})"
        )
    if is_async_callable(retry):
        raise TypeError(
            f"retry must be a plain callable that returns a delay, not an async function "
            f"(got {safe_repr(retry)})"
        )
    return retry


def next_delay(policy: RetryPolicy, attempt: int, exc: BaseException) -> float | None:
    """Ask ``policy`` whether attempt ``attempt``, which failed with ``exc``, is retried.

    Returns the delay in seconds before the next attempt, or None to give up. Only
    ``Exception`` instances are ever retried: for cancellation, ``KeyboardInterrupt`` and
    ``SystemExit`` the policy is not asked.

    Raises:
        TypeError: the policy returned something other than a number or None.
        ValueError: the policy returned a negative, NaN or infinite delay.
        RuntimeError: the policy raised StopIteration (see _stopped).
        Whatever else the policy raised, unchanged: the caller lets it fail the job.
    """
    if not isinstance(exc, Exception):
        return None
    try:
        delay: object = policy(attempt, exc)
    except StopIteration as stop:
        stopped = stop
    else:
        if delay is None:
            return None
        seconds = _as_seconds(delay)
        if seconds is None or not 0 <= seconds < math.inf:  # NaN too
            raise _bad_delay(policy, delay, seconds)
        return seconds
    try:
        # Raised out of the StopIteration's except clause: in the caller's, the error's
        # __context__ is the attempt's error, as for any error of a policy's.
        raise _stopped(policy, stopped, exc)
    finally:
        del stopped  # no cycle: its traceback holds this frame


def _stopped(policy: RetryPolicy, stop: StopIteration, exc: BaseException) -> RuntimeError:
    """The error for a policy that raised StopIteration (``next(schedule)`` once it ran
    out), caused by it, its ``__context__`` the attempt's error ``exc``. A StopIteration
    cannot leave a coroutine (PEP 479), nor go into an asyncio future, and a map's
    iterator that raises it ends the results. Made here, the job's error is this one
    RuntimeError everywhere (noted, held, raised), not the one PEP 479 made later, after
    the note and fail-fast had taken the StopIteration."""
    error = RuntimeError(f"retry policy {safe_repr(policy)} raised StopIteration")
    error.__cause__ = stop
    error.__context__ = exc
    return error


def _bad_delay(policy: RetryPolicy, delay: object, seconds: float | None) -> Exception:
    """The error for a policy that returned ``delay``, which is no delay (``seconds``:
    it as a float, or None if it is no number). The policy and the delay are shown by
    the shortened repr that never raises: a user's ``__repr__`` that raises, or spans a
    megabyte, must not replace or bury this error."""
    who = f"retry policy {safe_repr(policy)}"
    if seconds is None:
        if inspect.iscoroutine(delay):
            delay.close()  # so no "never awaited" warning follows the error
        return TypeError(
            f"{who} must return a number of seconds or None (got {safe_repr(delay)})"
        )
    if math.isnan(seconds):
        return ValueError(f"{who} must return a number, not NaN")
    if seconds < 0:
        return ValueError(f"{who} returned a negative delay (got {safe_repr(delay)})")
    return ValueError(
        f"{who} must return a finite delay; to give up, return None (got {safe_repr(delay)})"
    )


def _as_seconds(delay: object) -> float | None:
    """A policy's delay as a float: any real number (int, float, Fraction, Decimal, numpy's),
    an int too large for a float as infinity; None for anything else, a number whose
    conversion raises included (its own error would otherwise replace the TypeError). A
    float subclass becomes a plain float, so no method of its own runs later."""
    if type(delay) is float:
        return delay
    if isinstance(delay, bool) or not isinstance(delay, numbers.Number):
        return None
    if isinstance(delay, numbers.Complex) and not isinstance(delay, numbers.Real):
        return None  # complex: not a number of seconds
    try:
        return float(delay)  # type: ignore[arg-type]  # a Number: float() is its to try
    except OverflowError:
        return math.inf
    except Exception:  # TypeError, ValueError, or whatever a __float__ of its own raised
        return None

