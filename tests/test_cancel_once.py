"""The executor cancels each job once (semantics.rst, "Errors in map()"): a job that a map's
error has cancelled is not cancelled again by the executor's bulk cancel (fail-fast, the
block's exit after an error), so a clean-up that awaits runs to its end. Only a wait for
the jobs that is cancelled itself cancels them again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coroexecutor import Adaptive, CoroutineExecutor

pytestmark = pytest.mark.timeout(15)

# The options that make jobs settle from a done callback, one turn after their task ends,
# and none (in-line jobs, which settle in their own last step).
SETTLING = {
    "in-line": {},
    "on_job_done": {"on_job_done": lambda future: None},
    "job_timeout": {"job_timeout": 60},
    "Adaptive": {"max_workers": Adaptive(min=2, max=4)},
}


class Parked:
    """Input 0 fails once input 1 has started; input 1 parks until cancelled, then cleans
    up by waiting for ``release``. ``cancels``: the CancelledErrors input 1 received;
    ``done``: its clean-up ran to its end."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cleaning = asyncio.Event()
        self.release = asyncio.Event()
        self.cancels = 0
        self.done = False

    async def job(self, n: int) -> int:
        if n == 0:
            await self.started.wait()
            raise ValueError("boom")
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancels += 1
            self.cleaning.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancels += 1
                raise
            self.done = True
            raise
        return n

    async def consume(self, exe: CoroutineExecutor, *, ordered: bool) -> None:
        """Consume the map; however that ends (its error, the body interrupted), release the
        clean-up once it has begun, and leave: what the executor does next (fail-fast's
        stop, the block's exit) comes before the clean-up may end."""
        results = (exe.map if ordered else exe.map_unordered)(self.job, range(2))
        try:
            async for _ in results:
                pass
        finally:
            await self.cleaning.wait()
            self.release.set()


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("settling", list(SETTLING))
async def test_fail_fast_does_not_cancel_again_a_job_its_map_cancelled(
    loop_kind: str, ordered: bool, settling: str
) -> None:
    """Regression (brk16 F3): with jobs that settle from a done callback, the map learns of
    its job's error in the job's last step and cancels its other job; fail-fast's stop,
    a turn later, cancelled that job again, interrupting its clean-up."""
    parked = Parked()
    options: dict[str, Any] = {"max_workers": 4, **SETTLING[settling]}
    with pytest.raises(ValueError, match="boom"):
        async with CoroutineExecutor(**options) as exe:
            await parked.consume(exe, ordered=ordered)
    assert parked.done
    assert parked.cancels == 1


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("settling", ["in-line", "on_job_done"])
async def test_the_block_exit_does_not_cancel_again_a_job_its_map_cancelled(
    loop_kind: str, ordered: bool, settling: str
) -> None:
    """Regression (brk16 F3): with suppress_task_errors=True, the map's error leaving the
    block made its exit (an error of the body: cancel every job) cancel again the job the
    map had cancelled, interrupting its clean-up."""
    parked = Parked()
    options: dict[str, Any] = {"max_workers": 4, **SETTLING[settling]}
    with pytest.raises(ValueError, match="boom"):
        async with CoroutineExecutor(suppress_task_errors=True, **options) as exe:
            await parked.consume(exe, ordered=ordered)
    assert parked.done
    assert parked.cancels == 1


async def test_a_cancelled_exit_still_cancels_again(loop_kind: str) -> None:
    """The documented exception: a cancel of the block's exit while it waits for a job's
    clean-up cancels that job again, so a clean-up that never ends cannot hold it."""
    parked = Parked()
    exit_waits = asyncio.Event()

    async def block() -> None:
        async with CoroutineExecutor(max_workers=4, suppress_task_errors=True) as exe:
            try:
                async for _ in exe.map_unordered(parked.job, range(2)):
                    pass
            except ValueError:
                await parked.cleaning.wait()
                exit_waits.set()  # the exit runs next, in this step: it waits for the job

    task = asyncio.create_task(block())
    await exit_waits.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not parked.done
    assert parked.cancels == 2
