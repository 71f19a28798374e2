"""``python -m benchmarks.keyed_memory [--jobs N] [--keys K]``: memory over many keys.

Per-key limits keep state only for keys with a job running or waiting (issue 20): a crawl
over a million hosts must not grow memory per host ever seen. This runs ``--jobs`` jobs
(default 1,000,000) over ``--keys`` keys (default 100,000; each key's jobs spread over
the run, so every key becomes active and idle again many times) through one keyed
``map()``, and prints the tracemalloc peak of each tenth of the run: flat means the
executor's memory depends on the jobs in flight, not on the jobs run or keys seen.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import tracemalloc

from coroexecutor import CoroutineExecutor

WORKERS = 100
BUFFERSIZE = 200
MAX_PER_KEY = 2


async def job(key: int) -> None:
    await asyncio.sleep(0)


async def run(jobs: int, keys: int) -> list[tuple[int, int, int]]:
    """(jobs done, traced bytes now, peak bytes over the last tenth) per tenth of the run."""
    rows: list[tuple[int, int, int]] = []
    tenth = max(jobs // 10, 1)
    async with CoroutineExecutor(WORKERS, key=lambda k: k, max_per_key=MAX_PER_KEY) as exe:
        done = 0
        tracemalloc.reset_peak()
        async for _ in exe.map(job, (i % keys for i in range(jobs)), buffersize=BUFFERSIZE):
            done += 1
            if done % tenth == 0:
                current, peak = tracemalloc.get_traced_memory()
                rows.append((done, current, peak))
                tracemalloc.reset_peak()
        stats = exe.stats
    assert stats.succeeded == jobs, stats
    assert stats.active_keys == 0, stats
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keyed_memory")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args(argv)
    tracemalloc.start()
    started = time.perf_counter()
    rows = asyncio.run(run(args.jobs, args.keys))
    seconds = time.perf_counter() - started
    print(f"{args.jobs:,} jobs over {args.keys:,} keys, max_workers={WORKERS},"
          f" max_per_key={MAX_PER_KEY}, buffersize={BUFFERSIZE} ({seconds:.0f} s under"
          " tracemalloc)")
    print(f"{'jobs done':>12}  {'traced now (KiB)':>16}  {'peak in this tenth (KiB)':>24}")
    for done, current, peak in rows:
        print(f"{done:>12,}  {current / 1024:>16,.0f}  {peak / 1024:>24,.0f}")
    peaks = [peak for _, _, peak in rows[1:]]  # the first tenth includes first-use costs
    if peaks:
        print(f"peak growth from the 2nd tenth to the last: {peaks[-1] / peaks[0]:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
