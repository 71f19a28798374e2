"""Job: one ``submit()`` call on its way between threads, and which kind of job a callable is."""

from __future__ import annotations

import contextvars
import inspect
from contextvars import copy_context
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE
from types import FunctionType
from typing import Any, Callable, NamedTuple, Optional, Protocol, Union

from .._errors import async_generator_error, check_job_fn
from .._retry import Inherit, RetryPolicy
from ._future import BridgeFuture, FutureOwner

__all__ = ["Job", "is_coroutine_job", "submit_job", "submit_with_policy"]


class Job(NamedTuple):
    """One ``submit()`` call as it crosses threads, from the submitter to where it runs."""

    future: BridgeFuture[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    ctx: contextvars.Context  # a copy of the submitter's context: the job runs in it
    coroutine_fn: bool  # fn is a coroutine function: it runs as a task on the loop


def is_coroutine_job(fn: object, where: str = "submit") -> bool:
    """True when fn runs on the loop; False for a blocking callable (a worker thread).

    Raises TypeError for what is no job: a non-callable, a coroutine object (with the
    two-call hint) or an async generator function (a worker would return the generator
    object as the result)."""
    if type(fn) is FunctionType:  # the common case, kept cheap: the hand-off is benchmarked
        flags = fn.__code__.co_flags
        if flags & CO_COROUTINE:
            return True
        if flags & CO_ASYNC_GENERATOR:
            raise async_generator_error(where, fn)
        return inspect.iscoroutinefunction(fn)  # inspect.markcoroutinefunction (3.12+)
    if not callable(fn):
        check_job_fn(fn, where)  # raises: a coroutine object gets the two-call hint
    if inspect.iscoroutinefunction(fn):  # also bound methods and functools.partial
        return True
    call = type(fn).__call__
    if inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(call):
        raise async_generator_error(where, fn)
    # An instance whose class has ``async def __call__``:
    return inspect.iscoroutinefunction(call)


class _HandOff(FutureOwner, Protocol):
    """What submit_job needs of the bridge's HandOff (a Protocol: no import cycle)."""

    def submit_threadsafe(self, job: Job) -> None: ...


def submit_job(
    handoff: _HandOff,
    annotate: bool,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    map_index: Optional[int],
) -> BridgeFuture[Any]:
    """submit(), and map()'s submit of input ``map_index``: the future, its job handed off.
    ``annotate`` and ``map_index`` are set before the hand-off (the job may fail at once),
    for the note on a failed job's error."""
    coroutine_job = is_coroutine_job(fn)
    future: BridgeFuture[Any] = BridgeFuture(handoff)
    future._annotate = annotate
    future._map_index = map_index
    handoff.submit_threadsafe(Job(future, fn, args, kwargs, copy_context(), coroutine_job))
    return future


def submit_with_policy(
    handoff: _HandOff,
    annotate: bool,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    map_index: int,
    policy: Union[RetryPolicy, Inherit, None],
    window: Any = None,
) -> BridgeFuture[Any]:
    """map()'s submit of input ``map_index`` when the map has its own ``retry=`` (None: no
    retries; INHERIT: the executor's), or a window its pausing jobs leave (a
    _window.MapWindow): submit_job, plus both set on the future before the hand-off.
    Written out, so that submit_job pays nothing for them."""
    coroutine_job = is_coroutine_job(fn)
    future: BridgeFuture[Any] = BridgeFuture(handoff)
    future._annotate = annotate
    future._map_index = map_index
    future._retry_policy = policy
    future._map_window = window
    handoff.submit_threadsafe(Job(future, fn, args, {}, copy_context(), coroutine_job))
    return future
