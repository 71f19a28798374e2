"""Adaptive concurrency: the public ``Adaptive`` settings (the limiter that follows them is
``AdaptiveLimit``, in _limiter).

``Adaptive`` is a value: immutable, compared and hashed by its settings, pickled by them.
Each executor it configures builds its own limiter from it.
"""

from __future__ import annotations

from typing import Callable, Optional

from ._typing import final
from ._validate import check_finite, is_async_callable

__all__ = ["Adaptive"]

_DEFAULT_INITIAL = 32


def _check_bound(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (got {value!r})")
    if value < 1:
        raise ValueError(f"{name} must be greater than 0 (got {value!r})")
    check_finite(name, value)  # the limiter moves the limit as a float between the bounds
    return value


@final
class Adaptive:
    """A concurrency limit that adapts to the server, for ``max_workers=``.

    ``CoroutineExecutor(max_workers=Adaptive(min=4, max=1000))`` starts at ``initial``
    jobs at once and then moves the limit within ``[min, max]`` from what the finished
    jobs show: it grows while jobs succeed and their latency stays near its long-run
    baseline, and shrinks multiplicatively when latency rises above that baseline or
    when a job fails with an overload error. Reading ``exe.max_workers`` gives the
    current limit. The algorithm and its constants are in the "Adaptive concurrency"
    section of the semantics documentation.

    Args:
        min: the limit never goes below this (default 4).
        max: the limit never goes above this (default 1000).
        initial: the limit to start with (default 32, or the nearest bound when 32 is
            outside ``[min, max]``).
        overload: called with a job's exception; a true result makes that error a
            signal of overload (say, an HTTP 429 or 503, or ``TimeoutError``). Default
            (``None``): every job error is one. Cancelled jobs are never a signal.

    Raises:
        TypeError: a bound that is not an int, or an ``overload`` that is not callable or
            is an ``async`` function.
        ValueError: a bound below 1 or too large for a float, ``min`` above ``max``, or
            ``initial`` outside ``[min, max]``.

    ``Adaptive`` objects are immutable and compare equal when their settings are equal;
    one object may configure any number of executors (each gets its own limiter).
    """

    __slots__ = ("_initial", "_max", "_min", "_overload")

    _min: int
    _max: int
    _initial: int
    _overload: Optional[Callable[[BaseException], object]]

    def __init__(
        self,
        *,
        min: int = 4,  # the documented names: the builtins are not used below
        max: int = 1000,
        initial: Optional[int] = None,
        overload: Optional[Callable[[BaseException], object]] = None,
    ) -> None:
        low = _check_bound("min", min)
        high = _check_bound("max", max)
        if low > high:
            raise ValueError(f"min must not be greater than max (got min={low}, max={high})")
        if initial is None:
            start = _DEFAULT_INITIAL  # moved to the nearest bound when outside them
            if start < low:
                start = low
            elif start > high:
                start = high
        else:
            start = _check_bound("initial", initial)
            if not low <= start <= high:
                raise ValueError(
                    f"initial must be between min and max (got {start}, min={low}, max={high})"
                )
        if overload is not None and (not callable(overload) or is_async_callable(overload)):
            kind = "not an async one" if callable(overload) else "or None"
            raise TypeError(f"overload must be a plain function, {kind} (got {overload!r})")
        object.__setattr__(self, "_min", low)
        object.__setattr__(self, "_max", high)
        object.__setattr__(self, "_initial", start)
        object.__setattr__(self, "_overload", overload)

    @property
    def min(self) -> int:
        """The lowest the limit goes."""
        return self._min

    @property
    def max(self) -> int:
        """The highest the limit goes."""
        return self._max

    @property
    def initial(self) -> int:
        """The limit a new executor starts with."""
        return self._initial

    @property
    def overload(self) -> Optional[Callable[[BaseException], object]]:
        """The predicate that picks overload errors (``None``: every error is one)."""
        return self._overload

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} objects are immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} objects are immutable")

    def __repr__(self) -> str:
        overload = "" if self._overload is None else f", overload={self._overload!r}"
        return f"Adaptive(min={self._min}, max={self._max}, initial={self._initial}{overload})"

    def _key(self) -> tuple[int, int, int, object]:
        return (self._min, self._max, self._initial, self._overload)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Adaptive:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments: rebuild through a helper rather than Adaptive(*args).
        return (_rebuild, self._key())


def _rebuild(
    low: int, high: int, initial: int, overload: Optional[Callable[[BaseException], object]]
) -> Adaptive:
    return Adaptive(min=low, max=high, initial=initial, overload=overload)
