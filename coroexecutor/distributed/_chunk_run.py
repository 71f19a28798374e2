"""A chunk as it runs in a worker process, and what its jobs' retries need there."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from dataclasses import dataclass
from typing import Any

from ._wire import ChunkSpec

__all__ = ["ChunkRun", "JobExit", "is_async"]


def is_async(fn: object) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004  (an async __call__ counts)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class JobExit(Exception):
    """Carries a job's KeyboardInterrupt/SystemExit (its ``__cause__``) out of its task."""


@dataclass(eq=False)  # kept in sets, by identity
class ChunkRun:
    """One chunk running on the loop. Its jobs are fed to the executor at most per_worker
    at a time, as slots free up: queueing a whole chunk in the executor's backlog holds
    thousands of pending futures, and the garbage collector's passes over them made each
    job ten times dearer (measured)."""

    spec: ChunkSpec
    values: list[Any]
    errors: dict[int, BaseException]
    cancelled: list[int]
    running: dict[int, asyncio.Future[Any]]  # position -> the job's future
    finished: asyncio.Future[None]
    first_error: concurrent.futures.Future[int]  # the map index of the first error
    next: int = 0  # the position of the next job to feed
