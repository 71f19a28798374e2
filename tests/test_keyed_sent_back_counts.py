"""A keyed ``await submit()`` that a shrink of ``max_workers`` sent back to the line still
waits, and ``stats.busiest_key`` counts it (semantics.rst, "Per-key limits": its count
includes the ``await submit()`` calls waiting).

Such a caller was granted a slot, and with it room in its key; the limit shrank before
it resumed, so it gave the slot back and waits again, ahead of the others, keeping its
key's room (SlotLine._must_wait_again). ``stats`` counted it as waiting, not running,
but the per-key counts still had it running for its key: ``busiest_key`` left it out
(``None`` with no other job waiting). Now it counts as waiting for its key until it
resumes with a slot, or leaves the line.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor
from tests._waiters import Holder

pytestmark = pytest.mark.timeout(15)


async def _steps(n: int = 3) -> None:
    """Let the loop run ``n`` turns (a count, not a time): a waiter resumes in one."""
    for _ in range(n):
        await asyncio.sleep(0)


async def _sent_back(
    exe: CoroutineExecutor, holder: Holder, name: str, key: str
) -> asyncio.Future[Any]:
    """A submit() of ``name`` (of ``key``) granted a slot that a shrink takes back before
    it resumes (the one slot is ``holder``'s): it is back in line, as a SentBack waiter."""
    waiting = asyncio.ensure_future(exe.submit(holder.park, name))
    await _steps()
    assert exe.stats.busiest_key == (key, 1)  # in its key's line
    exe.max_workers = 2  # a slot for it: granted, it resumes next turn ...
    exe.max_workers = 1  # ... and finds the slot taken back
    await _steps()
    assert not waiting.done()
    return waiting


async def test_a_keyed_submit_sent_back_by_a_shrink_counts_as_waiting_for_its_key(
    loop_kind: str,
) -> None:
    holder = Holder()
    async with CoroutineExecutor(max_workers=1, key=lambda name: name, max_per_key=1) as exe:
        await exe.submit(holder.park, "a")
        waiting = await _sent_back(exe, holder, "b", "b")
        stats = exe.stats
        assert (stats.running, stats.queued) == (1, 0)  # "b" is not accepted yet
        assert stats.busiest_key == ("b", 1)  # was None: "b" counted as running
        assert stats.active_keys == 2
        holder.release.set()  # "a" ends: "b" starts
        await waiting
        assert exe.stats.busiest_key is None  # counted once, not waiting any more
    assert holder.ran == ["a", "b"]


async def test_the_count_adds_to_those_in_the_keys_line(loop_kind: str) -> None:
    holder = Holder()
    async with CoroutineExecutor(max_workers=1, key=lambda name: name[0], max_per_key=1) as exe:
        await exe.submit(holder.park, "a")
        first = await _sent_back(exe, holder, "b1", "b")
        second = asyncio.ensure_future(exe.submit(holder.park, "b2"))  # "b" has no room
        await _steps()
        assert exe.stats.busiest_key == ("b", 2)
        holder.release.set()
        await asyncio.gather(first, second)
    assert holder.ran == ["a", "b1", "b2"]


async def test_a_sent_back_submit_cancelled_leaves_no_count(loop_kind: str) -> None:
    holder = Holder()
    async with CoroutineExecutor(max_workers=1, key=lambda name: name, max_per_key=1) as exe:
        await exe.submit(holder.park, "a")
        waiting = await _sent_back(exe, holder, "b", "b")
        waiting.cancel()
        await _steps()
        assert waiting.cancelled()
        stats = exe.stats
        assert (stats.busiest_key, stats.active_keys) == (None, 1)  # "b" holds nothing
        holder.release.set()
    assert holder.ran == ["a"]
