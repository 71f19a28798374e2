"""A chunk as it runs in a worker process, what its jobs' retries need there, and the
loop it runs on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import sys
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .._retry import RetryPolicy
from ._wire import ChunkSpec, name_input

__all__ = [
    "RETRYING", "ChunkRun", "JobExit", "RetryingJob", "cancel_every_job", "is_async", "key_of_job",
    "make_loop", "name_input_at", "name_inputs",
]


def is_async(fn: object) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004  (an async __call__ counts)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class JobExit(Exception):
    """Carries out of its task, as its ``__cause__``, what a job raised that asyncio would
    not keep as the task's error: KeyboardInterrupt and SystemExit (they escape the loop),
    a blocking call's own CancelledError (it would cancel the task), and its
    StopIteration (no asyncio future takes one: see _blocking._stop_exit)."""


@dataclass(eq=False)  # kept in sets, by identity
class ChunkRun:
    """One chunk running on the loop. Its jobs are fed to the executor as slots free up,
    at most per_worker at a time with those of the process's other chunks, which come
    after it if they came later (ChunkFeed._feed): queueing a whole chunk in the
    executor's backlog holds thousands of pending futures, and the garbage collector's
    passes over them made each job ten times dearer (measured)."""

    spec: ChunkSpec
    values: list[Any]
    errors: dict[int, BaseException]
    cancelled: list[int]
    running: dict[int, asyncio.Future[Any]]  # position -> the job's future
    finished: asyncio.Future[None]
    first_error: concurrent.futures.Future[int]  # the map index of the first error
    next: int = 0  # the position of the next job to feed
    # retry=: the positions of jobs that have paused (they hold no slot of the executor,
    # so the process may feed one more job each), and each job's attempt count so far.
    pausing: set[int] = field(default_factory=set)
    attempts: dict[int, int] = field(default_factory=dict)
    cut_after: int = sys.maxsize  # fail-fast: the lowest position whose error cut the map
    # submitted jobs: told each position that has its outcome (OutcomeStream.ended, which
    # sends them back early, _stream.py), and the positions whose errors are noted so far
    ended: Optional[Callable[[int], None]] = None
    noted: set[int] = field(default_factory=set)
    # The positions of the running jobs this process has cancelled (see cancel).
    cancelling: set[int] = field(default_factory=set)
    # The process's executor's canceller (Outcomes.cancel), which sends every cancel of
    # running jobs (see cancel); a plain cancel() when the process has no executor.
    cancel_job: Callable[[asyncio.Future[Any]], object] = asyncio.Future.cancel

    def cancel(self, i: int) -> None:
        """Cancel the running job at position ``i``, once: a cancel reaches a job from the
        client (map closed, future.cancel(), shutdown) and from the worker loop's stop,
        which come in either order. A second one interrupted the job's own handling of
        the first (``except CancelledError: await flush()``), and ended it early.

        Each of them is the DaskExecutor's own, so it goes through the process's
        executor's canceller, as the bridge's own cancels do: that executor then knows
        the job is cleaning up from its cancel, and a job_timeout that passes meanwhile
        sends it no second one (see _jobs._with_deadline)."""
        if i not in self.cancelling:
            self.cancelling.add(i)
            self.cancel_job(self.running[i])


def cancel_every_job(runs: Iterable[Iterable[ChunkRun]]) -> int:
    """Cancel every running job of these chunks (each once); how many there are."""
    count = 0
    for chunk_runs in runs:
        for run in chunk_runs:
            for i in list(run.running):
                run.cancel(i)
            count += len(run.running)
    return count


# retry=: set in a job's own task (so in its context) before each attempt: the policy of
# its chunk, and where the job is in it. The process's executor asks ProcessLoop's one
# policy, which reads this to ask the job's own (a map may bring its own policy).
RetryingJob = tuple[RetryPolicy, ChunkRun, int]
RETRYING: contextvars.ContextVar[Optional[RetryingJob]] = contextvars.ContextVar(
    "coroexecutor_dask_retrying", default=None
)


def name_inputs(
    run: ChunkRun, broken: Optional[BaseException], positions: Optional[Iterable[int]] = None
) -> None:
    """Note on each error of a finished chunk (or at these positions: sent back early)
    which input raised it, once (``broken``: the initializer's error, one object for every
    job of the process: no note on it)."""
    for i in list(run.errors) if positions is None else positions:
        error = run.errors.get(i)
        if error is None or error is broken or i in run.noted:
            continue
        run.noted.add(i)
        name_input_at(run, i, error)


def name_input_at(run: ChunkRun, i: int, error: BaseException) -> None:
    """Note on ``error`` that the job at position ``i`` of the chunk raised it."""
    spec = run.spec
    attempts = run.attempts.get(i, 1)
    if spec.fn is None:
        fn, args, kwargs = spec.calls[i]
        name_input(error, "a job submitted to a DaskExecutor", fn, args, attempts, kwargs)
    else:
        name_input(error, f"input {spec.start + i} of a DaskExecutor map", spec.fn,
                   spec.calls[i], attempts)


def key_of_job(key: Callable[..., Hashable], *job: Any) -> Hashable:
    """The user's ``key`` of a job run as ``_guarded(how, fn, args, kwargs)``, or as
    ``_retrying((retrying_job, is_async), fn, args, kwargs)``: its last two arguments."""
    _how, _fn, args, kwargs = job
    return key(*args, **kwargs)


def make_loop(
    factory: Optional[Callable[[], asyncio.AbstractEventLoop]],
) -> tuple[asyncio.AbstractEventLoop, Optional[BaseException]]:
    """The loop_factory's loop; if it raises or returns no loop, a stdlib loop on which
    every job fails with the error returned beside it (a TypeError for no loop)."""
    if factory is None:
        return asyncio.new_event_loop(), None
    try:
        loop = factory()
    except Exception as error:
        return asyncio.new_event_loop(), error
    if not isinstance(loop, asyncio.AbstractEventLoop):
        error = TypeError(f"loop_factory must return an event loop (got {loop!r})")
        return asyncio.new_event_loop(), error
    return loop, None
