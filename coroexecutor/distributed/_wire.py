"""What travels to the workers: one chunk out, and the checks of what is sent.

A chunk is wrapped in an object holding ``bytes``: dask pickles a plain list item by item
(about 15 µs each), a blob costs one ``cloudpickle.dumps``. The payloads are made with
cloudpickle, as dask does, so lambdas and closures travel; what cloudpickle cannot carry
(open sockets, locks, generators, C objects without pickle support) fails at the call
that sends it. What comes back is in _outcomes.py.
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
import sys
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Union

import cloudpickle
import distributed

from .. import CoroutineExecutor
from .._errors import async_generator_error
from .._keyed import MaxPerKey
from .._keyed_slots import check_keying
from .._notes import add_note, describe_call, safe_repr
from .._retry import INHERIT, RetryArg, RetryPolicy, resolve_retry
from .._validate import check_callables

__all__ = [
    "ON_CALLER", "ON_OWN_THREAD", "Chunk", "ChunkSpec", "Passing", "WorkerOptions",
    "check_client", "check_sendable", "name_input", "sendable_chunk", "worker_options",
]

# The indexes of one map whose jobs are to be cancelled: every index from a point on (a
# range), or a few submitted items (a frozenset). Both answer ``index in indexes``.
Indexes = Union[range, "frozenset[int]"]
EVERY_INDEX = range(0, sys.maxsize)

# What pickling or loading on the client lets through, as no item's failure, by thread.
# On the thread that called map() or next(): KeyboardInterrupt, which a Ctrl-C may raise
# in the middle of it. On the executor's own threads (where submit()'s jobs are pickled
# and their outcomes loaded): nothing, since Python runs signal handlers in the main
# thread only, so a KeyboardInterrupt there is a __reduce__'s, its item's own failure.
Passing = tuple[type[BaseException], ...]
ON_CALLER: Passing = (KeyboardInterrupt,)
ON_OWN_THREAD: Passing = ()


@dataclass(frozen=True)
class ChunkSpec:
    """One dask task's worth of jobs.

    ``fn`` is the map's function; then each call is a tuple of positional arguments. For
    a batch of submitted jobs ``fn`` is None and each call is ``(fn, args, kwargs)``.
    """

    exe_id: str
    map_id: str
    start: int  # the map index of calls[0]
    fn: Optional[Callable[..., Any]]
    calls: list[Any]
    return_exceptions: bool
    fail_fast: bool
    retry: Any = INHERIT  # the map's own retry policy; INHERIT: the executor's


@dataclass(frozen=True)
class WorkerOptions:
    """The per-worker-process options of one DaskExecutor."""

    per_worker: int
    job_timeout: Optional[float]
    max_per_second: Optional[float]
    burst: Optional[int]
    initializer: Optional[Callable[..., object]]
    initargs: tuple[Any, ...]
    loop_factory: Optional[Callable[[], asyncio.AbstractEventLoop]]
    retry: Optional[RetryPolicy] = None  # for the jobs whose chunk has no policy of its own
    key: Optional[Callable[..., Hashable]] = None  # per-key limits, in each worker process
    max_per_key: Optional[MaxPerKey] = None


def worker_options(
    per_worker: int, job_timeout: Optional[float], max_per_second: Optional[float],
    burst: Optional[int], initializer: Optional[Callable[..., object]], initargs: Iterable[Any],
    loop_factory: Optional[Callable[[], asyncio.AbstractEventLoop]], retry: RetryArg,
    key: Optional[Callable[..., Hashable]], max_per_key: Optional[MaxPerKey],
) -> WorkerOptions:
    """DaskExecutor()'s options for its worker processes, checked in the constructor,
    where the mistake was made, not in every worker process."""
    policy = resolve_retry(retry)
    per_key = check_keying(key, max_per_key)
    for value, what in ((policy, "retry policy"), (key, "key"), (per_key, "max_per_key")):
        check_sendable(value, "DaskExecutor()", what)
    check_callables(loop_factory=loop_factory)
    initargs = tuple(initargs)
    for option, name in ((initializer, "initializer"), (initargs, "initargs"),
                         (loop_factory, "loop_factory")):
        check_sendable(option, "DaskExecutor()", name)
    options = WorkerOptions(per_worker, job_timeout, max_per_second, burst, initializer,
                            initargs, loop_factory, policy, key, per_key)
    # The per-worker executor checks its options as it would in-process: check them here
    # by building one (it binds to no loop yet).
    CoroutineExecutor(per_worker, initializer=initializer, job_timeout=job_timeout,
                      max_per_second=max_per_second, burst=burst)
    return options


class Chunk:
    """A ChunkSpec pickled once, on the client, so a failure is raised where it was made."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    @classmethod
    def of(cls, spec: ChunkSpec, *, passing: Passing) -> Chunk:
        """The chunk pickled once; if that fails, a TypeError naming its first job that
        cannot be pickled (only then is each pickled alone)."""
        try:
            return cls(_dumps(spec))
        except passing:
            raise  # a Ctrl-C may land here: no job's
        except BaseException as error:  # (a __reduce__'s SystemExit too)
            failure = error
        raise next(unsendable_jobs(spec, passing=passing), (0, _unsent_chunk(spec, failure)))[1]

    def load(self) -> ChunkSpec:
        spec: ChunkSpec = pickle.loads(self.payload)
        return spec

    def __reduce__(self) -> tuple[Any, ...]:
        return (Chunk, (self.payload,))


def sendable_chunk(spec: ChunkSpec) -> tuple[Optional[Chunk], dict[int, TypeError]]:
    """Submitted jobs, on the flusher thread: their chunk pickled once, as ``Chunk.of``; if
    one of them cannot be pickled, the chunk of the others (None if none is left) and a
    TypeError for each that cannot, by its position in ``spec``: one bad argument (a
    ``__reduce__`` raising KeyboardInterrupt too: ON_OWN_THREAD) fails its own job only."""
    try:
        return Chunk(_dumps(spec)), {}
    except BaseException as error:
        failure = error
    unsent = dict(unsendable_jobs(spec, passing=ON_OWN_THREAD))
    if not unsent:  # each pickles alone, not together: the chunk's error for every job
        return None, dict.fromkeys(range(len(spec.calls)), _unsent_chunk(spec, failure))
    rest = [call for i, call in enumerate(spec.calls) if i not in unsent]
    chunk = Chunk.of(replace(spec, calls=rest), passing=ON_OWN_THREAD) if rest else None
    return chunk, unsent


def unsendable_jobs(spec: ChunkSpec, *, passing: Passing) -> Iterator[tuple[int, TypeError]]:
    """After a chunk failed to pickle: its jobs that cannot be pickled alone, each with a
    TypeError naming it (chained from its own failure), by position in the chunk. A map's
    function that cannot be pickled is named once, at position 0."""
    if spec.fn is not None:
        try:
            _dumps(spec.fn)
        except passing:
            raise  # as in Chunk.of
        except BaseException as failure:
            yield 0, _unsent_job(f"the function {safe_repr(spec.fn)} of map()", failure)
            return
    for i, call in enumerate(spec.calls):
        try:
            _dumps(call)
        except passing:
            raise  # as in Chunk.of
        except BaseException as failure:
            if spec.fn is None:
                fn, args, kwargs = call
                what = f"job {describe_call(fn, args, kwargs)}"
            else:
                what = f"job {describe_call(spec.fn, call, {})} of input {spec.start + i}"
            yield i, _unsent_job(what, failure)


def _unsent_job(what: str, failure: BaseException) -> TypeError:
    error = TypeError(
        f"cannot send {what} to the workers: {type(failure).__name__}: {failure}"
    )
    error.__cause__ = failure
    return error


def _unsent_chunk(spec: ChunkSpec, failure: BaseException) -> TypeError:
    """The error of a chunk that fails to pickle though each of its jobs pickles alone."""
    count, last = len(spec.calls), spec.start + len(spec.calls) - 1
    if count == 1:
        jobs = "the job submitted" if spec.fn is None else f"the job of input {last}"
    else:
        jobs = (f"{count} jobs submitted together" if spec.fn is None
                else f"the jobs of inputs {spec.start} to {last}")
    return _unsent_job(jobs, failure)


def _dumps(obj: object) -> bytes:
    payload: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return payload


def check_sendable(value: object, where: str, what: str = "retry policy") -> None:
    """Refuse, at the call that gave it, a retry policy (or another option: ``key``, the
    ``initializer`` and its arguments, ``loop_factory``) that cannot travel to the workers
    (each worker process runs its own copy): a TypeError here, not a failure there."""
    if value is None:
        return
    try:
        cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise TypeError(
            f"{where}: {what} {value!r} cannot be sent to the workers, it must be"
            f" picklable: {type(error).__name__}: {error}"
        ) from error


def name_input(
    error: BaseException,
    where: str,
    fn: object,
    args: tuple[Any, ...],
    attempts: int = 1,
    kwargs: Optional[dict[str, Any]] = None,
) -> None:
    """Add a note to a job's error naming the input that raised it, and how many attempts
    it had when it was retried (retry=). As the core's notes: shortened by reprlib, never
    raising (an error refusing notes goes on without it), in ``__notes__`` on 3.10."""
    tried = f", failed after {attempts} attempts" if attempts > 1 else ""
    add_note(error, f"raised by {where}: {describe_call(fn, args, kwargs or {})}{tried}")


def name_chunk(error: BaseException, jobs: str) -> None:
    """Note on the error of a chunk whose dask task failed as a whole (its worker lost more
    often than dask allows: ``KilledWorker``) which jobs it stands for: every one of them
    gets this one object, so it cannot name a single input."""
    add_note(error, f"raised for {jobs}: their chunk's dask task failed as a whole")


def check_client(client: object) -> None:
    """Refuse, at the constructor, a ``client=`` this executor cannot send through."""
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client (got {client!r})")
    if getattr(client, "_asynchronous", False) or client.asynchronous:
        # Its calls return awaitables, where this executor's threads wait for results.
        raise ValueError(
            f"client must be a synchronous Client, not one made with asynchronous=True"
            f" (got {client!r})"
        )
    if client.status in ("closing", "closed"):
        raise RuntimeError(f"client is closed (got {client!r})")


def check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (got {value!r})")
    if value < 1:
        raise ValueError(f"{name} must be greater than 0 (got {value!r})")
    return value


_WRONG = {"submit": "submit(fetch(url))", "map": "map(fetch(url), urls)"}
_RIGHT = {"submit": "submit(fetch, url)", "map": "map(fetch, urls)"}


def check_fn(fn: object, where: str) -> None:
    if asyncio.iscoroutine(fn):
        fn.close()  # no "never awaited" warning follows
        raise TypeError(
            f"{where}() expects a function and its arguments, not a coroutine object"
            f" (got {safe_repr(fn)})\n  wrong: {_WRONG[where]}\n  right: {_RIGHT[where]}"
        )
    if not callable(fn):
        raise TypeError(f"{where}() expects a callable (got {safe_repr(fn)})")
    if inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(type(fn).__call__):
        # It would run, and its result (a generator object) could not come back.
        raise async_generator_error(where, fn)
