"""Whole numbers too large for a float, at every public numeric parameter.

An int such as ``10**400`` is a valid int but no float: every time, rate, burst and
Adaptive bound becomes a float somewhere (a deadline, the token bucket, the adaptive
limit), where it raised OverflowError, for ``burst=`` and ``Adaptive(...)`` not even at
the call that passed it. It is refused at that call as ``math.inf`` is, with the same
ValueError ("must be a finite number"). Counts that stay ints (``max_workers``,
``max_per_key``, ``buffersize``, ``attempts``) are accepted and work.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable

import pytest

from coroexecutor import Adaptive, CoroutineExecutor, LoopExecutor, Retry

HUGE = 10**400  # larger than any float: float(HUGE) raises OverflowError
SHOWN = "(got 100000000000000000...0000000000000000000)"  # its repr, shortened


async def echo(n: int) -> int:
    await asyncio.sleep(0)
    return n


def _set(obj: object, name: str) -> Callable[[], object]:
    return lambda: setattr(obj, name, HUGE)


def _core_setter(name: str, *, max_per_second: float | None = None) -> Callable[[], object]:
    return _set(CoroutineExecutor(max_per_second=max_per_second), name)


def _bridge_setter(name: str) -> Callable[[], object]:
    bridge = LoopExecutor(max_per_second=1)  # (shut down at the end of the test)
    _BRIDGES.append(bridge)
    return _set(bridge, name)


def _dask(**options: object) -> Callable[[], object]:
    if sys.version_info < (3, 10):
        pytest.skip("DaskExecutor needs Python 3.10 or newer (dask.distributed does)")
    pytest.importorskip(
        "distributed", reason='dask.distributed is not installed (pip install "coroexecutor[dask]")'
    )
    from coroexecutor import distributed
    # Checked before any connection is made: no cluster starts for these.
    return lambda: distributed.DaskExecutor(**options)


_BRIDGES: list[LoopExecutor] = []

# (the call, the parameter its message names); every one of them got an OverflowError.
CALLS: dict[str, tuple[Callable[[], Callable[[], object]], str]] = {
    "CoroutineExecutor(timeout=)": (lambda: lambda: CoroutineExecutor(timeout=HUGE), "timeout"),
    "CoroutineExecutor(job_timeout=)": (
        lambda: lambda: CoroutineExecutor(job_timeout=HUGE), "job_timeout"
    ),
    "CoroutineExecutor(max_per_second=)": (
        lambda: lambda: CoroutineExecutor(max_per_second=HUGE), "max_per_second"
    ),
    "CoroutineExecutor(burst=)": (
        lambda: lambda: CoroutineExecutor(max_per_second=1, burst=HUGE), "burst"
    ),
    "CoroutineExecutor.max_per_second =": (
        lambda: _core_setter("max_per_second"), "max_per_second"
    ),
    "CoroutineExecutor.burst =": (lambda: _core_setter("burst", max_per_second=1), "burst"),
    "Retry(backoff=)": (lambda: lambda: Retry(backoff=HUGE, max_backoff=HUGE), "backoff"),
    "Retry(max_backoff=)": (lambda: lambda: Retry(max_backoff=HUGE), "max_backoff"),
    "Adaptive(min=)": (lambda: lambda: Adaptive(min=HUGE, max=HUGE), "min"),
    "Adaptive(max=)": (lambda: lambda: Adaptive(min=1, max=HUGE), "max"),
    "Adaptive(initial=)": (lambda: lambda: Adaptive(min=1, max=HUGE, initial=HUGE), "max"),
    "LoopExecutor(max_per_second=)": (
        lambda: lambda: LoopExecutor(max_per_second=HUGE), "max_per_second"
    ),
    "LoopExecutor(burst=)": (lambda: lambda: LoopExecutor(max_per_second=1, burst=HUGE), "burst"),
    "LoopExecutor(job_timeout=)": (lambda: lambda: LoopExecutor(job_timeout=HUGE), "job_timeout"),
    "LoopExecutor.max_per_second =": (lambda: _bridge_setter("max_per_second"), "max_per_second"),
    "LoopExecutor.burst =": (lambda: _bridge_setter("burst"), "burst"),
    "DaskExecutor(job_timeout=)": (lambda: _dask(job_timeout=HUGE), "job_timeout"),
    "DaskExecutor(max_per_second=)": (lambda: _dask(max_per_second=HUGE), "max_per_second"),
    "DaskExecutor(burst=)": (lambda: _dask(max_per_second=1, burst=HUGE), "burst"),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_an_int_too_large_for_a_float_is_refused_at_its_call(call: str) -> None:
    make, name = CALLS[call]
    try:
        attempt = make()
        with pytest.raises(ValueError, match=re.escape(f"{name} must be a finite number {SHOWN}")):
            attempt()
    finally:
        while _BRIDGES:
            _BRIDGES.pop().shutdown()


async def test_a_huge_shutdown_timeout_is_refused_at_the_call() -> None:
    exe = CoroutineExecutor()
    async with exe:
        await exe.submit(echo, 1)
        with pytest.raises(ValueError, match=re.escape(f"timeout must be a finite number {SHOWN}")):
            await exe.shutdown(timeout=HUGE)


def test_a_huge_bridge_shutdown_timeout_is_refused_at_the_call() -> None:
    bridge = LoopExecutor()
    try:
        with pytest.raises(ValueError, match=re.escape(f"timeout must be a finite number {SHOWN}")):
            bridge.shutdown(timeout=HUGE)
    finally:
        bridge.shutdown()


async def test_huge_counts_that_stay_ints_are_accepted_and_work() -> None:
    async with CoroutineExecutor(HUGE, key=str, max_per_key=HUGE) as exe:
        assert [r async for r in exe.map(echo, range(3), buffersize=HUGE)] == [0, 1, 2]
        exe.max_workers = HUGE
        assert await (await exe.submit(echo, 3)) == 3
    assert Retry(attempts=HUGE).attempts == HUGE
    with LoopExecutor(HUGE, key=str, max_per_key=HUGE) as bridge:
        bridge.max_workers = HUGE
        assert bridge.submit(echo, 4).result(timeout=5) == 4
        # islice() refused it ("must be ... <= sys.maxsize"), as 3.14's Executor.map does.
        assert list(bridge.map(echo, range(3), buffersize=HUGE)) == [0, 1, 2]
        assert list(bridge.map(echo, range(3), buffersize=HUGE, retry=Retry())) == [0, 1, 2]
