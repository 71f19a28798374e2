"""A job's error keeps the chain its job left it with, whoever raised it first
(semantics.rst, "Fail-fast", point 3).

A ``raise`` inside an ``except`` clause makes that clause's exception the raised object's
``__context__``. A job's error is one object, shared by everyone who raises it: a map
consumer in an ``except`` clause, or a task awaiting the job's task in one, must not
change the chain the block, shutdown() or the next consumer raises it with.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor

pytestmark = pytest.mark.timeout(10)

SETTLED: dict[str, dict[str, Any]] = {
    "in-line": {},
    "hook": {"on_job_done": lambda job: None},  # settled from a done callback
}
CHAINS = ["none", "context", "cause", "from None"]
METHODS = ["map", "map_unordered"]


class ChainedJob:
    """A job that fails with a RuntimeError chained as ``how`` says (no chain, implicitly
    to a KeyError, ``from`` it, or ``from None``), and records the chain and traceback it
    leaves the job with."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.error: BaseException | None = None
        self.left: tuple[Any, ...] = ()

    async def __call__(self, _: object = None, go: asyncio.Event | None = None) -> None:
        if go is not None:
            await go.wait()
        else:
            await asyncio.sleep(0)
        try:
            if self.how == "none":
                raise RuntimeError("job failed")
            try:
                {}["missing"]
            except KeyError as exc:
                if self.how == "context":
                    raise RuntimeError("job failed")  # noqa: B904 - the implicit chain
                if self.how == "cause":
                    raise RuntimeError("job failed") from exc
                raise RuntimeError("job failed") from None
        except RuntimeError as exc:
            self.error = exc
            self.left = (
                exc.__context__, exc.__cause__, exc.__suppress_context__, exc.__traceback__
            )
            raise

    def assert_unchanged(self, raised: BaseException) -> None:
        """``raised`` is the job's own error, chained as the job left it."""
        assert raised is self.error
        context, cause, suppress, job_tb = self.left
        assert isinstance(context, KeyError) is (self.how != "none")
        assert raised.__context__ is context, f"context changed: {raised.__context__!r}"
        assert raised.__cause__ is cause
        assert raised.__suppress_context__ is suppress
        tbs = []
        tb = raised.__traceback__
        while tb is not None:
            tbs.append(tb)
            tb = tb.tb_next
        assert job_tb in tbs  # the job's own traceback, intact, at the end of the chain


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    """An error whose class refuses every attribute assignment, its chain's included."""

    user: str


async def frozen_failure(_: object = None, go: asyncio.Event | None = None) -> None:
    if go is not None:
        await go.wait()
    else:
        await asyncio.sleep(0)
    raise FrozenError("alice")


async def consume_inside_except(exe: CoroutineExecutor, method: str, job: Any) -> BaseException:
    """Run ``job`` through the map, consumed inside an ``except`` clause; the map's error."""
    try:
        raise OSError("the consumer's own, handled")
    except OSError:
        with pytest.raises(Exception) as info:  # the job's error: the caller checks it
            async for _ in getattr(exe, method)(job, [0]):
                pass
    return info.value


async def await_inside_except(task: asyncio.Future[Any], go: asyncio.Event) -> BaseException:
    """Await the job's task inside an ``except`` clause, letting the job fail (``go``)
    once it waits: asyncio's own raise of the job's error there (Future.result()) sets
    its __context__, and nobody can stop it."""
    try:
        raise OSError("the helper's own, handled")
    except OSError:
        with pytest.raises(Exception) as info:  # the job's error: the caller checks it
            go.set()  # the job goes on once this task waits for it (the next line)
            await task
    return info.value


#
# Map consumers
#


@pytest.mark.parametrize("owner", ["block", "shutdown"])
@pytest.mark.parametrize("settled", list(SETTLED))
@pytest.mark.parametrize("how", CHAINS)
@pytest.mark.parametrize("method", METHODS)
async def test_a_map_consumer_inside_an_except_leaves_the_chain_to_the_block_and_shutdown(
    loop_kind: str, method: str, how: str, settled: str, owner: str
) -> None:
    """Fail-fast, the consumer in a task of its own, inside an ``except`` clause: the map
    and then the block (or shutdown()) raise the job's error as the job left it, not
    with the consumer's handled OSError as its context."""
    job = ChainedJob(how)
    exe = CoroutineExecutor(**SETTLED[settled])
    with pytest.raises(RuntimeError) as info:
        if owner == "block":
            async with exe:
                consumer = asyncio.ensure_future(consume_inside_except(exe, method, job))
                await asyncio.Event().wait()  # interrupted by fail-fast
        else:
            consumer = asyncio.ensure_future(consume_inside_except(exe, method, job))
            await asyncio.wait([consumer])
            await exe.shutdown()
    job.assert_unchanged(info.value)
    job.assert_unchanged(await consumer)


@pytest.mark.parametrize("settled", list(SETTLED))
@pytest.mark.parametrize("how", CHAINS)
@pytest.mark.parametrize("method", METHODS)
async def test_a_map_consumer_inside_an_except_raises_the_chain_under_suppress(
    loop_kind: str, method: str, how: str, settled: str
) -> None:
    """suppress_task_errors=True: the map's own raise of its job's error, inside the
    consumer's ``except`` clause, keeps the chain the job left."""
    job = ChainedJob(how)
    async with CoroutineExecutor(suppress_task_errors=True, **SETTLED[settled]) as exe:
        job.assert_unchanged(await consume_inside_except(exe, method, job))


@pytest.mark.parametrize("settled", list(SETTLED))
@pytest.mark.parametrize("how", CHAINS)
@pytest.mark.parametrize("method", METHODS)
async def test_a_map_with_return_exceptions_yields_the_chain_inside_an_except(
    loop_kind: str, method: str, how: str, settled: str
) -> None:
    """return_exceptions=True: the error a map yields to a consumer inside an ``except``
    clause is chained as its job left it, with the job's own traceback, as
    asyncio.gather's are (it got the clause's exception as its __context__, and the
    map's frame: found by a docs-only tester)."""
    job = ChainedJob(how)
    async with CoroutineExecutor(**SETTLED[settled]) as exe:
        try:
            raise OSError("the consumer's own handled error")
        except OSError:
            results = [r async for r in getattr(exe, method)(job, [0], return_exceptions=True)]
    assert len(results) == 1
    job.assert_unchanged(results[0])
    tb = results[0].__traceback__
    while tb is not None:  # nothing of the map's in it: as the job's task ended
        assert "_map_run" not in tb.tb_frame.f_code.co_filename
        tb = tb.tb_next


#
# A task awaiting the job's task
#


@pytest.mark.parametrize("owner", ["block", "shutdown"])
@pytest.mark.parametrize("settled", list(SETTLED))
@pytest.mark.parametrize("how", CHAINS)
async def test_a_task_awaiting_the_job_inside_an_except_leaves_the_chain_to_the_block(
    loop_kind: str, how: str, settled: str, owner: str
) -> None:
    """A helper task awaits the failed job's task inside an ``except`` clause, which sets
    the error's context; the block (or shutdown()) raises it later as the job left it."""
    job = ChainedJob(how)
    go = asyncio.Event()
    exe = CoroutineExecutor(**SETTLED[settled])
    with pytest.raises(RuntimeError) as info:
        if owner == "block":
            async with exe:
                task = await exe.submit(job, None, go)
                helper = asyncio.ensure_future(await_inside_except(task, go))
                await asyncio.Event().wait()  # interrupted by fail-fast
        else:
            task = await exe.submit(job, None, go)
            helper = asyncio.ensure_future(await_inside_except(task, go))
            await asyncio.wait([helper])
            await exe.shutdown()
    job.assert_unchanged(info.value)
    assert await helper is info.value


#
# An error whose class refuses assignments
#


@pytest.mark.parametrize("where", ["map", "map suppressed", "awaited"])
async def test_an_error_that_refuses_assignments_keeps_its_chain_too(
    loop_kind: str, where: str
) -> None:
    """A frozen dataclass error: its chain is put back through BaseException's own
    descriptors, and it is raised itself, with no chain, everywhere."""
    go = asyncio.Event()
    if where == "map suppressed":
        async with CoroutineExecutor(suppress_task_errors=True) as exe:
            raised = await consume_inside_except(exe, "map", frozen_failure)
        assert isinstance(raised, FrozenError) and raised.__context__ is None
        return
    with pytest.raises(FrozenError) as info:
        async with CoroutineExecutor() as exe:
            if where == "map":
                helper = asyncio.ensure_future(consume_inside_except(exe, "map", frozen_failure))
            else:
                task = await exe.submit(frozen_failure, None, go)
                helper = asyncio.ensure_future(await_inside_except(task, go))
            await asyncio.Event().wait()  # interrupted by fail-fast
    assert info.value.user == "alice"
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert not info.value.__suppress_context__
    assert await helper is info.value
