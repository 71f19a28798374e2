"""How much of the per-job time is the cyclic garbage collector, per design.

``python -m benchmarks.experiments.gctime [max_workers] [rounds] [asyncio|uvloop]``:
200,000 no-op jobs; every variant runs in a fresh child process, rounds interleaved.
Prints the median µs per job, the part of it spent in collections of each generation
(timed with ``gc.callbacks``), the number of full collections, and the time relative to
the Semaphore wrapper form.

The variant "job coroutine made at submit" is the wrapper form changed in one respect:
the job's coroutine is created when the job is submitted, as ``submit`` must do (so that
a function that raises or returns no awaitable is reported by ``submit``), instead of
when its task first runs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from .. import _contenders as C
from .._child import _new_loop
from . import map_floor

N = 200_000


async def wrapper_eager_coroutine(n: int, workers: int) -> int:
    sem = asyncio.Semaphore(workers)
    create_task = asyncio.get_running_loop().create_task
    acquire, release = sem.acquire, sem.release

    async def guarded(coro: Any) -> None:
        try:
            await coro
        finally:
            release()

    for i in range(n):
        await acquire()
        create_task(guarded(C.job(i)))
    for _ in range(workers):
        await acquire()
    return C._done


VARIANTS: dict[str, Callable[[int, int], Any]] = {
    "Semaphore, wrapper form": C.semaphore_wrapper,
    "the same, job coroutine made at submit": wrapper_eager_coroutine,
    "coroexecutor submit": C.ours_submit,
    "coroexecutor map": C.ours_map,
    "coroexecutor submit, retry=Retry()": C.ours_submit_retry,
    "coroexecutor map, retry=Retry()": C.ours_map_retry,
    "coroexecutor submit, key=": C.ours_submit_keyed,
    "coroexecutor map, key=": C.ours_map_keyed,
    **map_floor.VARIANTS,  # what an ordered async-for map costs before any executor
}


def child(name: str, workers: int, loop_kind: str) -> dict[str, Any]:
    """Run one variant once in this process; its time and its collections."""
    spent = [0.0, 0.0, 0.0]
    counts = [0, 0, 0]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[info["generation"]] += time.perf_counter() - started[0]
            counts[info["generation"]] += 1

    loop = _new_loop(loop_kind)
    try:
        C.reset()
        loop.run_until_complete(VARIANTS[name](2_000, workers))  # warm-up
        C.reset()
        gc.collect()
        gc.callbacks.append(on_gc)
        start = time.perf_counter()
        done = loop.run_until_complete(VARIANTS[name](N, workers))
        elapsed = time.perf_counter() - start
        gc.callbacks.remove(on_gc)
    finally:
        loop.close()
    if done != N:
        raise AssertionError(f"{name}: {done} jobs completed, expected {N}")
    return {"seconds": elapsed, "gc_seconds": spent, "gc_counts": counts}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
        return
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    loop_kind = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    names = list(VARIANTS)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out = subprocess.run(
                [sys.executable, "-m", __spec__.name, "--child", name, str(workers), loop_kind],
                capture_output=True, text=True, check=True,
            )
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = [run["seconds"] for run in runs[names[0]]]
    print(f"Python {sys.version.split()[0]}, {loop_kind}, {N:,} no-op jobs,"
          f" max_workers={workers:,}, median of {rounds} child runs (µs per job)")
    print(f"  {'variant':40s} {'total':>6s} {'gen 0':>6s} {'gen 1':>6s} {'gen 2':>6s}"
          f" {'full GCs':>8s}  time vs wrapper form")
    for name in names:
        rows = runs[name]
        per_job = [run["seconds"] * 1e6 / N for run in rows]
        gen = [statistics.median(run["gc_seconds"][g] * 1e6 / N for run in rows)
               for g in range(3)]
        full = statistics.median(run["gc_counts"][2] for run in rows)
        ratio = statistics.median(run["seconds"] / b for run, b in zip(rows, base))
        print(f"  {name:40s} {statistics.median(per_job):6.2f} {gen[0]:6.2f} {gen[1]:6.2f}"
              f" {gen[2]:6.2f} {full:8.0f}  {ratio:.3f}")


if __name__ == "__main__":
    main()
