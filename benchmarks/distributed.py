"""``python -m benchmarks.distributed [--jobs N]``: the scale-out workload of issue 21.

One run measures, side by side on the same machine and in the same minutes:

* ``LoopExecutor(max_workers=500)``: one loop on one core, the baseline;
* ``DaskExecutor(per_worker=500)`` on a LocalCluster of two worker processes;
* aiomultiprocess ``Pool(processes=2, childconcurrency=500)``, when installed;

on two workloads of 20,000 jobs: *mixed* (``await asyncio.sleep(0.001)`` plus about
200 µs of pure-Python work) and *pure I/O* (``await asyncio.sleep(0.01)``). Throughput is
jobs per wall-clock second; CPU per job adds this process's CPU time and that of every
child process (the workers, the pool's processes). Then the client and scheduler CPU per
item of a DaskExecutor map (this process: the LocalCluster's scheduler runs here) against
naive ``client.map``, a chunk-size sweep, and the time until a 2-worker LocalCluster is
ready. The table printed at the end is the one in docs/distributed.rst.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import psutil

from coroexecutor import LoopExecutor
from coroexecutor.distributed import DaskExecutor

PER_WORKER = 500
PROCESSES = 2
_SPIN = 5600  # iterations of pure-Python work: about 200 µs on the machine the docs quote


def _work() -> int:
    total = 0
    for i in range(_SPIN):
        total += i * i % 7
    return total


async def mixed(x: int) -> int:
    await asyncio.sleep(0.001)
    _work()
    return x


async def pure_io(x: int) -> int:
    await asyncio.sleep(0.01)
    return x


async def trivial(x: int) -> int:
    return x


def _cpu_seconds() -> float:
    """CPU time of this process and all its live descendants."""
    me = psutil.Process()
    total: float = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:  # it exited meanwhile
            pass
    return total


@contextmanager
def _measure(into: dict[str, float]) -> Iterator[None]:
    cpu, wall = _cpu_seconds(), time.perf_counter()
    yield
    into["wall"] = time.perf_counter() - wall
    into["cpu"] = _cpu_seconds() - cpu


def run_loop(fn: Callable[[int], Any], n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with LoopExecutor(max_workers=PER_WORKER) as exe:
        list(exe.map(fn, range(200)))  # warm-up
        with _measure(out):
            assert sum(1 for _ in exe.map(fn, range(n), buffersize=2 * PER_WORKER)) == n
    return out


def run_dask(exe: DaskExecutor, fn: Callable[[int], Any], n: int,
             chunksize: int | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    with _measure(out):
        assert sum(1 for _ in exe.map(fn, range(n), chunksize=chunksize)) == n
    return out


def run_aiomultiprocess(fn: Callable[[int], Any], n: int) -> dict[str, float] | None:
    try:
        import aiomultiprocess
    except ImportError:
        return None

    async def main() -> dict[str, float]:
        out: dict[str, float] = {}
        async with aiomultiprocess.Pool(processes=PROCESSES, childconcurrency=PER_WORKER) as pool:
            await pool.map(fn, range(200))  # warm-up: the processes are up
            with _measure(out):
                results = await pool.map(fn, range(n))
            assert len(results) == n
        return out

    return asyncio.run(main())


def client_cpu_per_item(exe: DaskExecutor, n: int) -> tuple[float, float]:
    """µs of this process's CPU per item: DaskExecutor.map, then naive client.map."""
    start = time.process_time()
    assert sum(1 for _ in exe.map(trivial, range(n))) == n
    ours = (time.process_time() - start) / n * 1e6
    naive_n = min(n, 2000)
    start = time.process_time()
    futures = exe.client.map(trivial, range(naive_n), pure=False)
    exe.client.gather(futures)
    naive = (time.process_time() - start) / naive_n * 1e6
    del futures
    return ours, naive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.jobs
    print(f"{n} jobs, per_worker={PER_WORKER}, {PROCESSES} worker processes,"
          f" {os.cpu_count()} cores (shared with whatever else runs)")

    start = time.perf_counter()
    exe = DaskExecutor(per_worker=PER_WORKER, n_workers=PROCESSES)
    ready = time.perf_counter() - start
    # Rounds alternate the executors, so load from elsewhere on a shared machine lands on
    # each of them alike; the table shows medians, and each ratio is the median of the
    # per-round ratios.
    rounds: dict[tuple[str, str], list[dict[str, float]]] = {}
    with exe:
        list(exe.map(trivial, range(1000)))  # warm-up: every worker has its loop
        for _ in range(args.rounds):
            for name, fn in (("mixed", mixed), ("pure I/O", pure_io)):
                runners: list[tuple[str, Callable[[], dict[str, float] | None]]] = [
                    ("LoopExecutor(500)", functools.partial(run_loop, fn, n)),
                    ("DaskExecutor(per_worker=500)", functools.partial(run_dask, exe, fn, n)),
                    ("aiomultiprocess Pool(2, 500)",
                     functools.partial(run_aiomultiprocess, fn, n)),
                ]
                for who, run in runners:
                    m = run()
                    if m is not None:
                        rounds.setdefault((name, who), []).append(m)
        sweep = [(size, run_dask(exe, pure_io, n, size)) for size in (100, 300, 1000, 3000)]
        ours, naive = client_cpu_per_item(exe, max(n, 20_000))

    print()
    print("| workload | executor | jobs/s | vs one loop | CPU µs/job | CPU vs one loop |")
    print("|---|---|---|---|---|---|")
    for (workload, who), ms in rounds.items():
        base = rounds[(workload, "LoopExecutor(500)")]
        speed = statistics.median(b["wall"] / m["wall"] for b, m in zip(base, ms))
        cpu = statistics.median(m["cpu"] / b["cpu"] - 1 for b, m in zip(base, ms))
        wall = statistics.median(m["wall"] for m in ms)
        per_job = statistics.median(m["cpu"] for m in ms) / n * 1e6
        print(f"| {workload} | {who} | {n / wall:,.0f} | {speed:.2f}x | {per_job:,.0f}"
              f" | {cpu:+.0%} |")
    print()
    print("| chunksize (pure I/O) | jobs/s | client+scheduler+workers CPU µs/job |")
    print("|---|---|---|")
    for size, m in sweep:
        print(f"| {size:,} | {n / m['wall']:,.0f} | {m['cpu'] / n * 1e6:,.0f} |")
    print()
    print(f"client and scheduler CPU per item, default chunk size: {ours:.1f} µs;"
          f" naive client.map: {naive:,.0f} µs")
    print(f"2-worker LocalCluster ready (DaskExecutor() returned) in {ready:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
