"""A key= key whose ``__hash__`` AND ``__eq__`` raise once its job ends, with a job of an
equal key waiting in its line (brk37 F1-F3).

A lookup of the waiting job's key collides with the broken one still counted running, so
it raises too. Stopping the executor (fail-fast, the block's exit, shutdown) drains the
key lines, which looked every key up: the drain raised, so under fail-fast the block's
exit hung (past an outer timeout) and the first job's task held the key's error; under
``suppress_task_errors`` the block raised it with the waiting job never cancelled; and
``LoopExecutor``'s ``with`` exit hung. The drain now goes on past such a key (its limit
entry stays), and the waiting job is cancelled, as semantics.rst says.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, LoopExecutor

pytestmark = pytest.mark.timeout(15)

WAIT = 5.0  # a bound on every wait, never reached when all is well


class Key:
    """Equal to every other Key; hash and equality both raise once it is broken."""

    def __init__(self) -> None:
        self.broken = False

    def __hash__(self) -> int:
        if self.broken:
            raise ZeroDivisionError("hash broke")
        return 1

    def __eq__(self, other: object) -> bool:
        if self.broken:
            raise ZeroDivisionError("eq broke")
        return isinstance(other, Key)


async def breaks(key: Key) -> str:
    await asyncio.sleep(0)
    key.broken = True
    return "first ok"


async def behind(key: Key) -> str:
    return "behind ok"


@pytest.mark.parametrize("suppress", [False, True], ids=["fail-fast", "suppress"])
async def test_the_block_exits_and_the_waiting_job_is_cancelled(suppress: bool) -> None:
    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: reports.append(context))
    exe = CoroutineExecutor(
        max_workers=4, key=lambda k: k, max_per_key=1, suppress_task_errors=suppress
    )

    async def block() -> None:
        async with exe:
            first = await exe.submit(breaks, Key())
            waiting = exe.submit_nowait(behind, Key())
            blocks.append((first, waiting))
            await asyncio.wait({first})
            if not suppress:
                await asyncio.sleep(WAIT)  # fail-fast interrupts the body here

    blocks: list[tuple[asyncio.Future[str], asyncio.Future[str]]] = []
    if suppress:
        await asyncio.wait_for(block(), WAIT)
    else:
        with pytest.raises(ZeroDivisionError, match="hash broke"):
            await asyncio.wait_for(block(), WAIT)
    (first, waiting), = blocks
    assert first.result() == "first ok"  # the job keeps its own outcome
    assert waiting.cancelled()
    stats = exe.stats
    assert (stats.queued, stats.running, stats.succeeded, stats.cancelled) == (0, 0, 1, 1)
    assert not [r for r in reports if "_wake_idle" in r["message"]]  # no error in a callback
    if suppress:
        assert [type(r.get("exception")) for r in reports] == [ZeroDivisionError]


def test_a_loop_executor_exits_and_cancels_the_waiting_job() -> None:
    logged: list[str] = []
    done = threading.Event()

    def run() -> None:
        with LoopExecutor(max_workers=4, key=lambda k: k, max_per_key=1) as exe:
            first = exe.submit(breaks, Key())
            waiting = exe.submit(behind, Key())
            assert first.result(timeout=WAIT) == "first ok"
        results.append((waiting.cancelled(), exe.stats))
        done.set()

    results: list[tuple[bool, Any]] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    handler = Catch()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        thread = threading.Thread(target=run)
        thread.start()
        assert done.wait(WAIT), "the with-block exit hung"
        thread.join(WAIT)
    finally:
        logger.removeHandler(handler)
    (cancelled, stats), = results
    assert cancelled
    assert (stats.queued, stats.running, stats.succeeded, stats.cancelled) == (0, 0, 1, 1)
    # The key's error is reported once, as documented; no error in a callback of the loop.
    assert not [m for m in logged if m.startswith("Exception in callback")]
    assert [m for m in logged if m.startswith("a key= key raised")]
