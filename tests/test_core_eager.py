"""A long backlog of jobs that complete in-line, under every loop kind.

Under an eager task factory a job's first step runs inside create_task. A job that
completed in-line used to start the backlog in its own last step, so the next job's
first step ran nested inside it, completed in-line, started the next one, and so on:
the stack grew with the backlog until a RecursionError struck half-way through the
bookkeeping, leaked a slot, and the block waited for ever.
"""

from __future__ import annotations

import asyncio

import pytest

from coroexecutor import CoroutineExecutor, _settle

N = 2000  # deeper than the recursion limit (1000) if starts nest
pytestmark = pytest.mark.timeout(60)


async def quick(i: int) -> int:
    return i


async def failing(i: int) -> int:
    raise ValueError(i)


async def test_a_long_submit_nowait_backlog_behind_a_parked_job_all_runs(loop_kind: str) -> None:
    release = asyncio.Event()

    async def parked() -> None:
        await release.wait()

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(parked)
        futures = [exe.submit_nowait(quick, i) for i in range(N)]
        release.set()
        assert await asyncio.gather(*futures) == list(range(N))
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.queued, stats.running) == (N + 1, 0, 0, 0)


async def test_a_long_backlog_of_failing_jobs_all_settles_under_suppress(loop_kind: str) -> None:
    release = asyncio.Event()

    async def parked() -> None:
        await release.wait()

    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
        await exe.submit(parked)
        futures = [exe.submit_nowait(failing, i) for i in range(N)]
        release.set()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(e) for e in outcomes] == [ValueError] * N
    assert [e.args[0] for e in outcomes] == list(range(N))  # type: ignore[union-attr]
    assert (exe.stats.succeeded, exe.stats.failed, exe.stats.running) == (1, N, 0)


async def test_map_over_a_long_input_with_one_slot(loop_kind: str) -> None:
    async with CoroutineExecutor(max_workers=1) as exe:
        assert [r async for r in exe.map(quick, range(N))] == list(range(N))


async def test_map_unordered_over_a_long_input_with_one_slot(loop_kind: str) -> None:
    async with CoroutineExecutor(max_workers=1) as exe:
        assert sorted([r async for r in exe.map_unordered(quick, range(N))]) == list(range(N))


async def test_many_submitters_waiting_for_one_slot_all_run(loop_kind: str) -> None:
    release = asyncio.Event()

    async def parked() -> None:
        await release.wait()

    async def submit_one(exe: CoroutineExecutor, i: int) -> int:
        return await (await exe.submit(quick, i))

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(parked)
        submitters = [asyncio.ensure_future(submit_one(exe, i)) for i in range(N)]
        release.set()
        assert await asyncio.gather(*submitters) == list(range(N))
        # And one submitter in a loop.
        for i in range(N):
            assert await (await exe.submit(quick, i)) == i


@pytest.mark.parametrize(
    ("name", "value"), [("max_workers", 5), ("max_per_second", 50.0), ("burst", 3)]
)
async def test_a_setter_called_from_another_thread_raises_and_changes_nothing(
    loop_kind: str, name: str, value: object
) -> None:
    release, started = asyncio.Event(), asyncio.Event()

    async def parked() -> None:
        started.set()
        await release.wait()

    errors: list[BaseException] = []

    def set_it(exe: CoroutineExecutor) -> None:
        try:
            setattr(exe, name, value)
        except BaseException as exc:  # recorded for the assert below
            errors.append(exc)

    async with CoroutineExecutor(max_workers=2, max_per_second=100.0, burst=2) as exe:
        await exe.submit(parked)
        await started.wait()
        before = getattr(exe, name)
        await asyncio.wait_for(asyncio.to_thread(set_it, exe), 5)
        assert [type(e) for e in errors] == [RuntimeError]
        assert "call_soon_threadsafe" in str(errors[0])
        assert getattr(exe, name) == before
        setattr(exe, name, value)  # on the loop's thread: fine
        assert getattr(exe, name) == value
        release.set()


async def test_an_error_starting_the_backlog_in_a_jobs_last_step_is_not_lost(
    loop_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It once was: the job's task ended with it, its queued future took it as retrieved,
    and the policy never heard of it."""
    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))

    def broken(exe: CoroutineExecutor) -> None:
        raise OSError("cannot start")

    release = asyncio.Event()

    async def parked() -> None:
        await release.wait()

    try:
        with pytest.raises(OSError, match="cannot start"):
            async with CoroutineExecutor(max_workers=1) as exe:
                await exe.submit(parked)
                monkeypatch.setattr(_settle, "_admit_after_job", broken)
                first = exe.submit_nowait(quick, 1)
                second = exe.submit_nowait(quick, 2)
                release.set()
                await asyncio.gather(first, second, return_exceptions=True)
    finally:
        loop.set_exception_handler(handler)
    assert [type(c["exception"]) for c in reported] == [OSError]
    assert second.cancelled()
