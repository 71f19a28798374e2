"""A submit() still waiting when the executor stops accepting jobs is turned away
(semantics.rst, "Shutting down"): shutdown() in any mode, and the block's exit for a
submit() made outside the executor's jobs, make it raise the RuntimeError of a shut down
executor, as a map waiting then does, and it starts nothing. Jobs already accepted
(submit_nowait()'s queued jobs) still run, and a job's own submit() waiting at the
block's exit is still accepted: jobs may submit jobs.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor

pytestmark = pytest.mark.timeout(15)

REFUSED = re.escape("cannot schedule new futures after shutdown")


class Jobs:
    """A job that parks until ``release`` is set, and a record of the jobs that ran."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.ran: list[str] = []

    async def job(self, name: str) -> str:
        self.ran.append(name)
        await self.release.wait()
        return name


async def _waiting(exe: CoroutineExecutor, jobs: Jobs, name: str) -> asyncio.Task[Any]:
    """A task whose submit() waits in line: one turn takes it to its wait."""
    task = asyncio.ensure_future(exe.submit(jobs.job, name))
    await asyncio.sleep(0)  # its first step runs before ours resumes (FIFO ready queue)
    assert not task.done()
    return task


@pytest.mark.parametrize("how", ["wait", "grace", "no wait"])
async def test_shutdown_turns_away_a_submit_waiting_for_a_slot(loop_kind: str, how: str) -> None:
    """Regression (brk16 F5): shutdown(wait=True) accepted and ran a submit() already
    waiting for a slot as it began (with timeout= or wait=False it was refused)."""
    jobs = Jobs()
    exe = CoroutineExecutor(max_workers=1)
    await exe.submit(jobs.job, "first")  # holds the one slot
    queued = exe.submit_nowait(jobs.job, "queued")  # accepted: runs all the same
    waiting = await _waiting(exe, jobs, "waiting")
    if how == "no wait":
        await exe.shutdown(wait=False)
        await exe.shutdown()  # waits for the cancelled jobs
    else:
        stopping = asyncio.ensure_future(exe.shutdown(timeout=60 if how == "grace" else None))
        await asyncio.sleep(0)  # shutdown() has begun: it waits for the jobs
        jobs.release.set()
        await stopping
        assert await queued == "queued"
    with pytest.raises(RuntimeError, match=REFUSED):
        await waiting
    assert "waiting" not in jobs.ran
    assert exe.stats.submitted == 2  # the waiting submit() was never accepted


async def test_shutdown_turns_away_a_submit_waiting_for_its_keys_room(loop_kind: str) -> None:
    jobs = Jobs()
    exe = CoroutineExecutor(max_workers=4, key=lambda name: name[0], max_per_key=1)
    await exe.submit(jobs.job, "a1")  # holds key a's room
    waiting = await _waiting(exe, jobs, "a2")
    stopping = asyncio.ensure_future(exe.shutdown())
    await asyncio.sleep(0)  # shutdown() has begun: it waits for the jobs
    jobs.release.set()
    await stopping
    with pytest.raises(RuntimeError, match=REFUSED):
        await waiting
    assert jobs.ran == ["a1"]
    assert exe.stats.active_keys == 0


async def test_shutdown_turns_away_a_submit_waiting_for_a_start_token(loop_kind: str) -> None:
    """A rate-limited submit() waits for a token that is far off: shutdown() must neither
    start it nor wait for that token."""
    jobs = Jobs()
    jobs.release.set()
    exe = CoroutineExecutor(max_workers=4, max_per_second=0.001)  # a token per 1,000 s
    await exe.submit(jobs.job, "first")  # takes the one token of the burst
    waiting = await _waiting(exe, jobs, "waiting")
    stopping = asyncio.ensure_future(exe.shutdown())
    # The token is 1,000 s away: if the wait were kept, this fails instead of hanging.
    done, _ = await asyncio.wait([waiting, stopping], timeout=10)
    assert done == {waiting, stopping}
    with pytest.raises(RuntimeError, match=REFUSED):
        waiting.result()
    assert jobs.ran == ["first"]


async def test_the_block_exit_turns_away_a_submit_waiting_outside_its_jobs(
    loop_kind: str,
) -> None:
    """Regression (brk16 F5): a submit() waiting in another task as the block exits ran
    its job after the body had ended, while a map waiting there was refused. A job's own
    submit() waiting then is accepted, as jobs may submit jobs while the block exits."""
    jobs = Jobs()

    async def parent() -> str:
        child = await exe.submit(jobs.job, "child of a job")  # waits for a slot
        return await child

    async with CoroutineExecutor(max_workers=2) as exe:
        await exe.submit(jobs.job, "first")
        await exe.submit(parent)  # holds the second slot, then waits for one
        await asyncio.sleep(0)  # the parent's first step: its submit() waits
        waiting = await _waiting(exe, jobs, "outside")
        asyncio.get_running_loop().call_soon(jobs.release.set)  # once the exit has begun
    with pytest.raises(RuntimeError, match=REFUSED):
        await waiting
    assert sorted(jobs.ran) == ["child of a job", "first"]


async def test_a_keyed_submit_granted_as_shutdown_begins_passes_its_room_on(
    loop_kind: str,
) -> None:
    """A keyed submit() granted its slot and its key's room just before shutdown() began
    is turned away as it resumes: the room and the slot it gives back go to the job
    queued behind it in its key's line, which was accepted and runs (the backlog must be
    woken for the keyed line too, not only for the plain one)."""
    jobs = Jobs()
    exe = CoroutineExecutor(max_workers=1, key=lambda name: name[0], max_per_key=1)
    await exe.submit(jobs.job, "b1")  # holds the one slot and b's room
    waiting = await _waiting(exe, jobs, "b2")
    queued = exe.submit_nowait(jobs.job, "b3")  # accepted: behind b2 in b's line
    jobs.release.set()  # b1 ends next turn and grants b2 its slot in that step ...
    stopping = asyncio.ensure_future(exe.shutdown())  # ... and shutdown() begins after it
    # If b3 were left in line, shutdown() would wait for ever: fail instead of hanging.
    done, _ = await asyncio.wait([stopping], timeout=10)
    assert done == {stopping}
    with pytest.raises(RuntimeError, match=REFUSED):
        await waiting
    assert await queued == "b3"
    assert jobs.ran == ["b1", "b3"]
