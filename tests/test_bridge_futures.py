"""The futures ThreadedLoopExecutor hands back: what a finished one keeps alive."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from coroexecutor import ThreadedLoopExecutor
from tests.conftest import new_loop

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure


async def noop() -> None:
    return None


@pytest.fixture
def exe(loop_kind: str) -> Iterator[ThreadedLoopExecutor]:
    executor = ThreadedLoopExecutor(loop_factory=lambda: new_loop(loop_kind))
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def test_finished_future_lets_its_task_go(exe: ThreadedLoopExecutor) -> None:
    tasks: list[weakref.ref[asyncio.Task[object]]] = []

    async def job() -> int:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(weakref.ref(task))
        return 1

    future = exe.submit(job)
    assert future.result(timeout=WAIT) == 1
    exe.submit(noop).result(timeout=WAIT)  # the loop has run the job's done-callbacks
    gc.collect()
    assert tasks and tasks[0]() is None
    assert not future.cancel()  # finished: nothing left to cancel
    assert future.result() == 1
