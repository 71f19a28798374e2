"""What is refused as an ``initializer=`` (semantics.rst, "Mistakes that raise at once"):
an async generator function (a stray ``yield`` in ``async def setup()``), whose call
returns a generator that nothing would run, so the set-up was skipped without a word
while jobs ran (brk23 F2); and a coroutine object, the call passed instead of the
function, which was refused but left a "coroutine ... was never awaited" warning behind
and showed no hint (brk23 F3). An async generator returned by a plain function (a
decorator hides it) fails the initializer, so the executor is broken, not set up.
"""

from __future__ import annotations

import functools
import gc
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coroexecutor import BrokenCoroutineExecutor, CoroutineExecutor, LoopExecutor
from coroexecutor.sync_bridge import BrokenLoopExecutor

pytestmark = pytest.mark.timeout(30)

ran: list[str] = []


async def setup_by_mistake() -> AsyncIterator[None]:
    ran.append("setup")
    yield


async def setup() -> None:
    ran.append("setup")


def hidden(fn: Any) -> Any:
    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        return fn(*args)

    return call


async def job() -> str:
    return "job"


ASYNC_GENERATOR = re.escape(
    "initializer must be a plain or async function, not an async generator function"
    " (got setup_by_mistake): its body would never run"
)
COROUTINE = re.escape("initializer must be a callable or None, not a coroutine object")


@pytest.mark.parametrize("executor", [CoroutineExecutor, LoopExecutor])
def test_an_async_generator_function_is_refused_at_the_constructor(executor: Any) -> None:
    ran.clear()
    with pytest.raises(TypeError, match=ASYNC_GENERATOR):
        executor(initializer=setup_by_mistake)
    assert ran == []


@pytest.mark.parametrize("executor", [CoroutineExecutor, LoopExecutor])
def test_a_coroutine_object_is_refused_closed_with_the_hint(executor: Any) -> None:
    given = setup()
    with pytest.raises(TypeError, match=COROUTINE) as caught:
        executor(initializer=given)
    assert "right: initializer=setup, initargs=(conn,)" in str(caught.value)
    assert given.cr_frame is None  # closed: no "never awaited" warning when collected
    del given, caught
    gc.collect()  # (under the suite's -W error, a warning here would fail the test)


async def test_the_core_is_broken_by_a_hidden_async_generator(loop_kind: str) -> None:
    ran.clear()
    with pytest.raises(BrokenCoroutineExecutor) as caught:
        async with CoroutineExecutor(initializer=hidden(setup_by_mistake)) as exe:
            await exe.submit(job)
    cause = caught.value.__cause__
    assert isinstance(cause, TypeError) and re.search(ASYNC_GENERATOR, str(cause))
    assert ran == []


def test_the_bridge_is_broken_by_a_hidden_async_generator() -> None:
    ran.clear()
    with LoopExecutor(initializer=hidden(setup_by_mistake)) as exe, pytest.raises(
        BrokenLoopExecutor
    ) as caught:
        # (submit() raises it once the initializer has failed, else the future)
        exe.submit(job).result(timeout=10)
    cause = caught.value.__cause__
    assert isinstance(cause, TypeError) and re.search(ASYNC_GENERATOR, str(cause))
    assert ran == []
