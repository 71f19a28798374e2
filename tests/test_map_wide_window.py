"""A map whose window is wider than the slots (``buffersize`` above ``max_workers``):
the inputs of the window that find every slot taken wait in line for one as queued jobs
and start as slots free, while the consumer waits for a result (found by a docs-only
tester: an ordered map left the freed slots idle behind a slow head until its consumer
moved on, and so did an unordered map whose consumer did not ask for the next result).

Every test here has the same shape: with ``max_workers=4`` and ``buffersize=16``, input 0
(the head) runs until the test lets it go, inputs 1 to 3 end after one step, and the
inputs after them run until let go too. Four jobs running at once, the head among them,
means the slots of 1 to 3 went to the inputs behind them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, Retry

pytestmark = pytest.mark.timeout(30)

ORDERED = pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
WORKERS = 4
INPUTS = 16
QUICK = (1, 2, 3)


class Window:
    """The jobs of the map. ``full`` is set once ``WORKERS`` jobs run at once (the head,
    still running, and three of the inputs behind 1 to 3). ``release`` lets every parked
    job end; the input ``failing`` waits for ``boom`` instead and raises; the inputs in
    ``flaky`` fail their first attempt with OSError (after a step), then succeed."""

    def __init__(self, failing: int | None = None, flaky: tuple[int, ...] = ()) -> None:
        self.failing = failing
        self.flaky = flaky
        self.started: list[int] = []
        self.attempts = 0
        self.running = 0
        self.peak_running = 0
        self.full = asyncio.Event()
        self.release = asyncio.Event()
        self.boom = asyncio.Event()

    async def __call__(self, n: int) -> int:
        self.attempts += 1
        first = n not in self.started
        if first:
            self.started.append(n)
        if n in QUICK or n in self.flaky:
            await asyncio.sleep(0)  # one step: its slot frees while the head runs on
            if first and n in self.flaky:
                raise OSError(f"input {n}, first attempt")
            return n
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        if self.running == WORKERS:
            self.full.set()
        try:
            await (self.boom if n == self.failing else self.release).wait()
        finally:
            self.running -= 1
        if n == self.failing:
            raise ValueError(f"input {n}")
        return n


def mapper(exe: CoroutineExecutor, ordered: bool) -> Any:
    return exe.map if ordered else exe.map_unordered


async def _every_slot_busy(jobs: Window) -> None:
    # (A bound, not a timing: before the fix the slots stayed idle for good.)
    await asyncio.wait_for(jobs.full.wait(), 5)


async def _collect(results: Any) -> list[Any]:
    return [value async for value in results]


#
# Freed slots are filled from the window
#


SETTINGS = {
    "plain": {},
    "on_job_done": {},  # jobs settled from a done callback (the hook is set below)
    "max_per_second": {"max_per_second": 1000.0, "burst": WORKERS},
    "key=": {"key": lambda n: n, "max_per_key": 1},  # (queued in its key's line already)
}


@ORDERED
@pytest.mark.parametrize("setting", list(SETTINGS))
async def test_slots_freed_behind_a_slow_head_are_filled_from_the_window(
    loop_kind: str, ordered: bool, setting: str
) -> None:
    jobs = Window()
    hooked: list[asyncio.Future[Any]] = []
    options: dict[str, Any] = dict(SETTINGS[setting])
    if setting == "on_job_done":
        options["on_job_done"] = hooked.append
    async with CoroutineExecutor(max_workers=WORKERS, **options) as exe:
        results = mapper(exe, ordered)(jobs, range(INPUTS), buffersize=INPUTS)
        # One result asked for: map() waits for the head; map_unordered() gets input 1
        # and is not asked again. Either way the consumer does not move on.
        consumer = asyncio.ensure_future(results.__anext__())
        await _every_slot_busy(jobs)
        assert sorted(jobs.started) == list(range(WORKERS + len(QUICK)))
        stats = exe.stats
        # The rest of the window waits in line, counted as queued.
        assert (stats.running, stats.queued, stats.succeeded) == (WORKERS, INPUTS - 7, 3)
        jobs.release.set()
        values = [await consumer, *await _collect(results)]
    assert (values if ordered else sorted(values)) == list(range(INPUTS))
    assert jobs.peak_running == WORKERS
    stats = exe.stats
    assert (stats.succeeded, stats.cancelled, stats.queued, stats.running) == (INPUTS, 0, 0, 0)
    if setting == "on_job_done":  # once per job, queued or not, with its result
        assert sorted(future.result() for future in hooked) == list(range(INPUTS))


@ORDERED
async def test_errors_of_inputs_waiting_in_line_are_results_with_return_exceptions(
    loop_kind: str, ordered: bool
) -> None:
    # Input 4 starts from the line and fails: its error is yielded in its place, and
    # nothing else is cancelled (no fail-fast for a result).
    jobs = Window(failing=4)
    async with CoroutineExecutor(max_workers=WORKERS) as exe:
        results = mapper(exe, ordered)(
            jobs, range(INPUTS), buffersize=INPUTS, return_exceptions=True
        )
        consumer = asyncio.ensure_future(results.__anext__())
        await _every_slot_busy(jobs)
        jobs.boom.set()
        jobs.release.set()
        values = [await consumer, *await _collect(results)]
    errors = [value for value in values if isinstance(value, BaseException)]
    assert len(errors) == 1 and str(errors[0]) == "input 4"
    if ordered:
        assert values.index(errors[0]) == 4
    assert sorted(value for value in values if value not in errors) == [
        n for n in range(INPUTS) if n != 4
    ]
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (INPUTS - 1, 1, 0)


#
# Leaving the map, or the executor stopping, while inputs wait in line
#


@ORDERED
@pytest.mark.parametrize("how", ["aclose", "fail-fast", "the map's own error"])
async def test_inputs_waiting_in_line_never_start_once_the_map_ends(
    loop_kind: str, ordered: bool, how: str
) -> None:
    # Input 4, running in a slot input 1 freed, fails while 9 inputs wait in line (or the
    # map is closed then): they are dropped and counted as cancelled, as are the running
    # jobs (the head, 5 and 6), and nothing starts afterwards.
    jobs = Window(failing=None if how == "aclose" else 4)
    consumer: asyncio.Future[Any] | None = None
    error: BaseException | None = None
    try:
        async with CoroutineExecutor(
            max_workers=WORKERS, suppress_task_errors=how == "the map's own error"
        ) as exe:
            results = mapper(exe, ordered)(jobs, range(INPUTS), buffersize=INPUTS)
            consumer = asyncio.ensure_future(results.__anext__())
            await _every_slot_busy(jobs)
            assert exe.stats.queued == INPUTS - 7
            if how == "aclose":
                await results.aclose()
            elif how == "fail-fast":
                jobs.boom.set()
                await asyncio.Event().wait()  # interrupted as input 4 fails
            else:  # the map cancels its own jobs (the executor goes on)
                jobs.boom.set()
                with pytest.raises(ValueError, match="input 4"):
                    await consumer if ordered else await _collect(results)
            jobs.release.set()  # nothing is left to let go
    except ValueError as exc:
        error = exc
    assert (error is not None) == (how == "fail-fast")
    assert consumer is not None
    outcome = (await asyncio.gather(consumer, return_exceptions=True))[0]
    if not ordered:
        assert outcome == 1
    elif how == "aclose":
        assert isinstance(outcome, StopAsyncIteration)
    else:
        assert isinstance(outcome, ValueError)
    assert sorted(jobs.started) == list(range(7))
    stats = exe.stats
    failed = 0 if how == "aclose" else 1
    assert (stats.succeeded, stats.failed, stats.cancelled) == (3, failed, INPUTS - 3 - failed)
    assert (stats.queued, stats.running) == (0, 0)


@ORDERED
@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "key="])
async def test_an_input_whose_call_raises_as_it_leaves_the_line_ends_the_map_at_once(
    loop_kind: str, ordered: bool, keyed: bool
) -> None:
    # fn(4) raises before it returns a coroutine, as input 4 gets the slot input 1 freed:
    # that is a job error of the map's (noted with its input's position), so the map
    # ends at once, cancelling the head and dropping the inputs in line, even though the
    # executor goes on (before: the consumer waited for the head for ever).
    jobs = Window()

    def job(n: int) -> Any:
        if n == 4:
            raise ValueError(f"input {n}")
        return jobs(n)

    per_key: dict[str, Any] = {"key": lambda n: n, "max_per_key": 1} if keyed else {}
    async with CoroutineExecutor(max_workers=WORKERS, suppress_task_errors=True, **per_key) as exe:
        results = mapper(exe, ordered)(job, range(INPUTS), buffersize=INPUTS)
        received: list[int] = []
        with pytest.raises(ValueError, match="input 4") as raised:
            async for n in results:
                received.append(n)
    # (map_unordered() yields what finished before fn(4) was called: its error may come
    # first, as input 4 got its slot inside input 1's last step.)
    assert received == [] if ordered else set(received) <= {1, 2, 3}
    assert raised.value.__notes__ == ["coroexecutor: job job(4) failed (map input #4)"]
    assert sorted(jobs.started) == [0, 1, 2, 3]
    stats = exe.stats
    # Inputs 2 and 3 end in the turn input 1 does: cancelled with the rest, or not yet,
    # as the loop kind has input 4 leave the line in input 1's last step or a turn later.
    assert 1 <= stats.succeeded <= 3 and stats.failed == 1
    assert stats.succeeded + stats.cancelled == INPUTS - 1
    assert (stats.queued, stats.running) == (0, 0)


#
# Retries and the start rate
#


@ORDERED
async def test_inputs_waiting_in_line_keep_the_maps_retry_policy(
    loop_kind: str, ordered: bool
) -> None:
    # Inputs 10 and 11 start from the line, fail their first attempt and are retried
    # under the map's own policy (the executor has none).
    jobs = Window(flaky=(10, 11))
    retry = Retry(attempts=2, backoff=0, jitter=False)
    async with CoroutineExecutor(max_workers=WORKERS) as exe:
        results = mapper(exe, ordered)(jobs, range(INPUTS), buffersize=INPUTS, retry=retry)
        consumer = asyncio.ensure_future(results.__anext__())
        await _every_slot_busy(jobs)
        assert exe.stats.queued == INPUTS - 7
        jobs.release.set()
        values = [await consumer, *await _collect(results)]
    assert (values if ordered else sorted(values)) == list(range(INPUTS))
    assert jobs.attempts == INPUTS + 2
    assert jobs.peak_running == WORKERS
    stats = exe.stats
    assert (stats.succeeded, stats.retried, stats.failed, stats.queued) == (INPUTS, 2, 0, 0)


@pytest.mark.virtual_time
@ORDERED
async def test_inputs_waiting_in_line_start_at_the_start_rate(ordered: bool) -> None:
    # Two starts a second, one at a time: the head runs until every other input has
    # started, each of them for a second. They start from the line half a second apart.
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    starts: dict[int, float] = {}
    all_started = asyncio.Event()

    async def job(n: int) -> int:
        starts[n] = loop.time() - t0
        if len(starts) == 8:
            all_started.set()
        await (all_started.wait() if n == 0 else asyncio.sleep(1))
        return n

    async with CoroutineExecutor(max_workers=2, max_per_second=2.0, burst=1) as exe:
        results = mapper(exe, ordered)(job, range(8), buffersize=8)
        # (Virtual seconds: before the fix the map waited for its head for good.)
        values = await asyncio.wait_for(_collect(results), 100)
    assert (values if ordered else sorted(values)) == list(range(8))
    expected = [0.0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5]  # each as a slot and a token come
    assert [starts[n] for n in range(8)] == pytest.approx(expected, abs=1e-6)
    stats = exe.stats
    assert (stats.succeeded, stats.queued, stats.running) == (8, 0, 0)
