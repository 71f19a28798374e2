"""CoroutineExecutor.map() and map_unordered(): their typed signatures and their checks.

Both are functions of the executor, as the other modules' are, which the class takes as
its methods (``map = _map_api.map``): their overloads would not fit in _executor.py.
Each lists one overload per number of inputs, as typeshed types the builtin ``map``: the
items of the first, second and third input must suit ``fn``'s parameter in that place;
from four inputs on they are not checked. Each count comes twice: ``return_exceptions``
left out (or ``False``) gives ``MapIterator[T]``, any other bool ``MapIterator[T |
BaseException]``. No overload takes no input, which map() refuses at run time too.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Iterable
from typing import TYPE_CHECKING, Any, Callable, Literal, TypeVar, Union, overload

from ._map import MapIterator
from ._retry import INHERIT, Inherit, RetryArg
from ._startup import check_accepting, check_loop
from ._typing import A1, A2, A3
from ._validate import check_switch

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["map", "map_unordered"]

T = TypeVar("T")
_E = TypeVar("_E")
Input = Union[Iterable[_E], AsyncIterable[_E]]  # one input of a map, sync or async


@overload
def map(
    exe: Core, fn: Callable[[A1], Awaitable[T]],
    in1: Input[A1], /, *,
    buffersize: int | None = ..., return_exceptions: Literal[False] = ...,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T]: ...
@overload
def map(
    exe: Core, fn: Callable[[A1], Awaitable[T]],
    in1: Input[A1], /, *,
    buffersize: int | None = ..., return_exceptions: bool,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T | BaseException]: ...
@overload
def map(
    exe: Core, fn: Callable[[A1, A2], Awaitable[T]],
    in1: Input[A1], in2: Input[A2], /, *,
    buffersize: int | None = ..., return_exceptions: Literal[False] = ...,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T]: ...
@overload
def map(
    exe: Core, fn: Callable[[A1, A2], Awaitable[T]],
    in1: Input[A1], in2: Input[A2], /, *,
    buffersize: int | None = ..., return_exceptions: bool,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T | BaseException]: ...
@overload
def map(
    exe: Core, fn: Callable[[A1, A2, A3], Awaitable[T]],
    in1: Input[A1], in2: Input[A2], in3: Input[A3], /, *,
    buffersize: int | None = ..., return_exceptions: Literal[False] = ...,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T]: ...
@overload
def map(
    exe: Core, fn: Callable[[A1, A2, A3], Awaitable[T]],
    in1: Input[A1], in2: Input[A2], in3: Input[A3], /, *,
    buffersize: int | None = ..., return_exceptions: bool,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T | BaseException]: ...
@overload
def map(
    exe: Core, fn: Callable[..., Awaitable[T]],
    in1: Input[Any], in2: Input[Any], in3: Input[Any], in4: Input[Any], /,
    *more: Input[Any],
    buffersize: int | None = ..., return_exceptions: Literal[False] = ...,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T]: ...
@overload
def map(
    exe: Core, fn: Callable[..., Awaitable[T]],
    in1: Input[Any], in2: Input[Any], in3: Input[Any], in4: Input[Any], /,
    *more: Input[Any],
    buffersize: int | None = ..., return_exceptions: bool,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T | BaseException]: ...

def map(
    exe: Core, fn: Callable[..., Awaitable[T]], *iterables: Iterable[Any] | AsyncIterable[Any],
    buffersize: int | None = None, return_exceptions: bool = False,
    retry: RetryArg | Inherit = INHERIT,
) -> MapIterator[T] | MapIterator[T | BaseException]:
    """Run ``fn`` over the inputs; iterate the results in input order.

    Inputs (sync or async iterables, zipped as ``map`` does) are read lazily: at most
    ``buffersize`` jobs (default: ``max_workers``, as it changes) run or wait ahead of
    the consumer, besides up to as many pausing between attempts (``retry=``). Type
    checkers check the items of the first three inputs against ``fn``'s parameters.
    Every job runs in a copy of the ``contextvars`` context of this call.

    Errors: a job error cancels the map's other jobs (under fail-fast, the executor's
    too; the block raises it) and is raised from the iterator (a ``StopAsyncIteration``,
    which would end the ``async for``, as a RuntimeError caused by it, with its note);
    with ``return_exceptions=True`` errors are yielded as results.

    Cancellation: a map closed early (dropped, ``aclose()``, the block's exit, ``shutdown()``,
    fail-fast, the deadline) cancels its jobs in flight and reads no more input.
    """
    check_loop(exe)
    check_accepting(exe)
    return MapIterator(exe, fn, iterables, buffersize, ordered=True,
                       return_exceptions=check_switch("return_exceptions", return_exceptions),
                       retry=retry)


@overload
def map_unordered(
    exe: Core, fn: Callable[[A1], Awaitable[T]],
    in1: Input[A1], /, *,
    buffersize: int | None = ..., return_exceptions: Literal[False] = ...,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T]: ...
@overload
def map_unordered(
    exe: Core, fn: Callable[[A1], Awaitable[T]],
    in1: Input[A1], /, *,
    buffersize: int | None = ..., return_exceptions: bool,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T | BaseException]: ...
@overload
def map_unordered(
    exe: Core, fn: Callable[[A1, A2], Awaitable[T]],
    in1: Input[A1], in2: Input[A2], /, *,
    buffersize: int | None = ..., return_exceptions: Literal[False] = ...,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T]: ...
@overload
def map_unordered(
    exe: Core, fn: Callable[[A1, A2], Awaitable[T]],
    in1: Input[A1], in2: Input[A2], /, *,
    buffersize: int | None = ..., return_exceptions: bool,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T | BaseException]: ...
@overload
def map_unordered(
    exe: Core, fn: Callable[[A1, A2, A3], Awaitable[T]],
    in1: Input[A1], in2: Input[A2], in3: Input[A3], /, *,
    buffersize: int | None = ..., return_exceptions: Literal[False] = ...,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T]: ...
@overload
def map_unordered(
    exe: Core, fn: Callable[[A1, A2, A3], Awaitable[T]],
    in1: Input[A1], in2: Input[A2], in3: Input[A3], /, *,
    buffersize: int | None = ..., return_exceptions: bool,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T | BaseException]: ...
@overload
def map_unordered(
    exe: Core, fn: Callable[..., Awaitable[T]],
    in1: Input[Any], in2: Input[Any], in3: Input[Any], in4: Input[Any], /,
    *more: Input[Any],
    buffersize: int | None = ..., return_exceptions: Literal[False] = ...,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T]: ...
@overload
def map_unordered(
    exe: Core, fn: Callable[..., Awaitable[T]],
    in1: Input[Any], in2: Input[Any], in3: Input[Any], in4: Input[Any], /,
    *more: Input[Any],
    buffersize: int | None = ..., return_exceptions: bool,
    retry: RetryArg | Inherit = ...,
) -> MapIterator[T | BaseException]: ...

def map_unordered(
    exe: Core, fn: Callable[..., Awaitable[T]], *iterables: Iterable[Any] | AsyncIterable[Any],
    buffersize: int | None = None, return_exceptions: bool = False,
    retry: RetryArg | Inherit = INHERIT,
) -> MapIterator[T] | MapIterator[T | BaseException]:
    """Like :meth:`map`, but yields each result as soon as its job finishes.

    ``buffersize`` bounds the jobs in flight plus finished results not yet consumed
    (as for :meth:`map`). Errors and cancellation behave as for :meth:`map`.
    """
    check_loop(exe)
    check_accepting(exe)
    return MapIterator(exe, fn, iterables, buffersize, ordered=False,
                       return_exceptions=check_switch("return_exceptions", return_exceptions),
                       retry=retry)
