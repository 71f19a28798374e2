"""map() and map_unordered(): what a job's error, or its cancellation, does to its map
(semantics.rst, "Errors in map()").
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from coroexecutor import Adaptive, CoroutineExecutor, Retry

SETTLED: dict[str, dict[str, Any]] = {
    "in-line": {},
    "hook": {"on_job_done": lambda job: None},  # settled from a done callback
}


def cancel_on_key_error(attempt: int, exc: BaseException) -> float | None:
    """A retry policy that gives up on a KeyError with CancelledError."""
    if isinstance(exc, KeyError):
        raise asyncio.CancelledError
    return None


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("settled", list(SETTLED))
@pytest.mark.parametrize("how", ["cancelled by someone else", "raises", "retry policy raises"])
async def test_a_map_job_that_ends_cancelled_ends_its_map_at_once(
    loop_kind: str, how: str, settled: str, ordered: bool
) -> None:
    """semantics.rst: "a running job was cancelled by someone else: same as a job raising
    CancelledError", and a map job's error cancels the map's other jobs at once. An
    ordered map did not: a job cancelled, or raising CancelledError (itself or from its
    retry policy), was seen only once the consumer reached it, so the jobs ahead of it
    ran on (found by a docs-only tester). map_unordered() reacted at once; both maps now
    do, and their consumer gets CancelledError from the ``async for``."""
    started = {n: asyncio.Event() for n in range(3)}
    cancelled: list[int] = []
    tasks: dict[int, asyncio.Task[Any]] = {}

    async def all_started() -> None:
        for event in started.values():
            await event.wait()

    async def step(n: int) -> int:
        task = asyncio.current_task()
        assert task is not None
        tasks[n] = task
        started[n].set()
        if n == 1 and how == "raises":
            await all_started()
            raise asyncio.CancelledError
        if n == 1 and how == "retry policy raises":
            await all_started()
            raise KeyError(n)
        try:
            await asyncio.Event().wait()  # jobs 0 and 2 park until cancelled
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        return n

    got: list[int] = []
    options: dict[str, Any] = dict(SETTLED[settled])
    if how == "retry policy raises":
        options["retry"] = cancel_on_key_error
    async with CoroutineExecutor(max_workers=4, suppress_task_errors=True, **options) as exe:

        async def consume() -> None:
            results = exe.map(step, range(3)) if ordered else exe.map_unordered(step, range(3))
            async for value in results:
                got.append(value)

        consumer = asyncio.create_task(consume())
        await all_started()
        if how == "cancelled by someone else":
            tasks[1].cancel()
        # Without the fix the ordered map's consumer waits on job 0, which never ends.
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(consumer, 5)
        assert consumer.cancelled()  # (the CancelledError came out of the async for)
        assert got == []
        # Jobs 0 and 2 were cancelled by the map (job 1 too, from outside, if so).
        assert sorted(cancelled) == ([0, 1, 2] if how == "cancelled by someone else" else [0, 2])
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (0, 0, 3)


LATE_SETTLED: dict[str, dict[str, Any]] = {
    "hook": {"on_job_done": lambda job: None},
    "job_timeout": {"job_timeout": 60},
    "adaptive": {"max_workers": Adaptive(min=1, max=8, initial=4)},
}


async def _iterate_to(results: Any, error: BaseException) -> None:
    """Iterate ``results`` until it raises: the very object ``error``."""
    with pytest.raises(type(error)) as excinfo:
        async for _ in results:
            pass
    assert excinfo.value is error


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("settled", ["in-line", *LATE_SETTLED])
async def test_a_map_starts_nothing_after_a_job_that_fails_in_its_first_step(
    loop_kind: str, settled: str, ordered: bool
) -> None:
    """Under an eager task factory a job that fails in its first step does so inside the
    map's start of it. A job settled from a done callback (an on_job_done hook, a
    job_timeout, an Adaptive limit) told its map a turn later, so the map started its
    next inputs meanwhile: [0, 1, 2, 3] where an in-line job gave [0] (found by a
    docs-only tester). "The map starts no more inputs"."""
    error = ValueError("bad input 0")
    started: list[int] = []

    async def step(n: int) -> int:
        started.append(n)
        if n == 0:
            raise error  # in its first step: inside create_task under an eager factory
        await asyncio.Event().wait()
        return n

    options = {"max_workers": 4, **LATE_SETTLED.get(settled, {})}
    async with CoroutineExecutor(suppress_task_errors=True, **options) as exe:
        results = exe.map(step, range(8)) if ordered else exe.map_unordered(step, range(8))
        await _iterate_to(results, error)
    # Without an eager factory the map starts its window (4 jobs) before job 0 runs,
    # and cancels the other three as job 0 fails.
    assert exe.stats.submitted == (1 if loop_kind == "eager" else 4)
    assert started[0] == 0 and exe.stats.failed == 1


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("annotate", [True, False], ids=["notes", "no_notes"])
@pytest.mark.parametrize("settled", ["in-line", *LATE_SETTLED])
async def test_the_other_jobs_of_the_window_never_run_after_a_job_fails_in_its_first_step(
    loop_kind: str, settled: str, annotate: bool, ordered: bool
) -> None:
    """Without an eager task factory the map starts its window (4 jobs) before job 0 runs.
    In-line, job 0 tells its map of its error in its own step, so the other three are
    cancelled before their first step and never run (asyncio.Task's cancel semantics).
    Settled from a done callback (an on_job_done hook, a job_timeout, an Adaptive limit),
    the map learned of it a turn later: jobs 1 to 3 took their first step first (found
    by a docs-only tester). Now every path tells the map in the failing job's step."""
    error = ValueError("bad input 0")
    started: list[int] = []

    async def step(n: int) -> int:
        started.append(n)
        if n == 0:
            raise error
        await asyncio.Event().wait()
        return n

    options = {"max_workers": 4, "annotate_errors": annotate, **LATE_SETTLED.get(settled, {})}
    async with CoroutineExecutor(suppress_task_errors=True, **options) as exe:
        results = exe.map(step, range(8)) if ordered else exe.map_unordered(step, range(8))
        await _iterate_to(results, error)
    assert started == [0]
    stats = exe.stats
    assert (stats.failed, stats.cancelled) == (1, exe.stats.submitted - 1)


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("settled", list(LATE_SETTLED))
async def test_a_failed_keyed_map_job_does_not_let_the_next_in_its_key_start(
    loop_kind: str, settled: str, ordered: bool
) -> None:
    """key= with max_per_key=1: job 1 waits in the key's line behind job 0, which fails.
    Settled from a done callback, job 0 gave its key's room to job 1 before its map
    learned of the failure; under an eager task factory job 1 then ran its first step
    before the map cancelled it (found by a docs-only tester). The map learns first."""
    error = ValueError("job 0 failed")
    started: list[int] = []

    async def step(n: int) -> int:
        started.append(n)
        await asyncio.sleep(0)
        if n == 0:
            raise error
        return n

    options = {"max_workers": 4, **LATE_SETTLED[settled]}
    async with CoroutineExecutor(
        suppress_task_errors=True, key=lambda n: "k", max_per_key=1, **options
    ) as exe:
        results = exe.map(step, range(3)) if ordered else exe.map_unordered(step, range(3))
        await _iterate_to(results, error)
    assert started == [0]
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (0, 1, 2)


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("settled", list(SETTLED))
@pytest.mark.parametrize("consumer", ["another task", "no block", "the body"])
async def test_under_fail_fast_a_map_yields_the_results_ready_before_its_error(
    loop_kind: str, consumer: str, settled: str, ordered: bool
) -> None:
    """semantics.rst, "Errors in map()": results that were ready before the error (for
    map(), those of earlier inputs) are still yielded, then the error comes out. Under
    fail-fast the executor closed the map as it stopped, so a consumer in another task,
    or with no block, lost them: [0] then the error, where suppress_task_errors=True gave
    [0, 1] (found by a docs-only tester). A map its own job's error ended keeps them, even
    past the block's exit; a consumer in the block's body is interrupted all the same."""
    error = ValueError("job 2 failed")
    gates = {1: asyncio.Event(), 2: asyncio.Event()}
    one_done, three_cancelled = asyncio.Event(), asyncio.Event()
    busy, resume = asyncio.Event(), asyncio.Event()

    async def step(n: int) -> int:
        if n == 3:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                three_cancelled.set()
                raise
        if n in gates:
            await gates[n].wait()
        if n == 2:
            raise error
        if n == 1:
            one_done.set()
        return n

    got: list[object] = []

    async def consume(exe: CoroutineExecutor) -> None:
        results = exe.map(step, range(4)) if ordered else exe.map_unordered(step, range(4))
        async for value in results:
            got.append(value)
            if value == 0:
                busy.set()
                await resume.wait()  # a slow consumer: job 1 finishes, then job 2 fails

    async def fail_while_busy() -> None:
        await busy.wait()
        gates[1].set()
        await one_done.wait()  # job 1 is done (its result ready) before job 2 fails
        gates[2].set()
        await three_cancelled.wait()  # job 2 has failed

    options = {"max_workers": 4, **SETTLED[settled]}
    if consumer == "no block":
        exe = CoroutineExecutor(**options)
        consuming = asyncio.create_task(consume(exe))
        await fail_while_busy()
        resume.set()
        with pytest.raises(ValueError) as consumer_error:
            await asyncio.wait_for(consuming, 5)
        with pytest.raises(ValueError) as block_error:
            await exe.shutdown()
    elif consumer == "another task":
        with pytest.raises(ValueError) as block_error:
            async with CoroutineExecutor(**options) as exe:
                consuming = asyncio.create_task(consume(exe))
                await fail_while_busy()  # interrupted as job 2 fails
        resume.set()  # the block has exited (and closed its maps) before the consumer resumes
        with pytest.raises(ValueError) as consumer_error:
            await asyncio.wait_for(consuming, 5)
    else:
        failing = asyncio.create_task(fail_while_busy())
        with pytest.raises(ValueError) as block_error:
            async with CoroutineExecutor(**options) as exe:
                try:
                    await consume(exe)
                except asyncio.CancelledError:
                    got.append("interrupted")
                    raise
        await asyncio.wait_for(failing, 5)
    assert block_error.value is error
    if consumer == "the body":
        assert got == [0, "interrupted"]
    else:
        assert consumer_error.value is error
        assert got == [0, 1]
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (2, 1, 1)


@pytest.mark.timeout(15)
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
def test_a_keyboard_interrupt_in_a_map_job_is_not_reported_as_never_retrieved(
    ordered: bool,
) -> None:
    """Regression: with no block, a map job's KeyboardInterrupt left asyncio.run() (asyncio
    raises it out of the loop) and was reported at exit all the same, as "CoroutineExecutor
    job exception was never retrieved" (found by a docs-only tester)."""
    reports: list[dict[str, Any]] = []

    async def job(i: int) -> int:
        if i == 1:
            raise KeyboardInterrupt
        return i

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))
        exe = CoroutineExecutor(max_workers=2)
        made = exe.map if ordered else exe.map_unordered
        async for _ in made(job, range(3)):
            pass

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    gc.collect()  # the executor, held by the error's traceback until now
    assert interrupted
    assert [r["message"] for r in reports] == []


async def _echo(n: int) -> int:
    return n


def _raises_for_one(n: int) -> Any:
    """A plain function that returns a job's awaitable, but raises for input 1."""
    if n == 1:
        raise ValueError("no awaitable for 1")
    return _echo(n)


async def _takes_two(a: int, b: int) -> int:  # map()ped over one input: a TypeError
    return a + b


CALLS_THAT_RAISE: dict[str, tuple[Any, dict[str, Any]]] = {
    "raises, started directly": (_raises_for_one, {"max_workers": 4}),
    "wrong arguments, started directly": (_takes_two, {"max_workers": 4}),
    "raises, started from its key's line": (
        _raises_for_one, {"max_workers": 1, "key": lambda n: "k", "max_per_key": 1}
    ),
    "raises, started from the line (buffersize above max_workers)": (
        _raises_for_one, {"max_workers": 1, "buffersize": 4}
    ),
}


@pytest.mark.parametrize("case", list(CALLS_THAT_RAISE))
async def test_an_input_whose_call_raises_is_a_job_error_however_it_starts(
    loop_kind: str, case: str
) -> None:
    """fn(*item) raising before it returns an awaitable (a plain function that raises, a
    coroutine function called with the wrong arguments) is that input's job error, as
    semantics.rst says of a job whose call happens as it starts: counted, noted with its
    input, ending the map (under fail-fast, the block too), and yielded in its place with
    return_exceptions=True. Started from a line it was so; started directly it came
    straight out of the map instead, uncounted and with no note, return_exceptions=True
    or not (found by a docs-only tester)."""
    fn, options = CALLS_THAT_RAISE[case]
    options = dict(options)
    buffersize = options.pop("buffersize", None)
    index = 1 if fn is _raises_for_one else 0
    async with CoroutineExecutor(suppress_task_errors=True, **options) as exe:
        with pytest.raises((ValueError, TypeError)) as excinfo:
            async for _ in exe.map(fn, range(3), buffersize=buffersize):
                pass
    error = excinfo.value
    assert exe.stats.failed == 1
    assert f"(map input #{index})" in error.__notes__[-1]

    errors: list[str] = []
    async with CoroutineExecutor(**options) as exe:  # no fail-fast: errors are results
        async for r in exe.map(fn, range(3), buffersize=buffersize, return_exceptions=True):
            errors.append(type(r).__name__)
    assert errors[index] == type(error).__name__
    assert exe.stats.failed == errors.count(type(error).__name__)

    with pytest.raises(type(error)) as excinfo:  # fail-fast: the block raises it
        async with CoroutineExecutor(**options) as exe:
            async for _ in exe.map(fn, range(3), buffersize=buffersize):
                pass
    assert exe.stats.failed == 1


class _RefusedAtFirst:
    """A plain function that returns a job's awaitable, but raises ConnectionError
    (before it returns one) on its first ``failures`` calls for input 1."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = [0, 0, 0]

    def __call__(self, n: int) -> Any:
        self.calls[n] += 1
        if n == 1 and self.calls[n] <= self.failures:
            raise ConnectionError(f"refused, call {self.calls[n]}")
        return _echo(n)


RETRIED_STARTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # (the executor's options, the map's)
    "started directly": ({"max_workers": 4}, {}),
    "started from its key's line": (
        {"max_workers": 1, "key": lambda n: "k", "max_per_key": 1}, {}
    ),
    "started from the line (buffersize above max_workers)": (
        {"max_workers": 1}, {"buffersize": 4}
    ),
    "map_unordered": ({"max_workers": 4}, {"ordered": False}),
    "the map's own retry=": ({"max_workers": 4, "retry": None}, {"retry": "own"}),
}


@pytest.mark.timeout(15)
@pytest.mark.parametrize("settled", list(SETTLED))
@pytest.mark.parametrize("case", list(RETRIED_STARTS))
async def test_an_input_whose_call_raises_is_retried_as_a_failed_attempt(
    loop_kind: str, case: str, settled: str
) -> None:
    """Under retry=, fn(*item) raising before it returns an awaitable is the job's first
    attempt failing, as for an ``async def`` raising: the policy retries it (the retry
    counted, the hook called once), and gives up with the last attempt's error, noted
    "failed after 3 attempts". It ran once and ended the map, however its job started,
    while the async def was retried (found by a docs-only tester)."""
    options, map_options = RETRIED_STARTS[case]
    map_options = dict(map_options)
    policy = Retry(attempts=3, backoff=0)
    if map_options.get("retry") == "own":
        map_options["retry"] = policy
    else:
        options = {"retry": policy, **options}
    ordered = map_options.pop("ordered", True)
    hooked: list[asyncio.Future[Any]] = []
    hook = {"on_job_done": hooked.append} if settled == "hook" else {}

    fn = _RefusedAtFirst(failures=2)
    async with CoroutineExecutor(**options, **hook) as exe:
        made = exe.map if ordered else exe.map_unordered
        results = [r async for r in made(fn, range(3), **map_options)]
    assert sorted(results) == [0, 1, 2]
    assert fn.calls == [1, 3, 1]
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.retried) == (3, 0, 2)
    if hook:
        assert len(hooked) == 3  # once per job, not per attempt

    fn = _RefusedAtFirst(failures=5)
    with pytest.raises(ConnectionError) as excinfo:  # fail-fast: the block raises it
        async with CoroutineExecutor(**options) as exe:
            made = exe.map if ordered else exe.map_unordered
            async for _ in made(fn, range(3), **map_options):
                pass
    assert str(excinfo.value) == "refused, call 3"  # the last attempt's
    assert excinfo.value.__notes__[-1].endswith("failed after 3 attempts (map input #1)")
    assert fn.calls[1] == 3
    assert (exe.stats.failed, exe.stats.retried) == (1, 2)


@pytest.mark.timeout(15)
@pytest.mark.parametrize("case", ["wrong arguments", "returns no awaitable"])
async def test_a_call_of_the_wrong_kind_is_retried_only_if_the_policy_says_so(
    loop_kind: str, case: str
) -> None:
    """The TypeError of a call with the wrong arguments, or of one that returns no
    awaitable, goes to the policy as any attempt's error: Retry's default ``on`` does not
    name TypeError, so it is the input's job error at once, as without retry=; a policy
    that retries it gets it as attempt 1's error."""
    fn: Any = _takes_two if case == "wrong arguments" else (lambda n: n)
    async with CoroutineExecutor(retry=Retry(), suppress_task_errors=True) as exe:
        with pytest.raises(TypeError):
            async for _ in exe.map(fn, range(1)):
                pass
    assert (exe.stats.failed, exe.stats.retried) == (1, 0)

    asked: list[tuple[int, str]] = []

    def every_error(attempt: int, exc: BaseException) -> float | None:
        asked.append((attempt, type(exc).__name__))
        return 0 if attempt < 2 else None

    async with CoroutineExecutor(retry=every_error, suppress_task_errors=True) as exe:
        with pytest.raises(TypeError):
            async for _ in exe.map(fn, range(1)):
                pass
    assert asked == [(1, "TypeError"), (2, "TypeError")]
    assert (exe.stats.failed, exe.stats.retried) == (1, 1)


#
# A return_exceptions map that another job's error stopped
#


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("failing", ["submit", "another map"])
@pytest.mark.parametrize("consumer", ["waiting in another task", "resumed after the block"])
async def test_a_return_exceptions_map_that_another_jobs_error_stopped_raises_that_error(
    loop_kind: str, ordered: bool, failing: str, consumer: str
) -> None:
    """semantics.rst, "Leaving a map() early": when the executor stopped because a job
    failed (fail-fast: a ``submit()``, or a job of another map without
    ``return_exceptions``), a consumer of a map it closed gets that job's error, the
    object the block raises, with the chain its job left it. A ``return_exceptions`` map's
    consumer got RuntimeError("cannot schedule new futures after shutdown") instead, both
    waiting in another task and resuming after the block (found by a docs-only tester).
    Its own job's error is still a value."""
    error = ZeroDivisionError("the job that stopped the executor")
    own = KeyError("the map's own job's error: a result")
    parked = asyncio.Event()  # the map's job 1 runs (until the executor cancels it)
    got_first = asyncio.Event()

    async def step(n: int) -> int:
        if n == 0:
            raise own
        parked.set()
        await asyncio.Event().wait()
        return n

    async def bad(n: int = 0) -> None:
        raise error

    got: list[object] = []

    async def consume(results: Any) -> None:
        try:
            raise OSError("the consumer's own handled error")
        except OSError:  # a bare raise here would chain the job's error to this one
            async for value in results:
                got.append(value)
                got_first.set()

    with pytest.raises(ZeroDivisionError) as block_error:
        async with CoroutineExecutor() as exe:
            made = exe.map if ordered else exe.map_unordered
            results = made(step, [0, 1], return_exceptions=True)
            if consumer == "waiting in another task":
                task = asyncio.ensure_future(consume(results))
                await got_first.wait()
            else:
                got.append(await results.__anext__())
            await parked.wait()
            if failing == "submit":
                await exe.submit(bad)
                await asyncio.Event().wait()  # interrupted by fail-fast
            else:
                async for _ in exe.map(bad, [0]):
                    pass
    assert block_error.value is error
    assert got == [own]
    with pytest.raises(ZeroDivisionError) as consumer_error:
        if consumer == "waiting in another task":
            await task
        else:
            await consume(results)
    assert consumer_error.value is error
    assert error.__context__ is None and error.__cause__ is None  # as its job left it
    assert got == [own]
