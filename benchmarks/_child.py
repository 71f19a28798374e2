"""Run one contender once, in this (fresh) process, and print one JSON line.

Usage: ``python -m benchmarks._child '<json spec>'`` where the spec holds ``workload``,
``contender``, ``loop`` ("asyncio" or "uvloop"), ``n``, ``workers`` and ``measure``
("time", "rss" or "tracemalloc"). ``python -m benchmarks._child --probe`` prints which
contenders can be imported here.

The child exits non-zero, with the reason on stderr, when the contender's job count is
not ``n``: a benchmark that lost or duplicated jobs must not produce a number.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import resource
import sys
import time
from typing import Any

from . import _contenders

__all__ = ["measure", "probe"]


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if kind != "asyncio":
        raise ValueError(f"loop must be 'asyncio' or 'uvloop' (got {kind!r})")
    return asyncio.new_event_loop()


def _run_async(contender: _contenders.Contender, loop_kind: str, n: int, workers: int,
               tracer: Any) -> tuple[float, int]:
    loop = _new_loop(loop_kind)
    try:
        asyncio.set_event_loop(loop)

        async def timed() -> tuple[float, int]:
            if tracer is not None:
                tracer.start()
            start = time.perf_counter()
            count = await contender.run(n, workers)
            return time.perf_counter() - start, count

        result = loop.run_until_complete(timed())
        loop.run_until_complete(loop.shutdown_asyncgens())
        return result
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the contender the spec names once; return its time, count and memory."""
    if spec["workload"] == "paired":
        from . import _paired

        return _paired.measure(spec)
    workload, key = spec["workload"], spec["contender"]
    n, workers = int(spec["n"]), int(spec["workers"])
    what = spec.get("measure", "time")
    loop_kind = spec.get("loop", "asyncio")
    contender = _contenders.find(workload, key)
    is_async = asyncio.iscoroutinefunction(contender.run)
    tracer = None
    if what == "tracemalloc":
        import tracemalloc

        tracer = tracemalloc
    if spec.get("warmup", True):
        # A small run first, so lazy imports and first-call costs are neither timed nor
        # traced: importing a library (about 3 MiB of Python objects for coroexecutor) is
        # not what its jobs cost, and the wrapper forms import nothing.
        _contenders.reset()
        if is_async:
            _run_async(contender, loop_kind, min(n, 2000), workers, None)
        else:
            contender.run(min(n, 200), workers)
    _contenders.reset()
    gc.collect()
    rss_before = _rss_kib()
    if is_async:
        seconds, count = _run_async(contender, loop_kind, n, workers, tracer)
    else:
        start = time.perf_counter()
        count = contender.run(n, workers)
        seconds = time.perf_counter() - start
    result: dict[str, Any] = {**spec, "seconds": seconds, "count": count}
    if is_async and count != _contenders.completed():
        raise AssertionError(
            f"{workload}/{key}: returned {count} but {_contenders.completed()} jobs ran"
        )
    if tracer is not None:
        result["trace_peak"] = tracer.get_traced_memory()[1]
        tracer.stop()
    result["rss_before_kib"] = rss_before
    # The kernel's high-water mark can trail the current RSS by a few pages: take the larger.
    result["rss_peak_kib"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _rss_kib())
    if count != n:
        raise AssertionError(f"{workload}/{key}: {count} jobs completed, expected {n}")
    return result


def probe() -> dict[str, str]:
    """Map of module name -> "" if importable here, else the error."""
    modules = {m for cs in _contenders.WORKLOADS.values() for c in cs for m in c.needs}
    modules.add("uvloop")
    status = {}
    for module in sorted(modules):
        try:
            importlib.import_module(module)
            status[module] = ""
        except Exception as exc:  # any import failure only skips that contender
            status[module] = f"{type(exc).__name__}: {exc}"
    return status


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        print(json.dumps(probe()))
        return 0
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(json.dumps(measure(json.loads(argv[0]))))
    except AssertionError as exc:
        print(f"JOB COUNT CHECK FAILED: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
