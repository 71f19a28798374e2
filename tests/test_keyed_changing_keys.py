"""A key that changes after its job was accepted (``key=``), on both executors.

A key object whose hash or equality changes (a dataclass with ``unsafe_hash=True``
renamed while its job runs), or whose ``__hash__`` starts raising, is the user's mistake;
it must not strand the jobs waiting in its key's line, nor kill a thread. A job granted
room gives it back to the line it was granted it in, never looking its key up again.
Jobs park on events the test sets: every ordering is set by the test, never by time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, LoopExecutor

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # seconds: a bound on every wait, never reached when all is well


@dataclasses.dataclass(unsafe_hash=True)
class Host:
    name: str


class Breaking:
    """A key whose ``__hash__`` (or ``__eq__``) raises once ``broken`` is set."""

    def __init__(self, n: int, breaks: str) -> None:
        self.n, self.breaks, self.broken = n, breaks, False

    def __hash__(self) -> int:
        if self.broken and self.breaks == "hash":
            raise RuntimeError("hash broke")
        return hash(self.n)

    def __eq__(self, other: object) -> bool:
        if self.broken and self.breaks == "eq":
            raise RuntimeError("eq broke")
        return isinstance(other, Breaking) and other.n == self.n

    def __repr__(self) -> str:
        return f"Breaking({self.n})"


def assert_no_key_state(slots: Any) -> None:
    line = slots.line
    assert (line._lines, line._by_waiting, line.stale, len(line)) == ({}, {}, 0, 0)
    assert line.active_keys == 0 and line.key_errors == []


#
# CoroutineExecutor
#


async def test_a_key_renamed_while_its_job_runs_strands_no_job_of_its_line(
    loop_kind: str,
) -> None:
    gate = asyncio.Event()

    async def job(host: Host) -> str:
        await gate.wait()
        return host.name

    first = Host("a")
    async with CoroutineExecutor(4, key=lambda host: host, max_per_key=1) as exe:
        a = exe.submit_nowait(job, first)
        b = exe.submit_nowait(job, Host("a"))  # waits in "a"'s line
        assert exe.stats.busiest_key == (Host("a"), 1)
        first.name = "renamed"  # the running job's key changes: its line must go on
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(a, b), WAIT)
        assert results == ["renamed", "a"]
        assert exe.stats.active_keys == 0
        # A job of the new name is a job of another key, and runs.
        assert await (await exe.submit(job, Host("renamed"))) == "renamed"
    assert_no_key_state(exe._slots)


@pytest.mark.parametrize("breaks", ["hash", "eq"])
async def test_a_key_that_starts_raising_strands_no_job_and_its_error_is_reported(
    loop_kind: str, breaks: str
) -> None:
    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))
    gate = asyncio.Event()

    async def job(key: Breaking) -> int:
        await gate.wait()
        return key.n

    keys = [Breaking(1, breaks), Breaking(1, breaks)]  # equal: one key, two objects
    async with CoroutineExecutor(4, key=lambda key: key, max_per_key=1) as exe:
        a = exe.submit_nowait(job, keys[0])
        b = exe.submit_nowait(job, keys[1])
        assert exe.stats.queued == 1
        for key in keys:
            key.broken = True
        gate.set()
        assert await asyncio.wait_for(asyncio.gather(a, b), WAIT) == [1, 1]  # their own
        assert exe.stats.active_keys == 0 and exe.stats.busiest_key is None
    assert (exe.stats.succeeded, exe.stats.failed) == (2, 0)
    if breaks == "hash":
        # The idle line left by identity; the hash's error went to the loop's handler.
        [report] = reports
        assert "__hash__ or __eq__" in report["message"]
        assert str(report["exception"]) == "hash broke"
    else:
        assert reports == []  # a job that ends never compares its key: nothing raised
    assert_no_key_state(exe._slots)


#
# LoopExecutor
#


@pytest.mark.parametrize("workers", [1, 4])
def test_bridge_a_key_renamed_while_its_job_runs_strands_no_job_nor_kills_a_thread(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    deaths: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", deaths.append)
    gate = threading.Event()

    def job(host: Host) -> str:
        assert gate.wait(WAIT)
        return host.name

    first = Host("a")
    with LoopExecutor(workers, key=lambda host: host, max_per_key=1) as exe:
        a = exe.submit(job, first)
        b = exe.submit(job, Host("a"))  # waits in "a"'s line
        first.name = "renamed"
        gate.set()
        assert (a.result(WAIT), b.result(WAIT)) == ("renamed", "a")
        # Another key's job runs after them (with one worker, on the same thread).
        assert exe.submit(job, Host("z")).result(WAIT) == "z"
        stats = exe.stats
        assert (stats.running, stats.active_keys) == (0, 0)
    assert deaths == []
    assert exe._handoff._slots.keys == {}
    assert_no_key_state(exe._handoff._slots)


@pytest.mark.parametrize("breaks", ["hash", "eq"])
def test_bridge_a_key_that_starts_raising_strands_no_job_and_its_error_is_reported(
    breaks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports: list[Any] = []
    deaths: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    monkeypatch.setattr(threading, "excepthook", deaths.append)
    gate = threading.Event()

    def job(key: Breaking) -> int:
        assert gate.wait(WAIT)
        return key.n

    keys = [Breaking(1, breaks), Breaking(1, breaks)]
    with LoopExecutor(4, key=lambda key: key, max_per_key=1) as exe:
        a = exe.submit(job, keys[0])
        b = exe.submit(job, keys[1])
        for key in keys:
            key.broken = True
        gate.set()
        assert (a.result(WAIT), b.result(WAIT)) == (1, 1)
        assert exe.stats.active_keys == 0
    assert deaths == []
    if breaks == "hash":
        [report] = reports
        assert "a job's key" in report.err_msg
        assert str(report.exc_value) == "hash broke"
    else:
        assert reports == []
    assert_no_key_state(exe._handoff._slots)
