"""A CoroutineExecutor belongs to the event loop it was first used on (issue 17, item 5).

Reused on another loop (a second ``asyncio.run()``, a loop in another thread), the
first call raises a RuntimeError that says so, instead of building tasks on a closed
loop ("Event loop is closed", "Task was destroyed but it is pending!").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor
from tests.conftest import LOOP_KINDS, new_loop

pytestmark = pytest.mark.timeout(15)

MESSAGE = (
    "belongs to the event loop it was first used on and cannot be used from another;"
    " make one executor per asyncio.run()"
)


async def job(n: int = 1) -> int:
    await asyncio.sleep(0)
    return n


def run(main: Callable[[], Awaitable[Any]], kind: str) -> Any:
    """What asyncio.run() does, on a loop of the given kind."""
    loop = new_loop(kind)
    try:
        return loop.run_until_complete(main())  # type: ignore[arg-type]
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _submit(exe: CoroutineExecutor) -> Any:
    return await (await exe.submit(job))


async def _submit_nowait(exe: CoroutineExecutor) -> Any:
    return await exe.submit_nowait(job)


async def _map(exe: CoroutineExecutor) -> Any:
    results = [n async for n in exe.map(job, [1])]
    return results[0]


async def _map_unordered(exe: CoroutineExecutor) -> Any:
    results = [n async for n in exe.map_unordered(job, [1])]
    return results[0]


async def _shutdown(exe: CoroutineExecutor) -> Any:
    await exe.shutdown()


async def _async_with(exe: CoroutineExecutor) -> Any:
    async with exe:
        pass


CALLS = [_submit, _submit_nowait, _map, _map_unordered, _shutdown, _async_with]


@pytest.mark.parametrize("kind", LOOP_KINDS)
@pytest.mark.parametrize("first", [_submit, _submit_nowait, _map], ids=lambda f: f.__name__)
@pytest.mark.parametrize("second", CALLS, ids=lambda f: f.__name__)
def test_reuse_in_a_second_asyncio_run_raises_at_the_first_call(
    kind: str, first: Any, second: Any, caplog: pytest.LogCaptureFixture
) -> None:
    exe = CoroutineExecutor(4)
    assert run(lambda: first(exe), kind) == 1  # used without async with: left running
    with pytest.raises(RuntimeError, match=re.escape(MESSAGE)):
        run(lambda: second(exe), kind)
    # Nothing was built on the closed loop: no "Task was destroyed but it is pending!".
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_reuse_after_the_block_names_the_loop_too(kind: str) -> None:
    exe = CoroutineExecutor(4)

    async def block() -> None:
        async with exe:
            await exe.submit(job)

    run(block, kind)
    for call in CALLS:
        with pytest.raises(RuntimeError, match=re.escape(MESSAGE)):
            run(functools.partial(call, exe), kind)


def test_entry_points_called_from_another_threads_loop_raise() -> None:
    """A loop running in another thread is not the executor's loop either. (The fast
    paths of submit() and submit_nowait() do not look: they must be called on the
    executor's loop, as documented; the other entry points check.)"""
    refused: list[str] = []
    ready, done = threading.Event(), threading.Event()
    exe = CoroutineExecutor(4)

    async def owner() -> None:
        await exe.submit(job)  # binds exe to this loop
        ready.set()
        assert await asyncio.get_running_loop().run_in_executor(None, done.wait, 5)
        await exe.shutdown()

    async def intruder() -> None:
        for call in CALLS[2:]:  # map, map_unordered, shutdown, async with
            try:
                await call(exe)
            except RuntimeError as exc:
                refused.append(str(exc))

    def other_thread() -> None:
        assert ready.wait(5)
        try:
            asyncio.run(intruder())
        finally:
            done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    asyncio.run(owner())
    thread.join(5)
    assert not thread.is_alive()
    assert len(refused) == 4 and all(MESSAGE in message for message in refused), refused


def test_no_task_destroyed_log_on_reuse(caplog: pytest.LogCaptureFixture) -> None:
    """The issue's own reproduction: two asyncio.run() calls sharing one executor."""
    exe = CoroutineExecutor(4)

    async def main() -> int:
        return await (await exe.submit(job))

    caplog.set_level(logging.DEBUG, logger="asyncio")
    assert asyncio.run(main()) == 1
    with pytest.raises(RuntimeError, match=re.escape(MESSAGE)):
        asyncio.run(main())
    assert "destroyed" not in caplog.text
