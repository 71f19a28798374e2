"""Errors name their job: the PEP 678 note both executors add to a failed job's error.

A coroutine job of CoroutineExecutor is named from its coroutine's frame (its defaults
show); the bridge names a job from its call.

The note's text is tested in tests/test_notes.py; here, that the executors add it to the
right error, naming the right input, once, to the very object the job raised, and never
on a success path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

import pytest

from coroexecutor import Adaptive, CoroutineExecutor, JobTimeoutError, LoopExecutor, Retry

pytestmark = pytest.mark.timeout(15)

raised: list[BaseException] = []


def notes(exc: BaseException | None) -> list[str]:
    return list(getattr(exc, "__notes__", []))


async def reciprocal(n: int, *, scale: float = 1.0) -> float:
    await asyncio.sleep(0)
    try:
        return scale / n
    except ZeroDivisionError as exc:
        raised.append(exc)
        raise


def blocking_reciprocal(n: int) -> float:
    try:
        return 1 / n
    except ZeroDivisionError as exc:
        raised.append(exc)
        raise


@pytest.fixture(autouse=True)
def clear_raised() -> None:
    raised.clear()


#
# CoroutineExecutor
#


async def test_the_block_reraises_the_jobs_own_error_with_one_note(loop_kind: str) -> None:
    with pytest.raises(ZeroDivisionError) as info:
        async with CoroutineExecutor() as exe:
            task = await exe.submit(reciprocal, 0, scale=2.5)
            await asyncio.wait([task])
    assert info.value is raised[0]
    assert notes(info.value) == ["coroexecutor: job reciprocal(0, scale=2.5) failed"]
    assert task.exception() is info.value


async def test_submit_nowait_notes_a_queued_jobs_error(loop_kind: str) -> None:
    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
        first = exe.submit_nowait(reciprocal, 1)
        queued = exe.submit_nowait(reciprocal, 0)  # waits for the slot
    assert first.result() == 1.0
    assert queued.exception() is raised[0]
    assert notes(queued.exception()) == ["coroexecutor: job reciprocal(0, scale=1.0) failed"]


@pytest.mark.parametrize("method", ["map", "map_unordered"])
async def test_a_map_names_the_input_that_failed(loop_kind: str, method: str) -> None:
    inputs = [5, 4, 3, 0, 2]
    with pytest.raises(ZeroDivisionError) as info:
        async with CoroutineExecutor(max_workers=2) as exe:
            async for _ in getattr(exe, method)(reciprocal, inputs):
                pass
    assert info.value is raised[0]
    assert notes(info.value) == ["coroexecutor: job reciprocal(0, scale=1.0) failed (map input #3)"]


@pytest.mark.parametrize("method", ["map", "map_unordered"])
async def test_return_exceptions_yields_noted_errors(loop_kind: str, method: str) -> None:
    async with CoroutineExecutor(max_workers=2) as exe:
        results = [
            r async for r in getattr(exe, method)(reciprocal, [0, 1, 0], return_exceptions=True)
        ]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert sorted(map(id, errors)) == sorted(map(id, raised))
    assert sorted(note for error in errors for note in notes(error)) == [
        "coroexecutor: job reciprocal(0, scale=1.0) failed (map input #0)",
        "coroexecutor: job reciprocal(0, scale=1.0) failed (map input #2)",
    ]


async def test_a_map_of_several_iterables_names_the_zipped_call(loop_kind: str) -> None:
    async def divide(a: int, b: int) -> float:
        await asyncio.sleep(0)
        return a / b

    async with CoroutineExecutor() as exe:
        results = [r async for r in exe.map(divide, [1, 2, 3], [1, 0, 1], return_exceptions=True)]
    assert notes(results[1]) == ["coroexecutor: job divide(2, 0) failed (map input #1)"]


async def test_no_note_on_success_paths(loop_kind: str) -> None:
    kept = ValueError("a value, not a failure")

    async def returns_an_error() -> ValueError:
        await asyncio.sleep(0)
        return kept

    async def handles_its_own() -> str:
        try:
            raise KeyError("handled inside the job")
        except KeyError as exc:
            raised.append(exc)
        return "fine"

    attempts: list[OSError] = []

    async def retried_then_fine() -> str:
        if len(attempts) < 2:
            attempts.append(OSError(len(attempts)))
            raise attempts[-1]
        return "fine"

    async with CoroutineExecutor(retry=Retry(backoff=0)) as exe:
        assert (await (await exe.submit(returns_an_error))) is kept
        assert [r async for r in exe.map(lambda _: handles_its_own(), [1])] == ["fine"]
        assert await (await exe.submit(retried_then_fine)) == "fine"
    assert notes(kept) == [] and notes(raised[0]) == []
    assert [notes(error) for error in attempts] == [[], []]  # retried: no failure yet


async def at_once(n: int) -> float:
    """Fails in its first step: the eager task factory finishes it inside create_task."""
    try:
        return 1 / n
    except ZeroDivisionError as exc:
        raised.append(exc)
        raise


@pytest.mark.parametrize(
    "options",
    [{"on_job_done": lambda task: None}, {"max_workers": Adaptive(min=1, max=4, initial=2)}],
    ids=["hook", "adaptive"],
)
async def test_a_job_finished_at_its_start_is_named_on_the_done_callback_path(
    loop_kind: str, options: dict[str, Any]
) -> None:
    # A hook or an adaptive limit settles jobs from their task's done callback. With the
    # eager task factory a job that fails without suspending has finished inside
    # create_task, and Task.get_coro() then gives None (CPython 3.12.0-3.12.4 crashed
    # on it): the executor names the job from the coroutine it keeps itself.
    async with CoroutineExecutor(suppress_task_errors=True, **options) as exe:
        task = await exe.submit(at_once, 0)
        await asyncio.wait([task])
    assert task.exception() is raised[0]
    assert notes(task.exception()) == ["coroexecutor: job at_once(0) failed"]


async def test_annotate_errors_false_adds_no_note(loop_kind: str) -> None:
    async with CoroutineExecutor(annotate_errors=False, suppress_task_errors=True) as exe:
        task = await exe.submit(reciprocal, 0)
        results = [r async for r in exe.map(reciprocal, [0], return_exceptions=True)]
    assert notes(task.exception()) == [] and notes(results[0]) == []


@pytest.mark.parametrize("value", ["false", 0, None])
def test_annotate_errors_takes_only_true_or_false(value: object) -> None:
    # The switch that keeps arguments (credentials) out of notes: "false" must not be
    # taken as true.
    message = f"^annotate_errors must be True or False \\(got {value!r}\\)$"
    with pytest.raises(TypeError, match=message):
        CoroutineExecutor(annotate_errors=value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=message):
        LoopExecutor(annotate_errors=value)  # type: ignore[arg-type]


async def outer_job() -> None:
    async with CoroutineExecutor() as inner:
        await inner.submit(reciprocal, 0)


async def test_a_job_failing_with_its_childs_error_adds_its_own_note() -> None:
    with pytest.raises(ZeroDivisionError) as info:
        async with CoroutineExecutor() as exe:
            await exe.submit(outer_job)
    assert info.value is raised[0]
    assert notes(info.value) == [
        "coroexecutor: job reciprocal(0, scale=1.0) failed",
        "coroexecutor: job outer_job() failed",
    ]


async def test_a_cancelled_job_gets_no_note(loop_kind: str) -> None:
    cancel = asyncio.CancelledError("from outside")

    async def cancelled() -> None:
        raise cancel

    async with CoroutineExecutor(suppress_task_errors=True) as exe:
        task = await exe.submit(cancelled)
        await asyncio.wait([task])
    assert task.cancelled() and notes(cancel) == []


#
# LoopExecutor
#


@pytest.mark.parametrize("fn", [reciprocal, blocking_reciprocal], ids=["coroutine", "blocking"])
def test_the_bridge_notes_a_futures_error(fn: Any) -> None:
    with LoopExecutor(max_workers=2) as exe:
        future = exe.submit(fn, 0)
        assert isinstance(future.exception(timeout=5), ZeroDivisionError)
    assert future.exception() is raised[0]
    name = fn.__name__
    assert notes(future.exception()) == [f"coroexecutor: job {name}(0) failed"]


@pytest.mark.parametrize("fn", [reciprocal, blocking_reciprocal], ids=["coroutine", "blocking"])
def test_the_bridge_map_names_the_input_that_failed(fn: Any) -> None:
    with LoopExecutor(max_workers=2) as exe:
        results = exe.map(fn, [4, 2, 0, 1], timeout=5)
        assert next(results) == 0.25 and next(results) == 0.5
        with pytest.raises(ZeroDivisionError) as info:
            next(results)
    assert info.value is raised[0]
    name = fn.__name__
    assert notes(info.value) == [f"coroexecutor: job {name}(0) failed (map input #2)"]


def test_the_bridge_names_a_partial_by_the_call_it_makes() -> None:
    with LoopExecutor(max_workers=1) as exe:
        future = exe.submit(functools.partial(reciprocal, scale=3.0), 0)
        concurrent.futures.wait([future], timeout=5)
    assert notes(future.exception()) == ["coroexecutor: job reciprocal(0, scale=3.0) failed"]


async def _unreachable(url: str) -> None:
    await asyncio.sleep(0)
    raise ConnectionError(f"cannot reach {url}")


class _Unreachable:
    """An awaitable that is neither a coroutine nor an asyncio future."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __await__(self) -> Generator[Any, None, None]:
        return _unreachable(self.url).__await__()


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def _as_task(url: str) -> asyncio.Task[None]:
    return asyncio.ensure_future(_unreachable(url))


def _returning(kind: str, loop: asyncio.AbstractEventLoop) -> Callable[[str], Awaitable[None]]:
    """A blocking callable (a worker thread runs it) that returns an awaitable of ``kind``,
    which then fails on ``loop``."""

    def connect(url: str) -> Awaitable[None]:
        if kind == "coroutine":
            return _unreachable(url)
        if kind == "awaitable":
            return _Unreachable(url)
        if kind == "task":  # made on the loop: a worker thread has no loop to make it on
            return asyncio.run_coroutine_threadsafe(_as_task(url), loop).result(timeout=5)
        future = loop.create_future()
        loop.call_soon_threadsafe(future.set_exception, ConnectionError(f"cannot reach {url}"))
        return future

    return connect


@pytest.mark.parametrize("kind", ["coroutine", "future", "task", "awaitable"])
@pytest.mark.parametrize(
    "options",
    [{}, {"job_timeout": 60}, {"retry": Retry(attempts=2, backoff=0, jitter=False)}],
    ids=["direct", "job_timeout", "retry"],
)
def test_the_bridge_names_a_blocking_call_whose_awaitable_failed(
    kind: str, options: dict[str, Any]
) -> None:
    # The job is the call and its awaitable together (bridge.rst): the awaitable's error
    # got no note, for submit() and map(), but for a job with a retry policy, whose
    # attempts keep the call (found by a docs-only tester, with ``lambda url: fetch(url)``).
    with LoopExecutor(max_workers=2, **options) as exe:
        connect = _returning(kind, exe.submit(_running_loop).result(timeout=5))
        error = exe.submit(connect, "http://a").exception(timeout=5)
        with pytest.raises(ConnectionError) as info:
            next(exe.map(connect, ["http://a", "http://b"], timeout=5))
    assert isinstance(error, ConnectionError)
    failed = "failed after 2 attempts" if "retry" in options else "failed"
    assert notes(error) == [f"coroexecutor: job connect('http://a') {failed}"]
    assert notes(info.value) == [f"coroexecutor: job connect('http://a') {failed} (map input #0)"]


async def _parked(n: int) -> None:
    await asyncio.Event().wait()  # until job_timeout cancels it


def _parking(n: int) -> Awaitable[None]:
    return _parked(n)  # a blocking callable: the loop awaits what it returns


@pytest.mark.parametrize("fn", [_parked, _parking], ids=["coroutine", "blocking"])
@pytest.mark.parametrize(
    "options",
    [{}, {"retry": Retry(attempts=2, backoff=0, jitter=False)}],
    ids=["once", "retry"],
)
def test_the_bridge_notes_a_job_timeout_error(fn: Any, options: dict[str, Any]) -> None:
    # A job that ran past job_timeout failed with the core's JobTimeoutError, which the
    # bridge passed on without a note, for submit() and map(), unless a retry policy
    # kept the call (found by a docs-only tester; CoroutineExecutor notes it).
    with LoopExecutor(max_workers=2, job_timeout=0.05, **options) as exe:
        error = exe.submit(fn, 7).exception(timeout=5)
        with pytest.raises(JobTimeoutError) as info:
            next(exe.map(fn, [8, 9], timeout=5))
    assert isinstance(error, JobTimeoutError)
    failed = "failed after 2 attempts" if "retry" in options else "failed"
    name = fn.__name__
    assert notes(error) == [f"coroexecutor: job {name}(7) {failed}"]
    assert notes(info.value) == [f"coroexecutor: job {name}(8) {failed} (map input #0)"]


@pytest.mark.parametrize("fn", [_parked, _parking], ids=["coroutine", "blocking"])
def test_annotate_errors_false_leaves_a_job_timeout_error_without_a_note(fn: Any) -> None:
    with LoopExecutor(max_workers=2, job_timeout=0.05, annotate_errors=False) as exe:
        error = exe.submit(fn, 7).exception(timeout=5)
        with pytest.raises(JobTimeoutError) as info:
            next(exe.map(fn, [8, 9], timeout=5))
    assert isinstance(error, JobTimeoutError)
    assert notes(error) == [] and notes(info.value) == []


class _Token:
    pass


def _connect_with(token: _Token) -> Awaitable[None]:
    return _unreachable("http://a")  # the awaitable holds no token


@pytest.mark.parametrize("options", [{}, {"job_timeout": 60}], ids=["direct", "job_timeout"])
def test_a_blocking_calls_awaitable_error_keeps_no_reference_to_the_call(
    options: dict[str, Any],
) -> None:
    # The note names the call; the error, which the caller may keep for long, holds only
    # the note's string (semantics.rst): the frames its traceback keeps let go of the call.
    with LoopExecutor(max_workers=1, **options) as exe:
        token = _Token()
        alive = weakref.ref(token)
        future = exe.submit(_connect_with, token)
        del token
        error = future.exception(timeout=5)
    gc.collect()
    assert isinstance(error, ConnectionError) and len(notes(error)) == 1
    assert alive() is None


@pytest.mark.parametrize("kind", ["coroutine", "future"])
@pytest.mark.parametrize("options", [{}, {"job_timeout": 60}], ids=["direct", "job_timeout"])
def test_annotate_errors_false_leaves_a_blocking_calls_awaitable_without_a_note(
    kind: str, options: dict[str, Any]
) -> None:
    with LoopExecutor(max_workers=1, annotate_errors=False, **options) as exe:
        connect = _returning(kind, exe.submit(_running_loop).result(timeout=5))
        error = exe.submit(connect, "http://a").exception(timeout=5)
    assert isinstance(error, ConnectionError) and notes(error) == []


def test_the_bridge_passes_annotate_errors_through() -> None:
    with LoopExecutor(max_workers=1, annotate_errors=False) as exe:
        future = exe.submit(blocking_reciprocal, 0)
        concurrent.futures.wait([future], timeout=5)
    assert notes(future.exception()) == []


class _ReprExits:
    def __repr__(self) -> str:
        raise SystemExit("no repr for secrets")


def _fails_with(token: object) -> None:
    raise ValueError("job failed")


async def _fails_async(token: object) -> None:
    raise ValueError("job failed")


@pytest.mark.parametrize("kind", ["blocking", "coroutine"])
def test_an_argument_whose_repr_raises_systemexit_leaves_the_bridge_jobs_error(
    kind: str,
) -> None:
    # The note's repr of the argument raised SystemExit: a blocking job's worker thread
    # died with its future running for ever; a coroutine job failed with SystemExit.
    fn: Any = _fails_with if kind == "blocking" else _fails_async
    with LoopExecutor(max_workers=2) as exe:
        future = exe.submit(fn, _ReprExits())
        error = future.exception(timeout=5)
        assert exe.submit(str.upper, "still works").result(timeout=5) == "STILL WORKS"
    assert isinstance(error, ValueError)
    assert any("<unrepresentable>" in note for note in error.__notes__)


async def test_an_argument_whose_repr_raises_systemexit_leaves_the_cores_error() -> None:
    async with CoroutineExecutor(suppress_task_errors=True) as exe:
        task = await exe.submit(_fails_async, _ReprExits())
        queued = exe.submit_nowait(_fails_async, _ReprExits())
    for job in (task, queued):
        error = job.exception()
        assert isinstance(error, ValueError)
        assert any("<unrepresentable>" in note for note in error.__notes__)


class _Matrix:
    """An argument whose repr spans lines, as a numpy array's or a DataFrame's does."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __repr__(self) -> str:
        return "matrix([" + ",\n        ".join(f"[{r}, {r}]" for r in range(self.rows)) + "])"


@pytest.mark.parametrize("rows", [2, 40])  # short, and long enough to be cut
@pytest.mark.parametrize("how", ["submit", "submit, retry=", "map", "bridge", "bridge, retry="])
def test_an_argument_whose_repr_spans_lines_gives_a_one_line_note(rows: int, how: str) -> None:
    # Found by a docs-only tester: a numpy array made the note three lines long, where the
    # docs promise one.
    retry = Retry(attempts=2, backoff=0) if how.endswith("retry=") else None
    if how.startswith("bridge"):
        with LoopExecutor(retry=retry) as exe:
            error = exe.submit(_fails_async, _Matrix(rows)).exception(timeout=5)
    else:

        async def run() -> BaseException | None:
            async with CoroutineExecutor(retry=retry, suppress_task_errors=True) as exe:
                if how == "map":
                    async for outcome in exe.map(
                        _fails_async, [_Matrix(rows)], return_exceptions=True
                    ):
                        return outcome  # type: ignore[no-any-return]  # an exception here
                task = await exe.submit(_fails_async, _Matrix(rows))
                await asyncio.wait([task])
                return task.exception()

        error = asyncio.run(run())
    assert isinstance(error, ValueError)
    (note,) = notes(error)
    assert "\n" not in note, note
    assert "matrix([[0, 0], [1, 1]" in note, note  # the line breaks became spaces


class _NotesInterrupt(Exception):
    """An error whose notes cannot be read: its __notes__ raises KeyboardInterrupt."""

    @property
    def __notes__(self) -> list[str]:
        raise KeyboardInterrupt


class _SetattrExits(Exception):
    """An error that refuses notes with SystemExit."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "__notes__":
            raise SystemExit(f"no {name}")
        super().__setattr__(name, value)


class _AddNoteExits(Exception):
    """An error whose add_note() (Python 3.11+) raises SystemExit."""

    def add_note(self, note: str) -> None:
        raise SystemExit(f"no {note!r}")


_REFUSING: list[Any] = [
    _NotesInterrupt,
    _SetattrExits,
    pytest.param(
        _AddNoteExits,
        marks=pytest.mark.skipif(
            sys.version_info < (3, 11), reason="notes are set by hand before 3.11"
        ),
    ),
]


async def _raises(cls: type[Exception]) -> None:
    await asyncio.sleep(0)
    raise cls("job failed")


@pytest.mark.parametrize("cls", _REFUSING)
@pytest.mark.parametrize("how", ["submit", "hook", "retry", "queued", "map"])
async def test_an_error_refusing_its_note_with_a_base_exception_is_raised_without_it(
    loop_kind: str, how: str, cls: type[Exception]
) -> None:
    # Regression (found by a docs-only tester): the note's KeyboardInterrupt or SystemExit
    # left the job's last step before it settled, and the block's exit waited for ever.
    options: dict[str, Any] = {}
    if how == "hook":
        options["on_job_done"] = lambda future: None
    elif how == "retry":
        options["retry"] = Retry(attempts=2, on=(KeyError,))
    with pytest.raises(cls) as info:
        async with CoroutineExecutor(max_workers=1, **options) as exe:
            if how == "queued":
                exe.submit_nowait(_raises, cls)
            elif how == "map":
                async for _ in exe.map(_raises, [cls]):
                    pass
            else:
                await exe.submit(_raises, cls)
    assert (exe.stats.failed, exe.stats.running) == (1, 0)
    assert "__notes__" not in vars(info.value)
    info.value.__traceback__ = None


@pytest.mark.parametrize("cls", _REFUSING)
@pytest.mark.parametrize("kind", ["blocking", "coroutine"])
def test_an_error_refusing_its_note_with_a_base_exception_fails_its_bridge_future(
    kind: str, cls: type[Exception]
) -> None:
    def blocking(cls: type[Exception]) -> None:
        raise cls("job failed")

    fn: Any = blocking if kind == "blocking" else _raises
    with LoopExecutor(max_workers=1) as exe:
        error = exe.submit(fn, cls).exception(timeout=5)
        assert exe.submit(str.upper, "still works").result(timeout=5) == "STILL WORKS"
    assert type(error) is cls


def _returns_failed_future(url: str, *, timeout: int = 5) -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(ConnectionError(url))
    return future


def _returns_failing_task(url: str, *, timeout: int = 5) -> asyncio.Future[None]:
    return asyncio.ensure_future(_raises_connection_error(url))


async def _raises_connection_error(url: str) -> None:
    await asyncio.sleep(0)
    raise ConnectionError(url)


@pytest.mark.parametrize("fn", [_returns_failed_future, _returns_failing_task])
@pytest.mark.parametrize("hook", [None, lambda future: None], ids=["in-line", "hook"])
async def test_the_core_names_a_plain_function_whose_awaitable_failed(
    loop_kind: str, fn: Any, hook: Any
) -> None:
    # Found while fixing the bridge's twin: the note named the executor's own wrapper,
    # "job _await(<Future finished exception=...>) failed".
    name = fn.__name__
    async with CoroutineExecutor(
        max_workers=1, suppress_task_errors=True, on_job_done=hook
    ) as exe:
        submitted = await exe.submit(fn, "http://a", timeout=3)
        queued = exe.submit_nowait(fn, "http://b")
        mapped = [e async for e in exe.map(fn, ["http://c"], return_exceptions=True)]
    assert notes(submitted.exception()) == [
        f"coroexecutor: job {name}('http://a', timeout=3) failed"
    ]
    assert notes(queued.exception()) == [f"coroexecutor: job {name}('http://b') failed"]
    assert [notes(e) for e in mapped] == [
        [f"coroexecutor: job {name}('http://c') failed (map input #0)"]
    ]


class _Arg:
    def __repr__(self) -> str:
        return "Arg()"


def _returns_failed_future_of(arg: object) -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(ConnectionError("failed"))
    return future


async def test_a_plain_functions_failed_job_keeps_no_argument_for_its_note() -> None:
    arg = _Arg()
    ref = weakref.ref(arg)
    async with CoroutineExecutor(suppress_task_errors=True) as exe:
        task = await exe.submit(_returns_failed_future_of, arg)
    del arg
    gc.collect()
    error = task.exception()  # the task and its error are kept; the argument is not
    assert notes(error) == ["coroexecutor: job _returns_failed_future_of(Arg()) failed"]
    assert ref() is None


class _CountsRepr:
    """An argument that must not reach the logs: counts the calls of its __repr__."""

    calls = 0

    def __repr__(self) -> str:
        type(self).calls += 1
        return "Secret('hunter2')"


def _starts_failing_task(secret: object) -> asyncio.Future[None]:
    return asyncio.ensure_future(_raises_connection_error("x"))


async def _outlives(secret: object) -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize("how", ["plain function's task", "retry", "job_timeout"])
async def test_annotate_errors_false_calls_no_repr_of_the_arguments(how: str) -> None:
    # Found by a docs-only tester: a plain function's awaitable was described anyway
    # (once an attempt), and a JobTimeoutError's message showed the arguments.
    _CountsRepr.calls = 0
    options: dict[str, Any] = {"annotate_errors": False, "suppress_task_errors": True}
    fn: Any = _starts_failing_task
    if how == "retry":
        options["retry"] = Retry(attempts=2, on=(ConnectionError,), backoff=0.0)
    elif how == "job_timeout":
        options["job_timeout"] = 0.01
        fn = _outlives
    async with CoroutineExecutor(**options) as exe:
        task = await exe.submit(fn, _CountsRepr())
        mapped = [e async for e in exe.map(fn, [_CountsRepr()], return_exceptions=True)]
    for error in (task.exception(), *mapped):
        assert isinstance(error, BaseException) and notes(error) == []
        assert "hunter2" not in str(error)
    if how == "job_timeout":
        assert str(task.exception()) == "job _outlives(...) ran longer than job_timeout=0.01 s"
    assert _CountsRepr.calls == 0


@pytest.mark.parametrize("annotate", [True, False])
def test_a_bridge_jobs_timeout_message_names_its_arguments_as_annotate_errors_says(
    annotate: bool,
) -> None:
    _CountsRepr.calls = 0
    with LoopExecutor(job_timeout=0.01, annotate_errors=annotate) as exe:
        error = exe.submit(_outlives, _CountsRepr()).exception(timeout=5)
    shown = "Secret('hunter2')" if annotate else "..."
    assert str(error) == f"job _outlives({shown}) ran longer than job_timeout=0.01 s"
    assert (_CountsRepr.calls > 0) is annotate


def _returns_outliving(secret: object) -> Awaitable[None]:
    return _outlives(secret)  # a blocking callable: the loop awaits what it returns


@pytest.mark.parametrize("fn", [_outlives, _returns_outliving], ids=["coroutine", "blocking"])
def test_a_bridge_job_cancelled_by_a_shutdown_calls_no_repr(fn: Any) -> None:
    # A job's awaitable cancelled at the end of a shutdown's grace period built the note
    # for a job_timeout error, and dropped it: a __repr__ per argument on every
    # cancelled job, with no job_timeout set. (The notes stay on by default.)
    _CountsRepr.calls = 0
    exe = LoopExecutor(max_workers=2)
    future = exe.submit(fn, _CountsRepr())
    exe.shutdown(timeout=0.01)  # the grace period ends; the running job is cancelled
    assert future.cancelled()
    assert _CountsRepr.calls == 0


def _returns_it(value: object) -> object:
    return value  # a plain function: nothing to await


async def _pages(value: object) -> AsyncIterator[object]:
    yield value


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


async def test_annotate_errors_false_keeps_arguments_out_of_the_type_errors() -> None:
    # Found by a docs-only tester: the "must return an awaitable" job error showed what
    # the function returned and the function's repr (a partial's bound arguments), and
    # the call-time refusal of an async generator function showed the partial too.
    _CountsRepr.calls = 0
    async with CoroutineExecutor(annotate_errors=False, suppress_task_errors=True) as exe:
        with pytest.raises(TypeError) as submitted:
            await exe.submit(functools.partial(_returns_it, _CountsRepr()))
        mapped = [e async for e in exe.map(_returns_it, [_CountsRepr()], return_exceptions=True)]
        with pytest.raises(TypeError) as refused:
            await exe.submit(functools.partial(_pages, _CountsRepr()))
    with LoopExecutor(annotate_errors=False) as bridge, pytest.raises(TypeError) as bridged:
        bridge.submit(functools.partial(_pages, _CountsRepr()))
    messages = [str(submitted.value), str(mapped[0]), str(refused.value), str(bridged.value)]
    assert messages[0] == (
        "job function must return an awaitable"
        " (got _CountsRepr object from functools.partial(_returns_it, ...))"
    )
    assert messages[1] == (
        "job function must return an awaitable (got _CountsRepr object from _returns_it)"
    )
    assert all("hunter2" not in message for message in messages)
    assert _CountsRepr.calls == 0


@pytest.mark.parametrize("annotate", [True, False])
async def test_a_retried_jobs_type_error_shows_what_it_returned_as_annotate_errors_says(
    loop_kind: str, annotate: bool
) -> None:
    # brk20 finding 5: with a retry policy that retries the TypeError, the attempts after
    # the first showed only the type of what the function returned, as if
    # annotate_errors were False (got dict object from _returns_it).
    _CountsRepr.calls = 0
    retry = Retry(attempts=2, backoff=0, on=TypeError)
    options: dict[str, Any] = {"annotate_errors": annotate, "suppress_task_errors": True}
    async with CoroutineExecutor(retry=retry, **options) as exe:
        task = await exe.submit(_returns_it, _CountsRepr())  # attempt 1 failed: retried
        mapped = [e async for e in exe.map(_returns_it, [_CountsRepr()], return_exceptions=True)]
        await asyncio.wait([task])
    shown = "Secret('hunter2')" if annotate else "_CountsRepr object"
    message = f"job function must return an awaitable (got {shown} from _returns_it)"
    for error in (task.exception(), mapped[0]):
        assert isinstance(error, TypeError) and str(error) == message
    if annotate:
        assert notes(task.exception()) == [
            "coroexecutor: job _returns_it(Secret('hunter2')) failed after 2 attempts"
        ]
    else:
        assert _CountsRepr.calls == 0


async def test_a_repr_that_raises_does_not_replace_the_type_error() -> None:
    async with CoroutineExecutor(suppress_task_errors=True) as exe:
        with pytest.raises(TypeError) as info:
            await exe.submit(_returns_it, _ReprRaises())
    assert str(info.value).startswith("job function must return an awaitable (got <")
