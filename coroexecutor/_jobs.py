"""Turning ``fn(*args, **kwargs)`` into the coroutine a job task runs."""

from __future__ import annotations

import asyncio
import inspect
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar, cast

from ._errors import JobTimeoutError, describe_job
from ._notes import CALL_KEEPERS, describe_call, describe_fn, safe_repr
from ._policy import in_asyncio_teardown

__all__ = [
    "FactoryReader", "JobTask", "as_coroutine", "factory_reader", "never", "prime",
    "prime_point", "priming",
    "wrapped_job",
]

_CoroutineType = types.CoroutineType
_CORO_CREATED = inspect.CORO_CREATED
_getcoroutinestate = inspect.getcoroutinestate
_get_running_loop = asyncio._get_running_loop

T = TypeVar("T")

# Read by the first line of every in-line job's runner (ErrorPolicy._run_job): True only
# while prime() advances a runner by hand. If another thread's runner takes its first
# step meanwhile and reads True, it suspends once more (a bare yield): harmless.
priming = False


@types.coroutine
def prime_point() -> Generator[None, None, None]:
    """Where a primed runner waits for its task's first step, already inside its ``try``."""
    yield


def prime(runner: Coroutine[Any, Any, Any]) -> None:
    """Advance a runner that has not started to its prime point.

    A task cancelled before its first step throws the CancelledError into its coroutine
    before any line of it has run, so no ``except`` or ``finally`` of the runner would
    see it: the job's slot would leak and its coroutine would never be closed. A primed
    runner is already suspended inside its ``try`` and settles the job as usual.
    """
    global priming
    priming = True
    try:
        runner.send(None)
    finally:
        priming = False


class JobTask(asyncio.Task[T]):
    """The task of an in-line job (what submit() returns): an ``asyncio.Task`` whose
    runner is primed only if the task is cancelled before its first step.

    Priming every runner up front cost about 0.1 µs per job, a few per cent of a no-op
    job; a cancel before the first step is rare, and every cancel comes through here.
    """

    __slots__ = ()

    def cancel(self, msg: Any | None = None) -> bool:
        # A JobTask always runs a runner coroutine (typeshed allows generators and None).
        runner = cast("Coroutine[Any, Any, Any]", self.get_coro())
        if _getcoroutinestate(runner) == _CORO_CREATED:
            prime(runner)
        return super().cancel(msg)


FactoryReader = Callable[[asyncio.AbstractEventLoop], object]


def never(loop: asyncio.AbstractEventLoop) -> object:
    """The reader of an executor that never builds a job's Task itself (see
    _factory_reader); start_job tells it from the debug mode's by identity."""
    return never  # not None: start the job's task through loop.create_task


def factory_reader(loop: asyncio.AbstractEventLoop, *, in_line: bool) -> FactoryReader | None:
    """How start_job reads the loop's task factory before each job: see _factory_reader.

    A loop in debug mode as the executor is first used on it (``-X dev``,
    ``asyncio.run(debug=True)``) gets a reader that checks the thread first (see
    _thread_checked), read for every job, ``in_line`` or not."""
    reader = _factory_reader(loop, in_line=in_line)
    return _thread_checked(reader) if loop.get_debug() else reader


def _thread_checked(reader: FactoryReader | None) -> FactoryReader:
    """``reader``, after the check asyncio's debug mode makes in ``loop.call_soon()``
    (``base_events.py: _check_thread``; uvloop's is the same): a loop running in another
    thread refuses the call, with asyncio's own RuntimeError.

    A job's task is made before asyncio's check runs, in the task's own ``__init__``,
    which calls ``call_soon()`` for its first step: the refused task was left pending, and
    "Task was destroyed but it is pending!" logged when it was collected (under uvloop
    at once, inside the call). Checked first, no task is made. Only in debug mode, where
    asyncio makes the check anyway: elsewhere the reader is what it was, at no cost."""

    def checked(loop: asyncio.AbstractEventLoop) -> object:
        # (Debug mode may be turned off since: then asyncio would not refuse, nor do we.)
        if loop.get_debug() and loop.is_running() and _get_running_loop() is not loop:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current one"
            )
        return loop._task_factory if reader is None else reader(loop)  # type: ignore[attr-defined]  # None: asyncio's own loops, which have it

    return checked


def _factory_reader(loop: asyncio.AbstractEventLoop, *, in_line: bool) -> FactoryReader | None:
    """How start_job reads the loop's task factory before each job (one may be set at any
    time). A factory of None means it may build the job's Task itself, as the loop's
    create_task would with no factory, saving a call per job.

    The reader is None for asyncio's own loops: start_job reads ``loop._task_factory``
    itself, an attribute read about 450 instructions a job cheaper than calling
    operator.attrgetter, whose generic lookup it replaced (callgrind, Python 3.11). (Not
    ``vars(loop)`` either: asking for an object's ``__dict__`` turns its attributes into
    a real dict, which slowed every attribute read of the loop, asyncio's own included,
    by 3,300 instructions a job.) For uvloop, a C-level getter. ``in_line`` false (jobs
    with a done callback), or a loop whose create_task is its own: a reader that never
    returns None."""
    if in_line:
        if type(loop).create_task is asyncio.BaseEventLoop.create_task:
            return None  # asyncio's own loops
        if type(loop).__module__ == "uvloop" and type(loop).__name__ == "Loop":
            # uvloop's create_task also builds asyncio.Task(coro, loop=loop) with no factory.
            return type(loop).get_task_factory
    return never


async def _await(
    awaitable: Awaitable[Any], fn: object, args: tuple[Any, ...] | None, kwargs: dict[str, Any]
) -> Any:
    if args is None:  # no note names it (annotate_errors=False, or its Call does)
        return await awaitable
    try:
        return await awaitable
    except asyncio.CancelledError:
        raise
    except BaseException:
        # The note names the call, not this wrapper: its frame, which the error's
        # traceback keeps, holds the call's description (see CALL_KEEPERS), and no
        # argument, as the error of a job that kept its call does not.
        job_call = describe_call(fn, args, kwargs)  # noqa: F841  # read from the frame
        del fn, args, kwargs
        raise


CALL_KEEPERS.add(_await.__code__)


def as_coroutine(
    result: object,
    fn: object,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    keep_call: bool = True,
) -> Coroutine[Any, Any, Any]:
    """The coroutine for a job whose function returned ``result``: called with ``args``
    and ``kwargs``, which a note on its error shows (None: annotate_errors=False, no
    message or note shows them). ``keep_call`` false: the job's Call names it (an
    attempt of a retry), so the wrapper of an awaitable that is no coroutine need not
    keep the call's description."""
    if type(result) is _CoroutineType:
        return result
    if asyncio.iscoroutine(result):
        return result
    if inspect.isawaitable(result):
        return _await(result, fn, args if keep_call else None, {} if kwargs is None else kwargs)
    # Only here, on the path of a result that is no coroutine, is fn's kind examined:
    # checking before the call would cost every job. Calling an async generator function
    # runs none of its body, so this is as good as refusing it before the call.
    # The message names fn alone (the note on the error names the call), and shows what
    # it returned only where the executor shows arguments (``args`` given): the value
    # may be one of them, and annotate_errors=False calls no __repr__.
    shown = safe_repr(result) if args is not None else f"{type(result).__qualname__} object"
    if inspect.isasyncgen(result):
        raise TypeError(
            f"job function must return an awaitable, not an async generator"
            f" (got {shown} from {describe_fn(fn)})"
        )
    raise TypeError(f"job function must return an awaitable (got {shown} from {describe_fn(fn)})")


def _expired(
    fn: object, args: tuple[Any, ...], kwargs: dict[str, Any], seconds: float, arguments: bool
) -> str:
    job = describe_job(fn, args, kwargs, arguments=arguments)
    return f"job {job} ran longer than job_timeout={seconds!r} s"


if sys.version_info >= (3, 11):

    async def _with_deadline(
        coro: Coroutine[Any, Any, Any],
        seconds: float,
        fn: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        arguments: bool,
        cancelled: Callable[[asyncio.Task[Any]], bool],
        timing_out: set[asyncio.Future[Any]],
    ) -> Any:
        """asyncio.timeout's rules (its own cancel, taken back on the way out, becomes the
        timeout; another cancel that comes after it stays a cancellation), with two
        differences. The deadline's cancel is told by the count of cancels the task had
        when the deadline came, not on entry: one the job caught before and went on from
        (``task.cancel()`` then ``except CancelledError: pass``, never taken back) stays
        counted, and compared with the count on entry it would turn the deadline's own
        cancel into a cancellation. And a deadline that comes while the executor has
        cancelled the job (fail-fast, the block's end, shutdown(), a map closed: see
        ``cancelled``) or asyncio is ending the loop, and the job has that cancel
        pending, does nothing. The job is cleaning up, and a clean-up that awaits runs
        to its end: nothing is cancelled a second time. Any other cancel the job has
        pending (its own asyncio.timeout's, a TaskGroup's, a task.cancel() it may
        swallow) does not stop the deadline, as it does not stop asyncio.timeout's."""
        task = asyncio.current_task()
        assert task is not None
        before = task.cancelling()
        counted = -1  # the task's count of cancels as the deadline came; -1: not (yet) sent

        def expire() -> None:
            nonlocal counted
            pending = task.cancelling()
            if pending > before and (cancelled(task) or in_asyncio_teardown()):
                return  # cancelled by the executor or the loop's end: cleaning up
            counted = pending
            timing_out.add(task)  # the executor's one cancel of it: see Outcomes.cancel
            task.cancel()

        handle = task.get_loop().call_later(seconds, expire)
        try:
            return await coro
        except BaseException as exc:
            # (Not if the executor cancelled the job since: its cancel, which the
            # deadline's stood for, is what the job ends with: see Outcomes.cancel.)
            timed_out = (
                counted >= 0 and isinstance(exc, asyncio.CancelledError) and not cancelled(task)
            )
            if counted >= 0:
                sent, counted = counted, -1
                if task.uncancel() > sent:  # cancelled by someone else after the deadline
                    timed_out = False
            message = _expired(fn, args, kwargs, seconds, arguments) if timed_out else ""
            # The error's traceback keeps this frame: not the job's call (see Call.drop).
            del fn, args, kwargs
            if not timed_out:
                raise  # the job's own error (a TimeoutError of its own too)
            raise JobTimeoutError(message) from exc
        finally:
            handle.cancel()
            timing_out.discard(task)
            if counted >= 0:  # the job swallowed the deadline's cancel and returned
                task.uncancel()

else:  # pragma: no cover - exercised by the tox matrix on 3.9 and 3.10

    async def _with_deadline(
        coro: Coroutine[Any, Any, Any],
        seconds: float,
        fn: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        arguments: bool,
        cancelled: Callable[[asyncio.Task[Any]], bool],
        timing_out: set[asyncio.Future[Any]],
    ) -> Any:
        """As on 3.11+, with what a task that counts no cancels allows: a cancel the
        executor or the loop's end sent (see ``cancelled``) is taken as pending, as it is
        on 3.11+ unless the job took it back (uncancel(), which 3.9 and 3.10 lack); and
        a job the deadline cancelled that ends with a CancelledError has timed out,
        whatever cancel came after the deadline's."""
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            if cancelled(task) or in_asyncio_teardown():
                return  # cancelled by the executor or the loop's end: cleaning up
            expired = True
            timing_out.add(task)  # as above
            task.cancel()

        handle = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            return await coro
        except BaseException as exc:
            timed_out = (  # (as above)
                expired and isinstance(exc, asyncio.CancelledError) and not cancelled(task)
            )
            message = _expired(fn, args, kwargs, seconds, arguments) if timed_out else ""
            del fn, args, kwargs  # as above
            if not timed_out:
                raise
            raise JobTimeoutError(message) from exc
        finally:
            handle.cancel()
            timing_out.discard(task)


def wrapped_job(
    job_timeout: float,
    coro: Coroutine[Any, Any, Any],
    fn: object,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    arguments: bool = True,
    cancelled: Callable[[asyncio.Task[Any]], bool],
    timing_out: set[asyncio.Future[Any]],
) -> Coroutine[Any, Any, Any]:
    """The job's coroutine with the executor's per-job deadline around it.

    ``coro`` comes from calling the job's function ``fn(*args, **kwargs)`` at submit
    time, so a function that returns no awaitable is reported there; ``fn`` and its
    arguments only name the job in the JobTimeoutError. The wrapper takes ``coro``
    itself and makes no other coroutine (``arguments``: False under annotate_errors=False,
    so the message calls no ``__repr__``): if its task is cancelled before its first step,
    ``coro`` is the one coroutine left unstarted, and the caller closes it.
    ``cancelled``: whether the executor has cancelled the job of a task, its jobs all or
    that one (see _with_deadline). ``timing_out``: the executor's record of the tasks a
    deadline has cancelled, until the attempt ends (Outcomes.timing_out): that cancel is
    the executor's one cancel of the job, and no later cancel of its interrupts the
    clean-up it started.
    """
    return _with_deadline(coro, job_timeout, fn, args, kwargs, arguments, cancelled, timing_out)
