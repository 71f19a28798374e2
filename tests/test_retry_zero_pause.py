"""A pause of 0 seconds between two attempts (retry=) on CoroutineExecutor.

docs/semantics.rst, "Retries: retry=": when an attempt fails and the policy returns a
delay, the job's slot goes to the next queued job at once, and after the pause the job
waits for a slot again ahead of every job that has not started yet. A delay of 0 is a
pause too: the job that waited for the slot gets it, as after any other delay. (The job
gave its slot back and lined up again in the same step, ahead of the job the slot had
gone to, and took the slot back: the job waiting for it ran only after the retry.)

No timing: with one slot, the event loop alone decides the order, on every loop kind.
Where a rate limit (max_per_second=) is what makes jobs wait, the order is that of the
start tokens, on virtual time (tests/virtual_clock.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any, Callable

import pytest

from coroexecutor import CoroutineExecutor, Retry

pytestmark = pytest.mark.timeout(15)

POLICIES = {
    "Retry(backoff=0)": lambda: Retry(attempts=2, backoff=0, jitter=False),
    "a policy returning 0": lambda: lambda attempt, exc: 0 if attempt == 1 else None,
}
KEYS: dict[str, dict[str, Any]] = {
    "no key": {},
    "a key each": {"key": lambda i: i, "max_per_key": 1},
}


class Jobs:
    """Job 0 fails its first attempt; every job logs its attempts. Each attempt holds its
    slot across one turn of the loop: under an eager task factory a job that ends in its
    first step frees its slot inside the start that gave it one, and the next queued job
    starts in the same turn, before a retry that paused for 0 seconds (or 1 ns) is back."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.tries = 0

    async def __call__(self, i: int) -> int:
        if i == 0:
            self.tries += 1
            self.order.append(f"0#{self.tries}")
            await asyncio.sleep(0)
            if self.tries == 1:
                raise ConnectionResetError("once")
        else:
            self.order.append(str(i))
            await asyncio.sleep(0)
        return i


async def run(
    how: str, jobs: Jobs, count: int, policy: Any, keying: dict[str, Any]
) -> list[str]:
    async with CoroutineExecutor(max_workers=1, retry=policy, **keying) as exe:
        if how == "submit":
            for i in range(count):
                await exe.submit(jobs, i)
        elif how == "submit_nowait":
            for i in range(count):
                exe.submit_nowait(jobs, i)
        elif how == "map":
            assert [i async for i in exe.map(jobs, range(count))] == list(range(count))
        else:
            results = [i async for i in exe.map_unordered(jobs, range(count))]
            assert sorted(results) == list(range(count))
    return jobs.order


@pytest.mark.parametrize("keying", KEYS.values(), ids=KEYS.keys())
@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
@pytest.mark.parametrize("how", ["submit", "submit_nowait", "map", "map_unordered"])
async def test_a_pause_of_0_seconds_gives_the_slot_to_the_job_waiting_for_it(
    how: str, policy: Callable[[], Any], keying: dict[str, Any], loop_kind: str
) -> None:
    assert await run(how, Jobs(), 2, policy(), keying) == ["0#1", "1", "0#2"]


@pytest.mark.parametrize("keying", KEYS.values(), ids=KEYS.keys())
@pytest.mark.parametrize("how", ["submit", "submit_nowait", "map", "map_unordered"])
async def test_after_a_pause_of_0_seconds_the_job_goes_ahead_of_jobs_not_started(
    how: str, keying: dict[str, Any], loop_kind: str
) -> None:
    policy = Retry(attempts=2, backoff=0, jitter=False)
    assert await run(how, Jobs(), 4, policy, keying) == ["0#1", "1", "0#2", "2", "3"]


@pytest.mark.parametrize("how", ["submit", "submit_nowait", "map", "map_unordered"])
async def test_a_pause_of_0_seconds_keeps_the_room_in_the_jobs_key(
    how: str, loop_kind: str
) -> None:
    # One key for all: the job waiting for the slot finds its key full (the pausing job
    # keeps its room), so the slot goes back to the retry.
    def one_key(i: int) -> Hashable:
        return "host"

    keying = {"key": one_key, "max_per_key": 1}
    policy = Retry(attempts=2, backoff=0, jitter=False)
    assert await run(how, Jobs(), 3, policy, keying) == ["0#1", "0#2", "1", "2"]


class TimedJobs(Jobs):
    """Jobs that also log when each attempt started, on the loop's (virtual) clock."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    async def __call__(self, i: int) -> int:
        self.at.append(asyncio.get_running_loop().time())  # as Jobs logs the attempt
        return await super().__call__(i)


# burst: (the attempts in the order they started, when they started)
AFTER_THE_BURST = {
    1: (["0#1", "0#2", "1", "2", "3"], [0, 1, 2, 3, 4]),
    2: (["0#1", "1", "0#2", "2", "3"], [0, 0, 1, 2, 3]),
}


@pytest.mark.virtual_time
@pytest.mark.parametrize("burst", AFTER_THE_BURST)
@pytest.mark.parametrize("keying", KEYS.values(), ids=KEYS.keys())
@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
@pytest.mark.parametrize("how", ["submit", "submit_nowait", "map", "map_unordered"])
async def test_under_a_rate_limit_a_pause_of_0_seconds_takes_the_next_token_first(
    how: str, policy: Callable[[], Any], keying: dict[str, Any], burst: int
) -> None:
    # max_per_second=1 is what makes jobs wait, not max_workers: after the first burst
    # (job 0's first attempt, and job 1 with burst=2) the tokens have run out, and the
    # other jobs wait for one. The retry, back from its pause of 0 s, takes the next
    # token (at 1 s) ahead of them all, as after any pause; they follow, one a second.
    jobs = TimedJobs()
    options = {"max_workers": 10, "max_per_second": 1, "burst": burst, **keying}
    async with CoroutineExecutor(retry=policy(), **options) as exe:
        if how == "submit":
            for i in range(4):
                await exe.submit(jobs, i)
        elif how == "submit_nowait":
            for i in range(4):
                exe.submit_nowait(jobs, i)
        elif how == "map":
            assert [i async for i in exe.map(jobs, range(4))] == list(range(4))
        else:
            assert sorted([i async for i in exe.map_unordered(jobs, range(4))]) == [0, 1, 2, 3]
    order, times = AFTER_THE_BURST[burst]
    assert jobs.order == order
    assert jobs.at == pytest.approx(times, abs=1e-6)  # a token counts as come a hair early
