"""max_workers=Adaptive(...) with retry=: a job is fed to the limiter once, when it ends,
with its latency from its first attempt's start to its end, pauses included (semantics.rst,
"Adaptive concurrency"), on both executors.

A virtual clock moves only when an attempt moves it: the first attempt takes 5 s and
fails, the second takes 2 s and succeeds, so the job's latency is 7 s (2 s would be the
last attempt's alone).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coroexecutor import Adaptive, CoroutineExecutor, LoopExecutor
from coroexecutor._limiter import AdaptiveLimit

pytestmark = pytest.mark.timeout(60)

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure
FIRST, SECOND = 5.0, 2.0  # the virtual seconds each attempt takes


class Flaky:
    """A job's two attempts, on a virtual clock: the first fails, the second succeeds."""

    def __init__(self) -> None:
        self.now = 0.0
        self.attempts = 0

    def clock(self) -> float:
        return self.now

    def step(self) -> str:
        self.attempts += 1
        if self.attempts == 1:
            self.now += FIRST
            raise ConnectionResetError("first attempt")
        self.now += SECOND
        return "done"

    def blocking(self) -> str:
        return self.step()

    async def coroutine(self) -> str:
        await asyncio.sleep(0)
        return self.step()


def once_more(attempt: int, exc: BaseException) -> float | None:
    return 0.0 if attempt == 1 else None


@pytest.fixture
def fed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, BaseException | None]]:
    """The (latency, error) of every job the limiters are fed."""
    seen: list[tuple[float, BaseException | None]] = []
    on_done = AdaptiveLimit.on_done

    def spy(self: AdaptiveLimit, latency: float, error: Any = None, *args: Any) -> int:
        seen.append((latency, error))
        return on_done(self, latency, error, *args)

    monkeypatch.setattr(AdaptiveLimit, "on_done", spy)
    return seen


async def test_core_feeds_a_retried_job_once_with_its_whole_latency(
    fed: list[tuple[float, BaseException | None]],
) -> None:
    flaky = Flaky()
    async with CoroutineExecutor(max_workers=Adaptive(min=1, max=4), retry=once_more) as exe:
        assert exe._tuner is not None
        exe._tuner.clock = flaky.clock
        task = await exe.submit(flaky.coroutine)
        assert await task == "done"
    assert flaky.attempts == 2
    assert exe.stats.retried == 1
    assert fed == [(FIRST + SECOND, None)]


@pytest.mark.parametrize("kind", ["blocking", "coroutine"])
def test_bridge_feeds_a_retried_job_once_with_its_whole_latency(
    fed: list[tuple[float, BaseException | None]], kind: str
) -> None:
    flaky = Flaky()
    with LoopExecutor(max_workers=Adaptive(min=1, max=4), retry=once_more) as exe:
        tuner = exe._handoff._slots.tuner
        assert tuner is not None
        tuner._tuner.clock = flaky.clock
        assert exe.submit(getattr(flaky, kind)).result(timeout=WAIT) == "done"
    # After the block: a job is fed as its slot is freed, just after its future resolves.
    assert flaky.attempts == 2
    assert exe.stats.retried == 1
    assert fed == [(FIRST + SECOND, None)]
