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

