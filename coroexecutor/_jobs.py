"""Turning ``fn(*args, **kwargs)`` into the coroutine a job task runs."""

from __future__ import annotations

import asyncio
import inspect
import sys
import types
from collections.abc import Awaitable, Coroutine
from typing import Any, Callable

from ._errors import DeadlineExceeded

__all__ = ["as_coroutine", "wrapped_job"]

_CoroutineType = types.CoroutineType


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def as_coroutine(result: object, fn: object) -> Coroutine[Any, Any, Any]:
    """The coroutine for a job whose function returned ``result``."""
    if type(result) is _CoroutineType:
        return result
    if asyncio.iscoroutine(result):
        return result
    if inspect.isawaitable(result):
        return _await(result)
    raise TypeError(f"job function must return an awaitable (got {result!r} from {fn!r})")


if sys.version_info >= (3, 11):

    async def _with_deadline(coro: Coroutine[Any, Any, Any], seconds: float) -> Any:
        async with asyncio.timeout(seconds):
            return await coro

else:  # pragma: no cover - exercised by the tox matrix on 3.9 and 3.10

    async def _with_deadline(coro: Coroutine[Any, Any, Any], seconds: float) -> Any:
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        handle = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            return await coro
        except asyncio.CancelledError:
            if expired:
                raise DeadlineExceeded() from None
            raise
        finally:
            handle.cancel()


async def _initialized(
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    coro: Coroutine[Any, Any, Any],
) -> Any:
    if initializer is not None:
        ready = initializer(*initargs)
        if inspect.isawaitable(ready):
            await ready
    return await coro


def wrapped_job(
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    job_timeout: float | None,
    coro: Coroutine[Any, Any, Any],
) -> Coroutine[Any, Any, Any]:
    """The job's coroutine with the executor's initializer and per-job deadline around it.

    ``coro`` comes from calling the job's function at submit time, so a function that
    returns no awaitable is reported there; the initializer still runs before any of the
    job's own body. The deadline covers the initializer and the job together: it bounds
    how long the job holds its slot.
    """
    if job_timeout is not None:
        return _with_deadline(_initialized(initializer, initargs, coro), job_timeout)
    return _initialized(initializer, initargs, coro)
