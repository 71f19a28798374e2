"""The demo: ``python -m coroexecutor`` pushes simulated I/O jobs through the executor."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from . import CoroutineExecutor, LoopExecutor, __version__


class Progress:
    """A live one-line progress display (a plain line every second when not a terminal)."""

    def __init__(self, label: str, total: int, out: TextIO, enabled: bool) -> None:
        self.label = label
        self.total = total
        self.out = out
        self.enabled = enabled
        self.live = out.isatty()
        self._last = 0.0

    def show(self, exe: CoroutineExecutor, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and not self.live and now - self._last < 1.0:
            return
        self._last = now
        s = exe.stats
        line = (
            f"{self.label}: {s.done:>6}/{self.total} done  running {s.running:>4}"
            f"/{exe.max_workers}  ok {s.succeeded}  failed {s.failed}  cancelled {s.cancelled}"
        )
        if self.live:
            self.out.write("\r" + line.ljust(100) + ("\n" if final else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()


async def fake_io(rng: random.Random, fail_rate: float = 0.0) -> float:
    """A simulated network call: waits 1-20 ms, sometimes fails.

    Both are drawn before the wait, in the order the jobs start, so which jobs fail does
    not depend on which timers fire first: the seed alone decides it.
    """
    delay = rng.uniform(0.001, 0.02)
    fails = rng.random() < fail_rate
    await asyncio.sleep(delay)
    if fails:
        raise ConnectionError("simulated upstream error")
    return delay


async def fake_io_turns(turns: int) -> int:
    """Simulated I/O that lasts a number of event-loop turns instead of milliseconds:
    which jobs finish before which then depends only on the numbers drawn."""
    for _ in range(turns):
        await asyncio.sleep(0)
    return turns


async def ticker(exe: CoroutineExecutor, progress: Progress) -> None:
    while True:
        progress.show(exe)
        await asyncio.sleep(0.1)


async def back_pressure(args: argparse.Namespace, rng: random.Random, out: TextIO) -> None:
    out.write(f"\n1. Back-pressure: {args.jobs} jobs through max_workers={args.workers}\n")
    peak = running = 0
    waits = 0

    async def job() -> float:
        nonlocal peak, running
        running += 1
        peak = max(peak, running)
        try:
            return await fake_io(rng)
        finally:
            running -= 1

    progress = Progress("   submit", args.jobs, out, args.progress)
    started = time.perf_counter()
    async with CoroutineExecutor(max_workers=args.workers) as exe:
        tick = asyncio.ensure_future(ticker(exe, progress))
        for _ in range(args.jobs):
            if exe.stats.running >= exe.max_workers:
                waits += 1  # this submit will wait for a free slot
            await exe.submit(job)
        tick.cancel()
    progress.show(exe, final=True)
    elapsed = time.perf_counter() - started
    out.write(
        f"   peak concurrency {peak} (limit {args.workers}); the producer waited for a slot"
        f" {waits} times; {args.jobs / elapsed:,.0f} jobs/s\n"
    )


async def fail_fast(args: argparse.Namespace, rng: random.Random, out: TextIO) -> None:
    bad = args.jobs // 3
    out.write(f"\n2. Fail-fast (the default): job #{bad} raises\n")

    async def job(i: int, turns: int) -> int:
        if i == bad:
            raise ValueError(f"job #{i} failed")
        return await fake_io_turns(turns)

    # Jobs last 1-20 loop turns (drawn here, in submit order), not real time: with no
    # timer involved, the counts below are the same on every run with the same --seed.
    submitted = 0
    exe = CoroutineExecutor(max_workers=args.workers)
    try:
        async with exe:
            for i in range(args.jobs):
                await exe.submit(job, i, rng.randint(1, 20))
                submitted += 1
    except ValueError as exc:
        s = exe.stats
        out.write(
            f"   the block raised {exc!r} at once: the producer stopped after {submitted}"
            f" of {args.jobs} submits, {s.cancelled} running jobs were cancelled,"
            f" {s.succeeded} had finished\n"
        )


async def absorb(args: argparse.Namespace, rng: random.Random, out: TextIO) -> None:
    out.write(f"\n3. suppress_task_errors=True: {args.fail_rate:.0%} of jobs fail, all run\n")
    progress = Progress("   absorb", args.jobs, out, args.progress)
    async with CoroutineExecutor(max_workers=args.workers, suppress_task_errors=True) as exe:
        tick = asyncio.ensure_future(ticker(exe, progress))
        async for result in exe.map(
            lambda _: fake_io(rng, args.fail_rate), range(args.jobs), return_exceptions=True
        ):
            del result  # each failure arrives here as a value, in input order
        tick.cancel()
    progress.show(exe, final=True)
    s = exe.stats
    out.write(f"   {s.succeeded} succeeded, {s.failed} failed; none was cancelled\n")


def sync_bridge(args: argparse.Namespace, rng: random.Random, out: TextIO) -> None:
    count = min(args.jobs, 500)
    out.write(f"\n4. From plain sync code: LoopExecutor runs {count} coroutine jobs\n")
    with LoopExecutor(max_workers=args.workers) as exe:
        futures = [exe.submit(fake_io, random.Random(rng.random())) for _ in range(count)]
        total = sum(f.result() for f in futures)
    out.write(f"   {count} concurrent.futures.Future results, {total:.2f} s of simulated I/O\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m coroexecutor",
        description=(
            "Demo of coroexecutor: simulated I/O jobs (no network) with back-pressure,"
            " fail-fast, absorbed errors and the sync bridge."
        ),
    )
    parser.add_argument(
        "--jobs", type=int, default=3000, help="jobs per scenario; at most 500 in scenario 4 (3000)"
    )
    parser.add_argument("--workers", type=int, default=200, help="max_workers (200)")
    parser.add_argument(
        "--fail-rate", type=float, default=0.05, help="failure rate in scenario 3 (0.05)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=2022,
        help=(
            "seed of the simulated I/O (2022): with the same seed and options, scenarios 2"
            " and 3 report the same counts on every run; scenario 1's figures depend on timing"
        ),
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no live progress line"
    )
    parser.add_argument("--version", action="version", version=f"coroexecutor {__version__}")
    args = parser.parse_args(argv)
    if args.jobs < 3:
        parser.error("--jobs must be at least 3")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not 0.0 <= args.fail_rate <= 1.0:
        parser.error("--fail-rate must be between 0 and 1")
    return args


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    out.write(f"coroexecutor {__version__} demo (Python {sys.version.split()[0]})\n")
    started = time.perf_counter()

    async def scenarios() -> None:
        await back_pressure(args, rng, out)
        await fail_fast(args, rng, out)
        await absorb(args, rng, out)

    asyncio.run(scenarios())
    sync_bridge(args, rng, out)
    out.write(f"\nAll scenarios done in {time.perf_counter() - started:.1f} s.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
