"""A waiter handed a slot that has not resumed yet is still waiting: closing turns it away.

A submit() or a map waiting in line gets a slot (a job ended, or max_workers grew) and
resumes a turn later. Closing the executor or the map in between (shutdown(), the
block's exit, aclose(), all in the same step) must turn it away as it turns away one
still in line (semantics.rst, "Callers still waiting" and "Leaving a map() early"):
before, a submit() made outside the jobs was accepted after the block's exit had begun,
and one that a shrink then sent back to the line waited there until a real slot freed
(brk22 finding 1).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor
from tests._waiters import REFUSED, Holder, ended_within_turns

pytestmark = pytest.mark.timeout(15)



async def _consume(it: Any) -> object:
    try:
        return [r async for r in it]
    except RuntimeError as exc:
        return exc


async def _in_line(task: asyncio.Future[Any]) -> None:
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()


def _grant(exe: CoroutineExecutor, *, shrink: bool) -> None:
    """Hand the waiter a slot now (it resumes next turn); ``shrink``: then take the slot
    away again, so that the waiter, as it resumes, is sent back to the line."""
    exe.max_workers = 2
    if shrink:
        exe.max_workers = 1


def _refused(outcome: object) -> bool:
    return isinstance(outcome, RuntimeError) and re.search(REFUSED, str(outcome)) is not None


@pytest.mark.parametrize("shrink", [False, True], ids=["granted", "sent back"])
@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
async def test_the_block_exit_turns_away_a_submit_granted_but_not_resumed(
    loop_kind: str, shrink: bool, keyed: bool
) -> None:
    holder = Holder()
    seen: list[bool] = []
    options: dict[str, Any] = {"key": lambda name: "k", "max_per_key": 5} if keyed else {}

    async def release_when_refused(task: asyncio.Future[Any]) -> None:
        seen.append(await ended_within_turns(task))
        holder.release.set()  # else the exit would wait for the holder for ever

    async with CoroutineExecutor(max_workers=1, **options) as exe:
        await exe.submit(holder.park, "holder")
        waiting = asyncio.ensure_future(exe.submit(holder.park, "waiting"))
        await _in_line(waiting)
        releaser = asyncio.ensure_future(release_when_refused(waiting))
        _grant(exe, shrink=shrink)  # and the block exits in this same step
    await releaser
    assert seen == [True], "the granted submit() was not turned away at the exit"
    with pytest.raises(RuntimeError, match=REFUSED):
        waiting.result()
    assert holder.ran == ["holder"]
    assert exe.stats.submitted == 1


@pytest.mark.parametrize("shrink", [False, True], ids=["granted", "sent back"])
@pytest.mark.parametrize("how", ["wait", "grace", "no wait"])
async def test_shutdown_turns_away_a_submit_granted_but_not_resumed(
    loop_kind: str, shrink: bool, how: str
) -> None:
    holder = Holder()
    exe = CoroutineExecutor(max_workers=1)
    await exe.submit(holder.park, "holder")
    waiting = asyncio.ensure_future(exe.submit(holder.park, "waiting"))
    await _in_line(waiting)
    seen: list[bool] = []

    async def release_when_refused() -> None:
        seen.append(await ended_within_turns(waiting))
        holder.release.set()  # else shutdown() would wait for the holder for ever

    releaser = asyncio.ensure_future(release_when_refused())
    _grant(exe, shrink=shrink)  # and shutdown() begins in this same step
    if how == "no wait":
        await exe.shutdown(wait=False)
        await exe.shutdown()
    else:
        await exe.shutdown(timeout=60 if how == "grace" else None)
    await releaser
    assert seen == [True], "the granted submit() was not turned away by shutdown()"
    with pytest.raises(RuntimeError, match=REFUSED):
        waiting.result()
    assert holder.ran == ["holder"]
    stats = exe.stats
    assert (stats.submitted, stats.running, stats.queued) == (1, 0, 0)


@pytest.mark.parametrize("shrink", [False, True], ids=["granted", "sent back"])
@pytest.mark.parametrize("how", ["aclose", "shutdown", "block exit"])
async def test_a_map_granted_but_not_resumed_is_closed_at_once(
    loop_kind: str, shrink: bool, how: str
) -> None:
    holder = Holder()
    seen: list[bool] = []

    async def release_when_ended(task: asyncio.Future[Any]) -> None:
        seen.append(await ended_within_turns(task))
        holder.release.set()

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(holder.park, "holder")
        it = exe.map(holder.park, range(3))
        consumer = asyncio.ensure_future(_consume(it))
        await _in_line(consumer)
        releaser = asyncio.ensure_future(release_when_ended(consumer))
        _grant(exe, shrink=shrink)
        if how == "aclose":
            await it.aclose()
        elif how == "shutdown":
            await exe.shutdown(wait=False)
    await releaser
    outcome = consumer.result()
    assert seen == [True], "the map's granted consumer stayed in line"
    assert outcome == [] if how == "aclose" else _refused(outcome), outcome
    assert holder.ran == ["holder"]


async def test_a_turned_away_grant_passes_its_slot_on(loop_kind: str) -> None:
    """The slot the turned-away waiter was handed goes to the next in line: a job's own
    submit(), which the block's exit still accepts (jobs may submit jobs)."""
    holder = Holder()
    go = asyncio.Event()
    child_result: list[object] = []

    async def parent() -> None:
        await go.wait()
        child = await exe.submit(holder.park, "child")  # waits behind the outsider
        child_result.append(await child)

    async with CoroutineExecutor(max_workers=2) as exe:
        await exe.submit(holder.park, "holder")
        await exe.submit(parent)  # holds the second slot
        outsider = asyncio.ensure_future(exe.submit(holder.park, "outsider"))
        await _in_line(outsider)  # first in line
        go.set()
        for _ in range(3):
            await asyncio.sleep(0)  # the parent's submit() lines up behind it
        exe.max_workers = 3  # the outsider is handed the new slot: then the block exits
        asyncio.get_running_loop().call_soon(holder.release.set)
    with pytest.raises(RuntimeError, match=REFUSED):
        outsider.result()
    assert sorted(map(str, holder.ran)) == ["child", "holder"]
    assert child_result == ["child"]
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.running) == (3, 3, 0)
