"""Cancelling a queued job's future counts the job out of the line as cancel() returns.

A docs-only tester (brk30) cancelled the future submit_nowait() returned for a job still
queued: the future was cancelled at once (docs/semantics.rst says so), yet ``stats``
went on counting the job as queued, not cancelled, and ``busiest_key`` its key's line as
long as before, until the loop's next turn (the count moved in the future's done
callback). ExecutorStats promises that each accepted job is, at any moment, in exactly
one of its states. Under an eager task factory the same held for a queued job that a
``max_workers`` grow started and that cancelled the future of the job queued behind it
in its first step. The counts now move inside ``cancel()``; the ``on_job_done`` hook is
still called from the future's done callback, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, ExecutorStats

KEYED = pytest.mark.parametrize("keyed", [False, True], ids=["plain", "key="])


def _executor(keyed: bool, max_workers: int, **options: Any) -> CoroutineExecutor:
    """Plain: ``max_workers`` slots. Keyed: every job's key is its first argument, one job
    of a key at a time, so jobs of one key queue in their key's line."""
    if keyed:
        return CoroutineExecutor(
            max_workers=max_workers, key=_key_of, max_per_key=1, **options
        )
    return CoroutineExecutor(max_workers=max_workers, **options)


def _key_of(key: Hashable, *args: Any) -> Hashable:
    return key


def _whole(stats: ExecutorStats) -> ExecutorStats:
    """Every accepted job is in exactly one state (ExecutorStats' docstring)."""
    states = stats.queued + stats.running + stats.succeeded + stats.failed + stats.cancelled
    assert stats.submitted == states, stats
    return stats


@KEYED
async def test_cancelling_a_queued_job_counts_it_cancelled_before_cancel_returns(
    loop_kind: str, keyed: bool
) -> None:
    release = asyncio.Event()
    ran: list[str] = []
    hooked: list[tuple[asyncio.Future[Any], ExecutorStats]] = []

    async def parked(key: str) -> None:
        await release.wait()

    async def job(key: str, name: str) -> str:
        ran.append(name)
        return name

    def hook(future: asyncio.Future[Any]) -> None:
        hooked.append((future, exe.stats))

    # Keyed: room for four, but key "a" takes one job at a time: B, C and D wait in its line.
    exe = _executor(keyed, 4 if keyed else 1, on_job_done=hook)
    async with exe:
        holder = exe.submit_nowait(parked, "a")
        b, c, d = (exe.submit_nowait(job, "a", name) for name in "BCD")
        stats = _whole(exe.stats)
        assert (stats.queued, stats.cancelled) == (3, 0)
        if keyed:
            assert stats.busiest_key == ("a", 3)

        assert c.cancel()
        stats = _whole(exe.stats)  # no turn of the loop in between
        assert (stats.queued, stats.running, stats.cancelled) == (2, 1, 1), stats
        if keyed:
            assert (stats.active_keys, stats.busiest_key) == (1, ("a", 2))
        assert not c.cancel()  # once
        assert _whole(exe.stats) == stats

        release.set()
        assert await d == "D"  # no slot (nor room in "a") went with C: D still runs
    assert ran == ["B", "D"]  # in FIFO order, C skipped
    stats = _whole(exe.stats)
    assert (stats.queued, stats.succeeded, stats.cancelled) == (0, 3, 1), stats
    assert [f for f, _ in hooked].count(c) == 1  # the hook: exactly once for C ...
    assert {f for f, _ in hooked} == {holder, b, c, d}
    assert len(hooked) == 4  # ... and for each of the others
    at_c = next(s for f, s in hooked if f is c)
    assert at_c.cancelled == 1 and at_c.queued <= 2  # it ran after C was counted


@KEYED
async def test_a_job_cancelling_a_queued_future_in_its_first_step_sees_it_counted(
    loop_kind: str, keyed: bool
) -> None:
    # Under an eager task factory, the first step of A runs inside the max_workers setter
    # (the backlog is admitted there), with B still in the line behind it (brk30, t28).
    release = asyncio.Event()
    futures: dict[str, asyncio.Future[Any]] = {}
    seen: list[ExecutorStats] = []

    async def parked(key: str) -> None:
        await release.wait()

    async def job(key: str, name: str) -> str:
        if name == "A":
            assert futures["B"].cancel()
            seen.append(_whole(exe.stats))
        await asyncio.sleep(0)
        return name

    # Keyed: each job a key of its own, so the slots alone hold A and B back.
    exe = _executor(keyed, 1)
    async with exe:
        await exe.submit(parked, "p")
        futures["A"] = exe.submit_nowait(job, "a", "A")
        futures["B"] = exe.submit_nowait(job, "b", "B")
        futures["C"] = exe.submit_nowait(job, "c", "C")
        assert _whole(exe.stats).queued == 3
        exe.max_workers = 2  # starts A
        if loop_kind == "eager":
            assert seen  # A's first step ran inside the setter, B cancelled there
        _whole(exe.stats)
        assert await futures["A"] == "A"
        (stats,) = seen
        # A running, B dropped, C still queued: no slot is free for it yet.
        assert (stats.queued, stats.running, stats.cancelled) == (1, 2, 1), stats
        if keyed:
            assert stats.busiest_key == ("c", 1)
        release.set()
        assert await futures["C"] == "C"  # no slot lost: the one A freed started C
    stats = _whole(exe.stats)
    assert (stats.queued, stats.succeeded, stats.cancelled) == (0, 3, 1), stats


@KEYED
async def test_a_queued_job_cancelled_in_the_step_that_frees_its_slot_counts_once(
    loop_kind: str, keyed: bool
) -> None:
    # The running job's last step cancels B, then ends: the slot (and the room in "a")
    # it frees in that step skips B for C. B is counted once, C starts.
    futures: dict[str, asyncio.Future[Any]] = {}
    go = asyncio.Event()
    hooked: list[asyncio.Future[Any]] = []

    async def first(key: str) -> None:
        await go.wait()
        assert futures["B"].cancel()
        _whole(exe.stats)

    async def job(key: str, name: str) -> str:
        return name

    exe = _executor(keyed, 4 if keyed else 1, on_job_done=hooked.append)
    async with exe:
        futures["A"] = exe.submit_nowait(first, "a")
        futures["B"] = exe.submit_nowait(job, "a", "B")
        futures["C"] = exe.submit_nowait(job, "a", "C")
        go.set()
        assert await futures["C"] == "C"
        assert futures["B"].cancelled()
        _whole(exe.stats)
    stats = _whole(exe.stats)
    assert (stats.queued, stats.succeeded, stats.cancelled) == (0, 2, 1), stats
    assert sorted(map(id, hooked)) == sorted(map(id, futures.values()))  # once each


@KEYED
async def test_a_cancelled_queued_job_is_not_counted_again_when_the_line_is_drained(
    loop_kind: str, keyed: bool
) -> None:
    started = asyncio.Event()
    hooked: list[asyncio.Future[Any]] = []

    async def parked(key: str) -> None:
        started.set()
        await asyncio.Event().wait()

    async def job(key: str) -> None:
        raise AssertionError("a queued job ran after shutdown(wait=False)")

    exe = _executor(keyed, 4 if keyed else 1, on_job_done=hooked.append)
    async with exe:
        holder = exe.submit_nowait(parked, "a")
        b, c = exe.submit_nowait(job, "a"), exe.submit_nowait(job, "a")
        await started.wait()
        assert b.cancel()
        assert _whole(exe.stats).cancelled == 1
        await exe.shutdown(wait=False)  # drains the line: C is dropped, B was already
        stats = _whole(exe.stats)
        assert (stats.queued, stats.cancelled) == (0, 2), stats
    assert holder.cancelled() and b.cancelled() and c.cancelled()
    stats = _whole(exe.stats)
    assert (stats.submitted, stats.cancelled) == (3, 3), stats
    assert sorted(map(id, hooked)) == sorted(map(id, (holder, b, c)))  # once each
