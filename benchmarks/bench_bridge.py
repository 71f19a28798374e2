"""Benchmark the sync bridge against the hand-rolled and stdlib baselines.

Run as ``python benchmarks/bench_bridge.py [--quick]`` (or ``python -m
benchmarks.bench_bridge``); prints one table. Each workload measures both sides in the
same run, interleaved (A, B, A, B, ...), and reports medians and the median of the
per-round ratios, so a noisy neighbour slows both sides alike.

Workloads (targets from issue 3):

* throughput: 100,000 no-op coroutine jobs submitted from a plain thread, then all
  waited for; ThreadedLoopExecutor vs ``asyncio.run_coroutine_threadsafe`` onto a loop
  running in a thread. Target: at least 2x the baseline's throughput.
* round trip: ``exe.submit(noop).result()``, median of 20,000 calls, vs
  ``run_coroutine_threadsafe(noop(), loop).result()``. Target: at most 1.1x the latency.
* blocking: 2,000 ``time.sleep(0.001)`` jobs with ``max_workers=32`` vs
  ``ThreadPoolExecutor(32)``. Target: within 10% of its wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coroexecutor import ThreadedLoopExecutor

__all__ = ["main", "run"]


async def noop() -> None:
    return None


def sleep_1ms() -> None:
    time.sleep(0.001)


@contextmanager
def loop_in_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """The hand-rolled baseline: an event loop running forever in a thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def body() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=body, name="baseline_loop")
    thread.start()
    ready.wait()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


#
# The three workloads, one side each; every function returns seconds
#


def throughput_bridge(n: int) -> float:
    with ThreadedLoopExecutor() as exe:
        exe.submit(noop).result()  # the loop thread is up and warm
        start = time.perf_counter()
        futures = [exe.submit(noop) for _ in range(n)]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    assert all(f.done() and not f.exception() for f in futures)
    return elapsed


def throughput_baseline(n: int) -> float:
    with loop_in_thread() as loop:
        asyncio.run_coroutine_threadsafe(noop(), loop).result()
        start = time.perf_counter()
        futures = [asyncio.run_coroutine_threadsafe(noop(), loop) for _ in range(n)]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    assert all(f.done() and not f.exception() for f in futures)
    return elapsed


def round_trip_bridge(n: int) -> float:
    samples = []
    with ThreadedLoopExecutor() as exe:
        exe.submit(noop).result()
        clock = time.perf_counter
        for _ in range(n):
            start = clock()
            exe.submit(noop).result()
            samples.append(clock() - start)
    return statistics.median(samples)


def round_trip_baseline(n: int) -> float:
    samples = []
    with loop_in_thread() as loop:
        asyncio.run_coroutine_threadsafe(noop(), loop).result()
        clock = time.perf_counter
        for _ in range(n):
            start = clock()
            asyncio.run_coroutine_threadsafe(noop(), loop).result()
            samples.append(clock() - start)
    return statistics.median(samples)


def blocking_bridge(n: int) -> float:
    # Timed from the first submit until every job is done: both executors start their
    # worker threads on demand inside that window; constructing and joining are not timed.
    with ThreadedLoopExecutor(max_workers=32) as exe:
        start = time.perf_counter()
        futures = [exe.submit(sleep_1ms) for _ in range(n)]
        concurrent.futures.wait(futures)
        elapsed = time.perf_counter() - start
    assert all(f.done() and not f.exception() for f in futures)
    return elapsed


def blocking_baseline(n: int) -> float:
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as exe:
        start = time.perf_counter()
        futures = [exe.submit(sleep_1ms) for _ in range(n)]
        concurrent.futures.wait(futures)
        elapsed = time.perf_counter() - start
    assert all(f.done() and not f.exception() for f in futures)
    return elapsed


#
# Interleaved measurement
#


def _interleaved(
    ours: Callable[[int], float], theirs: Callable[[int], float], n: int, rounds: int
) -> tuple[list[float], list[float]]:
    mine: list[float] = []
    base: list[float] = []
    for i in range(rounds):
        # Alternate who goes first, so neither side always runs on a warmer machine.
        order = [(ours, mine), (theirs, base)] if i % 2 == 0 else [(theirs, base), (ours, mine)]
        for fn, out in order:
            gc.collect()
            out.append(fn(n))
    return mine, base


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure the three workloads; one row each (the benchmark report uses this)."""
    scale = 10 if quick else 1
    rounds = 3 if quick else 7
    rows: list[dict[str, Any]] = []

    n = 100_000 // scale
    mine, base = _interleaved(throughput_bridge, throughput_baseline, n, rounds)
    ratios = [b / m for m, b in zip(mine, base)]  # throughput ratio = inverse time ratio
    rows.append(
        {
            "workload": f"throughput, {n:,} no-op coroutine jobs",
            "bridge": f"{n / statistics.median(mine):,.0f} jobs/s",
            "baseline": f"{n / statistics.median(base):,.0f} jobs/s (run_coroutine_threadsafe)",
            "ratio": round(statistics.median(ratios), 2),
            "target": ">= 2.0x throughput",
            "met": statistics.median(ratios) >= 2.0,
        }
    )

    n = 20_000 // scale
    mine, base = _interleaved(round_trip_bridge, round_trip_baseline, n, rounds)
    ratios = [m / b for m, b in zip(mine, base)]
    rows.append(
        {
            "workload": f"round trip, median of {n:,} submit(noop).result()",
            "bridge": f"{statistics.median(mine) * 1e6:.1f} us",
            "baseline": f"{statistics.median(base) * 1e6:.1f} us (run_coroutine_threadsafe)",
            "ratio": round(statistics.median(ratios), 2),
            "target": "<= 1.1x latency",
            "met": statistics.median(ratios) <= 1.1,
        }
    )

    n = 2_000 // scale
    mine, base = _interleaved(blocking_bridge, blocking_baseline, n, rounds)
    ratios = [m / b for m, b in zip(mine, base)]
    rows.append(
        {
            "workload": f"blocking, {n:,} sleep(0.001) jobs, max_workers=32",
            "bridge": f"{statistics.median(mine) * 1e3:.1f} ms",
            "baseline": f"{statistics.median(base) * 1e3:.1f} ms (ThreadPoolExecutor(32))",
            "ratio": round(statistics.median(ratios), 2),
            "target": "<= 1.1x wall time",
            "met": statistics.median(ratios) <= 1.1,
        }
    )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    columns = ["workload", "bridge", "baseline", "ratio", "target", "met"]
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the jobs, 3 rounds")
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of interleaved rounds")
    print(_table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
