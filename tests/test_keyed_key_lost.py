"""A key= key whose ``__hash__`` starts raising while its job runs (brk35 F4).

Changing a key meanwhile is not supported (semantics.rst): its room cannot be given back,
so the key stays active. But the error is no longer lost. It used to end the job's task
in place of its result, after the job was counted a success: fail-fast never heard of
it, a block already waiting at its exit for the job waited for ever, and asyncio logged
"Task exception was never retrieved". Now the job keeps its own outcome, and the key's
error is a job error under the policy: fail-fast raises it from the block; when the
policy would not raise it, the loop's exception handler gets it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor

pytestmark = pytest.mark.timeout(15)

WAIT = 5
MESSAGE = "a key= key raised as its job ended: its room in the key is lost"

# In-line jobs settle in their own last step; with job_timeout=, from a done callback.
SETTLING = pytest.mark.parametrize(
    "options", [{}, {"job_timeout": 60.0}], ids=["in-line", "done-callback"]
)


class Host:
    """A key whose hash breaks on demand (as a mutable key's would change)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.broken = False

    def __hash__(self) -> int:
        if self.broken:
            raise ValueError("hash broke")
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Host) and other.name == self.name


async def breaks_its_key(host: Host) -> str:
    await asyncio.sleep(0)
    host.broken = True
    return "ok"


async def breaks_its_key_and_fails(host: Host) -> str:
    await asyncio.sleep(0)
    host.broken = True
    raise OSError("the job's own error")


def collect_reports() -> tuple[list[dict[str, Any]], Any]:
    """Route the loop's exception handler into a list; returns it and the old handler."""
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    return reported, handler


@SETTLING
async def test_fail_fast_raises_the_keys_error_from_a_block_waiting_at_its_exit(
    loop_kind: str, options: dict[str, Any]
) -> None:
    exe = CoroutineExecutor(max_workers=4, key=lambda host: host, max_per_key=1, **options)
    tasks: list[asyncio.Task[str]] = []

    async def block() -> None:
        async with exe:  # its exit waits for the job, which breaks its key meanwhile
            tasks.append(await exe.submit(breaks_its_key, Host("a")))

    with pytest.raises(ValueError, match="hash broke"):  # (before: a hang, or nothing)
        await asyncio.wait_for(block(), WAIT)
    (task,) = tasks
    assert task.result() == "ok"  # the job's own outcome, as counted
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.failed, stats.running) == (1, 1, 0, 0)
    assert stats.active_keys == 1  # its room could not be given back (documented)


@SETTLING
async def test_under_suppress_the_keys_error_goes_to_the_loops_exception_handler(
    loop_kind: str, options: dict[str, Any]
) -> None:
    reported, handler = collect_reports()
    try:
        async with CoroutineExecutor(
            max_workers=4, key=lambda host: host, max_per_key=1,
            suppress_task_errors=True, **options,
        ) as exe:
            task = await exe.submit(breaks_its_key, Host("a"))
            await asyncio.wait_for(asyncio.wait({task}), WAIT)
    finally:
        asyncio.get_running_loop().set_exception_handler(handler)
    assert task.result() == "ok"
    assert [(c["message"], repr(c["exception"])) for c in reported] == [
        (MESSAGE, repr(ValueError("hash broke")))
    ]
    assert (exe.stats.succeeded, exe.stats.failed) == (1, 0)


@SETTLING
async def test_a_failed_jobs_own_error_stands_and_its_keys_error_is_reported(
    loop_kind: str, options: dict[str, Any]
) -> None:
    reported, handler = collect_reports()
    try:
        with pytest.raises(OSError, match="the job's own error"):
            async with CoroutineExecutor(
                max_workers=4, key=lambda host: host, max_per_key=1, **options
            ) as exe:
                task = await exe.submit(breaks_its_key_and_fails, Host("a"))
                await asyncio.wait_for(asyncio.wait({task}), WAIT)
    finally:
        asyncio.get_running_loop().set_exception_handler(handler)
    error = task.exception()
    assert isinstance(error, OSError) and str(error) == "the job's own error"
    assert [(c["message"], repr(c["exception"])) for c in reported] == [
        (MESSAGE, repr(ValueError("hash broke")))
    ]
    assert (exe.stats.succeeded, exe.stats.failed) == (0, 1)



#
# The jobs waiting in the lost key's line
#

# Fail-fast raises the key's error (and cancels the waiting job as it stops); under
# suppress the executor goes on, and only the exit or shutdown() ends the waiting job.
POLICY = pytest.mark.parametrize("suppress", [False, True], ids=["fail-fast", "suppress"])


async def plain(host: Host) -> str:
    return host.name


def assert_stranded_job_cancelled(exe: CoroutineExecutor, stranded: asyncio.Future[str]) -> None:
    assert stranded.cancelled()
    stats = exe.stats
    assert (stats.submitted, stats.queued, stats.running) == (2, 0, 0)
    assert (stats.succeeded, stats.failed, stats.cancelled) == (1, 0, 1)
    assert stats.active_keys == 1  # the lost room stays taken (documented)


async def exits(exe: CoroutineExecutor, suppress: bool, ending: Any) -> None:
    """Await ``ending`` (the block, or shutdown()), bounded: it raises the key's error
    under fail-fast, nothing under suppress. (Before: under suppress, a hang.)"""
    if suppress:
        await asyncio.wait_for(ending, WAIT)
    else:
        with pytest.raises(ValueError, match="hash broke"):
            await asyncio.wait_for(ending, WAIT)


@POLICY
@pytest.mark.parametrize("ends", ["in-body", "at-exit"])
async def test_block_exit_cancels_a_job_stranded_in_the_lost_keys_line(
    loop_kind: str, suppress: bool, ends: str
) -> None:
    reported, handler = collect_reports()
    exe = CoroutineExecutor(
        max_workers=4, key=lambda host: host, max_per_key=1, suppress_task_errors=suppress
    )
    queued: list[asyncio.Future[str]] = []

    async def block() -> None:
        async with exe:
            task = await exe.submit(breaks_its_key, Host("a"))
            queued.append(exe.submit_nowait(plain, Host("a")))  # waits for a's room
            if ends == "in-body":
                await asyncio.wait({task})

    try:
        await exits(exe, suppress, block())
    finally:
        asyncio.get_running_loop().set_exception_handler(handler)
    assert_stranded_job_cancelled(exe, queued[0])
    assert len(reported) == suppress  # (the key's error, which fail-fast raised instead)


@POLICY
@pytest.mark.parametrize("in_block", [False, True], ids=["no-block", "in-block"])
async def test_shutdown_cancels_a_job_stranded_in_the_lost_keys_line(
    loop_kind: str, suppress: bool, in_block: bool
) -> None:
    reported, handler = collect_reports()
    exe = CoroutineExecutor(
        max_workers=4, key=lambda host: host, max_per_key=1, suppress_task_errors=suppress
    )
    queued: list[asyncio.Future[str]] = []

    async def shuts_down() -> None:  # (within a block, the block raises the error)
        await exe.submit(breaks_its_key, Host("a"))
        queued.append(exe.submit_nowait(plain, Host("a")))  # waits for a's room
        await exe.shutdown()

    async def block() -> None:
        async with exe:
            await shuts_down()

    try:
        await exits(exe, suppress, block() if in_block else shuts_down())
    finally:
        asyncio.get_running_loop().set_exception_handler(handler)
    assert_stranded_job_cancelled(exe, queued[0])
    assert len(reported) == suppress


async def test_block_exit_turns_away_a_submit_stranded_in_the_lost_keys_line(
    loop_kind: str,
) -> None:
    # A task a job started is inside the job: the block's exit lets its submit() wait
    # (the jobs may still submit), but once no job runs nothing could ever admit it.
    reported, handler = collect_reports()
    exe = CoroutineExecutor(
        max_workers=4, key=lambda host: host, max_per_key=1, suppress_task_errors=True
    )
    submits: list[asyncio.Task[asyncio.Task[str]]] = []

    async def starts_a_submit(host: Host) -> None:
        submits.append(asyncio.create_task(exe.submit(plain, Host("a"))))
        await asyncio.sleep(0)  # (the submit now waits for a's room)
        host.broken = True

    async def block() -> None:
        async with exe:
            await exe.submit(starts_a_submit, Host("a"))

    try:
        await asyncio.wait_for(block(), WAIT)  # (before: a hang)
    finally:
        asyncio.get_running_loop().set_exception_handler(handler)
    (submit,) = submits
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        await submit
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.cancelled, stats.queued) == (1, 1, 0, 0)
    assert len(reported) == 1
