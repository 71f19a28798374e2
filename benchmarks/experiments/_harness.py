"""Interleaved in-process timing shared by the experiments."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from typing import Any, Callable


def compare(variants: dict[str, Callable[[], Any]], reps: int, check: Callable[[], int],
            expected: int, new_loop: Callable[[], asyncio.AbstractEventLoop] | None = None,
            collect: bool = True) -> dict[str, list[float]]:
    """Run every variant `reps` times in rotated order, each in a fresh event loop
    (``new_loop``, default asyncio's). ``collect=False`` turns the cyclic garbage
    collector off while a variant runs."""
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            loop = (new_loop or asyncio.new_event_loop)()
            gc.collect()
            if not collect:
                gc.disable()
            try:
                start = time.perf_counter()
                loop.run_until_complete(variants[name]())
                times[name].append(time.perf_counter() - start)
            finally:
                gc.enable()
                loop.close()
            if check() != expected:
                raise AssertionError(f"{name}: {check()} jobs completed, expected {expected}")
    return times


def print_table(times: dict[str, list[float]], base: str, per: int, inverse: bool = False) -> None:
    """Median µs per job and the median paired ratio to `base` (time ratio, or speed with
    inverse=True), with its range."""
    for name, ts in times.items():
        if inverse:
            ratios = sorted(b / t for t, b in zip(ts, times[base]))
            what = "speed"
        else:
            ratios = sorted(t / b for t, b in zip(ts, times[base]))
            what = "time"
        print(f"  {name:44s} {statistics.median(ts) * 1e6 / per:6.2f} us/job   {what} vs"
              f" {base}: {statistics.median(ratios):.3f} [{ratios[0]:.3f}-{ratios[-1]:.3f}]")
