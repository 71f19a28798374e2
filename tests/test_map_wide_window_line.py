"""A map whose window is wider than the slots lines up its whole window when it finds
every slot taken, its first input included: the inputs wait in line with the other
producers (counted in ``stats.queued``) and start in input order, ahead of producers that
came after them (found by a docs-only tester: with none of its jobs in flight, the map
waited in line for a slot for its first input itself and read no further, so a job
submitted meanwhile started between the map's first input and its second).

Every test here has the same shape: ``max_workers=1``; the job ``H`` holds the only slot
until the test lets it go; a map of ``M0``, ``M1``, ``M2`` with ``buffersize=4`` comes
next, then, once the map has read its inputs, the job ``N1``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, Retry

pytestmark = pytest.mark.timeout(30)

ORDERED = pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
INPUTS = pytest.mark.parametrize("inputs", ["sync", "async"])
NAMES = ["M0", "M1", "M2"]
LINED_UP = ["H", "M0", "M1", "M2", "N1"]  # the start order the line gives


class Scene:
    """The jobs and the inputs. ``started`` lists every attempt as it begins; ``release``
    lets every job end (``failing``: those raise ValueError then; ``flaky``: those raise
    OSError on their first attempt only). ``all_read`` is set when the map asks its
    inputs for more after the last one: it has read them all."""

    def __init__(self, failing: tuple[str, ...] = (), flaky: tuple[str, ...] = ()) -> None:
        self.failing = failing
        self.flaky = flaky
        self.started: list[str] = []
        self.read: list[str] = []
        self.release = asyncio.Event()
        self.all_read = asyncio.Event()

    async def job(self, name: str) -> str:
        first = name not in self.started
        self.started.append(name)
        await self.release.wait()
        # Hold the slot across a turn: under an eager task factory a job that ends in its
        # first step frees its slot inside its own start, and the next in line starts
        # before a retry back from a pause of 0 s (as after any pause it could).
        await asyncio.sleep(0)
        if name in self.failing or (first and name in self.flaky):
            raise (ValueError if name in self.failing else OSError)(name)
        return name

    def sync_inputs(self) -> Iterator[str]:
        for name in NAMES:
            self.read.append(name)
            yield name
        self.all_read.set()

    async def async_inputs(self) -> AsyncIterator[str]:
        for name in NAMES:
            self.read.append(name)
            yield name
        self.all_read.set()

    def inputs(self, kind: str) -> Any:
        return self.sync_inputs() if kind == "sync" else self.async_inputs()


async def _line_up(
    exe: CoroutineExecutor, scene: Scene, ordered: bool, inputs: str, **options: Any
) -> tuple[Any, asyncio.Future[Any]]:
    """H takes the slot, the map asks for its first result, and waits in line: returns
    the map and the consumer's ``__anext__()``, once the map has read its inputs."""
    exe.submit_nowait(scene.job, "H")
    results = (exe.map if ordered else exe.map_unordered)(
        scene.job, scene.inputs(inputs), buffersize=4, **options
    )
    consumer = asyncio.ensure_future(results.__anext__())
    # (A bound, not a timing: before the fix a map of sync inputs read only M0, for
    # good. The map's consumer runs in the step it was woken in for the first item
    # before this task resumes, so it has lined up the inputs it read by then.)
    await asyncio.wait_for(scene.all_read.wait(), 5)
    assert scene.read == NAMES
    stats = exe.stats
    assert (stats.running, stats.queued) == (1, len(NAMES))  # the whole window in line
    return results, consumer


async def _rest(results: Any) -> list[Any]:
    return [value async for value in results]


@ORDERED
@INPUTS
async def test_the_window_waits_in_line_ahead_of_later_producers(
    loop_kind: str, ordered: bool, inputs: str
) -> None:
    scene = Scene()
    async with CoroutineExecutor(max_workers=1) as exe:
        results, consumer = await _line_up(exe, scene, ordered, inputs)
        later = exe.submit_nowait(scene.job, "N1")
        assert exe.stats.queued == len(NAMES) + 1
        scene.release.set()
        values = [await consumer, *await _rest(results)]
        assert await later == "N1"
    assert values == NAMES
    assert scene.started == LINED_UP
    stats = exe.stats
    assert (stats.succeeded, stats.cancelled, stats.queued, stats.running) == (5, 0, 0, 0)


@ORDERED
async def test_a_later_submit_waiting_for_a_slot_starts_after_the_window(
    loop_kind: str, ordered: bool
) -> None:
    # The later producer waits in submit() rather than queueing: the same line.
    scene = Scene()
    async with CoroutineExecutor(max_workers=1) as exe:
        results, consumer = await _line_up(exe, scene, ordered, "sync")
        later = asyncio.ensure_future(exe.submit(scene.job, "N1"))
        scene.release.set()
        values = [await consumer, *await _rest(results)]
        assert await (await later) == "N1"
    assert values == NAMES
    assert scene.started == LINED_UP


@ORDERED
async def test_growing_the_limit_starts_the_window_first(loop_kind: str, ordered: bool) -> None:
    # Resizing: the room a larger limit makes goes to the line in FIFO order, so to M0
    # and M1, not to N1, which came after them.
    scene = Scene()
    async with CoroutineExecutor(max_workers=1) as exe:
        results, consumer = await _line_up(exe, scene, ordered, "sync")
        later = exe.submit_nowait(scene.job, "N1")
        exe.max_workers = 3
        stats = exe.stats
        assert (stats.running, stats.queued) == (3, 2)  # H, M0, M1 run; M2 and N1 wait
        scene.release.set()
        values = [await consumer, *await _rest(results)]
        assert await later == "N1"
    assert values == NAMES
    assert scene.started == LINED_UP


#
# The map ending while its whole window waits in line
#


@ORDERED
@INPUTS
async def test_a_map_closed_early_drops_its_window_from_the_line(
    loop_kind: str, ordered: bool, inputs: str
) -> None:
    scene = Scene()
    async with CoroutineExecutor(max_workers=1) as exe:
        results, consumer = await _line_up(exe, scene, ordered, inputs)
        later = exe.submit_nowait(scene.job, "N1")
        await results.aclose()
        stats = exe.stats
        assert (stats.queued, stats.cancelled) == (1, len(NAMES))  # N1 still waits
        with pytest.raises(StopAsyncIteration):
            await consumer
        scene.release.set()
        assert await later == "N1"
    assert scene.started == ["H", "N1"]  # no input of the map ever started
    stats = exe.stats
    assert (stats.succeeded, stats.cancelled, stats.queued, stats.running) == (2, 3, 0, 0)


@ORDERED
async def test_the_maps_own_error_drops_the_rest_of_its_window(
    loop_kind: str, ordered: bool
) -> None:
    # M0 starts from the line and fails: the map ends with its error and drops M1 and
    # M2, which never start; the executor goes on (suppress_task_errors) and N1 runs.
    scene = Scene(failing=("M0",))
    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
        results, consumer = await _line_up(exe, scene, ordered, "sync")
        later = exe.submit_nowait(scene.job, "N1")
        scene.release.set()
        with pytest.raises(ValueError, match="M0"):
            await consumer
        assert await later == "N1"
        assert await _rest(results) == []  # (the map has ended)
    assert scene.started == ["H", "M0", "N1"]
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled, stats.queued) == (2, 1, 2, 0)


@ORDERED
async def test_fail_fast_drops_the_window_and_later_producers(
    loop_kind: str, ordered: bool
) -> None:
    # M0 starts from the line and fails: the executor stops. M1, M2 and N1, still in
    # line, never start; the body is interrupted and the block raises M0's error.
    scene = Scene(failing=("M0",))
    consumer: asyncio.Future[Any] | None = None
    with pytest.raises(ValueError, match="M0"):
        async with CoroutineExecutor(max_workers=1) as exe:
            _, consumer = await _line_up(exe, scene, ordered, "sync")
            exe.submit_nowait(scene.job, "N1")
            scene.release.set()
            await asyncio.Event().wait()  # interrupted as M0 fails
    assert consumer is not None
    with pytest.raises(ValueError, match="M0"):
        await consumer
    assert scene.started == ["H", "M0"]
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled, stats.queued) == (1, 1, 3, 0)


#
# return_exceptions= and retry= of the inputs in line
#


@ORDERED
async def test_an_error_of_an_input_from_the_line_is_its_result(
    loop_kind: str, ordered: bool
) -> None:
    # return_exceptions=True: M0's error is yielded in its place; nothing is dropped.
    scene = Scene(failing=("M0",))
    async with CoroutineExecutor(max_workers=1) as exe:
        results, consumer = await _line_up(exe, scene, ordered, "sync", return_exceptions=True)
        later = exe.submit_nowait(scene.job, "N1")
        scene.release.set()
        values = [await consumer, *await _rest(results)]
        assert await later == "N1"
    assert isinstance(values[0], ValueError) and str(values[0]) == "M0"
    assert values[1:] == ["M1", "M2"]
    assert scene.started == LINED_UP
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (4, 1, 0)


@ORDERED
async def test_an_input_from_the_line_keeps_the_maps_retry_policy(
    loop_kind: str, ordered: bool
) -> None:
    # M0 fails its first attempt and is retried under the map's own policy (the
    # executor has none); its pause of 0 s gives the slot to M1, first in line, and its
    # second attempt then goes ahead of M2 (a job between two attempts goes before jobs
    # not started yet); N1 still comes after the window.
    scene = Scene(flaky=("M0",))
    retry = Retry(attempts=2, backoff=0, jitter=False)
    async with CoroutineExecutor(max_workers=1) as exe:
        results, consumer = await _line_up(exe, scene, ordered, "sync", retry=retry)
        later = exe.submit_nowait(scene.job, "N1")
        scene.release.set()
        values = [await consumer, *await _rest(results)]
        assert await later == "N1"
    assert values == (NAMES if ordered else ["M1", "M0", "M2"])
    assert scene.started == ["H", "M0", "M1", "M0", "M2", "N1"]
    stats = exe.stats
    assert (stats.succeeded, stats.retried, stats.failed, stats.queued) == (5, 1, 0, 0)
