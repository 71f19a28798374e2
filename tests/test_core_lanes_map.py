"""The runner's two ways of settling a success (internals.rst, "The plain lane") under
map(): run_job() settles an in-line job's success itself, settle()'s success path
written out, when nothing waits for a slot, for idleness or for the job, and no key= is
set; else it calls settle(). ``lane`` is "plain lane" (the executor as it is) or
"general path" (the lane switched off: every job settles in settle()); each scenario
runs in both, the outcome must be the same, and the settle() calls counted show which
way the jobs took.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import coroexecutor._runners as runners_module
from coroexecutor import Retry
from tests.test_core_lanes import LANES, make

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(params=LANES)
def lane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which way run_job() settles; the settle() calls it makes are counted."""
    calls: list[object] = []
    settle = runners_module.settle

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return settle(*args, **kwargs)

    monkeypatch.setattr(runners_module, "settle", counted)
    request.node.settle_calls = calls
    return str(request.param)


def settled_by_settle(request: pytest.FixtureRequest) -> int:
    return len(request.node.settle_calls)


async def double(n: int) -> int:
    await asyncio.sleep(0)
    return 2 * n


async def fails_on_three(n: int) -> int:
    await asyncio.sleep(0)
    if n == 3:
        raise ValueError(f"bad {n}")
    return n


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_results_counts_and_the_way_jobs_settle(
    lane: str, request: pytest.FixtureRequest, ordered: bool
) -> None:
    async with make(lane, max_workers=4) as exe:
        mapping = exe.map if ordered else exe.map_unordered
        got = [r async for r in mapping(double, range(20))]
        assert exe.stats.running == 0 and exe.stats.succeeded == 20
    assert (got if ordered else sorted(got)) == [2 * n for n in range(20)]
    if lane == "general path":
        assert settled_by_settle(request) == 20
    else:
        # Only a job that ends while the consumer waits for it (a watcher) settles
        # through settle(): at most one per wait, far fewer than the jobs.
        assert settled_by_settle(request) < 20


async def test_returned_errors_and_their_counts(lane: str) -> None:
    async with make(lane, max_workers=2) as exe:
        got = [r async for r in exe.map(fails_on_three, range(6), return_exceptions=True)]
    assert got[:3] == [0, 1, 2] and got[4:] == [4, 5]
    assert isinstance(got[3], ValueError) and str(got[3]) == "bad 3"
    assert exe.stats.failed == 1 and exe.stats.succeeded == 5 and exe.stats.running == 0


async def test_a_job_error_reaches_the_consumer_with_its_note(lane: str) -> None:
    seen: list[int] = []
    with pytest.raises(ValueError, match="bad 3") as raised:
        async with make(lane, max_workers=2) as exe:
            async for r in exe.map(fails_on_three, range(10)):
                seen.append(r)
    assert seen in ([0, 1], [0, 1, 2])  # job 2 ends as job 3 fails, in one turn
    assert any("3" in note for note in raised.value.__notes__)
    assert exe.stats.failed == 1 and exe.stats.running == 0


async def test_suppressed_errors_leave_the_map_going(lane: str) -> None:
    async with make(lane, max_workers=3, suppress_task_errors=True) as exe:
        got = [r async for r in exe.map(double, range(7))]
        with pytest.raises(ValueError):
            async for _ in exe.map(fails_on_three, range(5)):
                pass
        after = [r async for r in exe.map(double, range(3))]
    assert got == [2 * n for n in range(7)] and after == [0, 2, 4]
    assert exe.stats.failed == 1 and exe.stats.running == 0


async def test_retried_map_jobs_succeed(lane: str) -> None:
    calls: dict[int, int] = {}

    async def flaky(n: int) -> int:
        calls[n] = calls.get(n, 0) + 1
        await asyncio.sleep(0)
        if calls[n] < 3:
            raise OSError(f"attempt {calls[n]} of {n}")
        return n

    retry = Retry(attempts=3, backoff=0, jitter=False)
    async with make(lane, max_workers=2, retry=retry) as exe:
        got = [r async for r in exe.map(flaky, range(5))]
    assert got == list(range(5)) and all(c == 3 for c in calls.values())
    assert exe.stats.retried == 10 and exe.stats.succeeded == 5 and exe.stats.running == 0


async def test_a_producer_waiting_for_a_slot_gets_it_as_a_map_job_ends(lane: str) -> None:
    release = asyncio.Event()

    async def held(n: int) -> int:
        await release.wait()
        return n

    async with make(lane, max_workers=2) as exe:
        results = exe.map(held, range(2))
        first = asyncio.ensure_future(results.__anext__())
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(exe.submit(double, 5))  # no slot: it waits
        await asyncio.sleep(0)
        assert not waiting.done()
        release.set()
        assert await first == 0
        task = await waiting
        assert [r async for r in results] == [1]
    assert task.result() == 10 and exe.stats.succeeded == 3

