"""Benchmark the sync bridge against the hand-rolled baseline, its peers and the stdlib.

Run as ``python benchmarks/bench_bridge.py [--quick]`` (or ``python -m
benchmarks.bench_bridge``); prints one table, one row per (workload, loop, contender).
Every contender of a workload is measured in the same run, interleaved: each round runs
all of them once, in an order rotated by one every round, so a noisy neighbour slows all
of them alike. Each row reports the median over the rounds and the median of the
per-round ratios against the baseline measured in the same round on the same loop kind.

Workloads (targets from issue 7):

* throughput: 100,000 no-op coroutine jobs submitted from a plain thread, then all
  waited for. Contenders, each on stock asyncio and on uvloop:

  - ``asyncio.run_coroutine_threadsafe`` onto a loop running in a thread (the baseline);
  - anyio's blocking portal: ``portal.start_task_soon(noop)`` for every job, then
    ``.result()`` on all the concurrent futures;
  - asgiref's ``async_to_sync``: it has no future-returning API, so the fair form is
    sequential ``async_to_sync(noop)()`` calls. Each such call from a plain thread starts
    a new thread and a new event loop (``asyncio.run``), which costs hundreds of
    microseconds, so this contender makes a tenth of the calls (10,000) and reports
    calls/s; the rate does not depend on the count. It runs on uvloop only with
    ``asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())`` set around it;
  - ThreadedLoopExecutor (``loop_factory=uvloop.new_event_loop`` for uvloop).

  Target: ThreadedLoopExecutor at least 2x the baseline's throughput and ahead of
  anyio's portal and asgiref (paired per-round ratios shown in its result cell).
* round trip: one job submitted and waited for, median of 20,000 calls:
  ``run_coroutine_threadsafe(noop(), loop).result()`` (baseline), ``portal.call(noop)``,
  ``async_to_sync(noop)()`` (2,000 calls, for the cost above) and
  ``exe.submit(noop).result()``. Target: at most 1.1x the baseline's latency.
* blocking: 2,000 ``time.sleep(0.001)`` jobs with ``max_workers=32`` vs
  ``ThreadPoolExecutor(32)``. Target: within 10% of its wall time.

A missing optional library (anyio, asgiref, uvloop) skips its rows with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import importlib.util
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Optional

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coroexecutor import ThreadedLoopExecutor

__all__ = ["main", "run"]

LOOPS = ("asyncio", "uvloop")
BASELINE = "run_coroutine_threadsafe"
ANYIO = "anyio blocking portal"
ASGIREF = "asgiref async_to_sync"
OURS = "ThreadedLoopExecutor"
CONTENDERS = (BASELINE, ANYIO, ASGIREF, OURS)
_NEEDS = {ANYIO: "anyio", ASGIREF: "asgiref"}
ASGIREF_SHARE = 10  # asgiref makes 1/10 of the calls: each one starts a thread and a loop


async def noop() -> None:
    return None


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def sleep_1ms() -> None:
    time.sleep(0.001)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _check_loop(kind: str, loop: asyncio.AbstractEventLoop) -> None:
    """Make sure a contender really runs on the loop kind its row claims."""
    is_uvloop = type(loop).__module__.startswith("uvloop")
    assert is_uvloop == (kind == "uvloop"), f"expected a {kind} loop, got {type(loop)!r}"


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


@contextmanager
def loop_in_thread(kind: str = "asyncio") -> Iterator[asyncio.AbstractEventLoop]:
    """The hand-rolled baseline: an event loop running forever in a thread."""
    loop = _new_loop(kind)
    ready = threading.Event()

    def body() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=body, name="baseline_loop")
    thread.start()
    ready.wait()
    try:
        _check_loop(kind, asyncio.run_coroutine_threadsafe(running_loop(), loop).result())
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@contextmanager
def bridge(kind: str = "asyncio", max_workers: Optional[int] = None) -> Iterator[Any]:
    factory = None
    if kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with ThreadedLoopExecutor(max_workers, loop_factory=factory) as exe:
        _check_loop(kind, exe.submit(running_loop).result())  # also: the loop is up and warm
        yield exe


@contextmanager
def portal(kind: str) -> Iterator[Any]:
    from anyio.from_thread import start_blocking_portal

    options = {"use_uvloop": True} if kind == "uvloop" else None
    with start_blocking_portal(backend_options=options) as p:
        _check_loop(kind, p.call(running_loop))
        yield p


@contextmanager
def _loop_policy(kind: str) -> Iterator[None]:
    """asgiref makes its loops with asyncio.run, so only the policy can make them uvloop."""
    if kind != "uvloop":
        yield
        return
    import uvloop

    with warnings.catch_warnings():  # the policy API is deprecated from Python 3.14
        warnings.simplefilter("ignore", DeprecationWarning)
        old = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(old)


@contextmanager
def sync_noop(kind: str) -> Iterator[Callable[[], None]]:
    from asgiref.sync import async_to_sync

    with _loop_policy(kind):
        _check_loop(kind, async_to_sync(running_loop)())
        yield async_to_sync(noop)


#
# Throughput: each function returns jobs per second; every job is checked done
#


def _wait_all(futures: list[concurrent.futures.Future[Any]], start: float) -> float:
    for future in futures:
        future.result()
    elapsed = time.perf_counter() - start
    assert all(f.done() and f.exception() is None for f in futures)
    return len(futures) / elapsed


def throughput_bridge(n: int, kind: str = "asyncio") -> float:
    with bridge(kind) as exe:
        start = time.perf_counter()
        return _wait_all([exe.submit(noop) for _ in range(n)], start)


def throughput_baseline(n: int, kind: str = "asyncio") -> float:
    with loop_in_thread(kind) as loop:
        start = time.perf_counter()
        return _wait_all([asyncio.run_coroutine_threadsafe(noop(), loop) for _ in range(n)], start)


def throughput_portal(n: int, kind: str = "asyncio") -> float:
    with portal(kind) as p:
        start = time.perf_counter()
        return _wait_all([p.start_task_soon(noop) for _ in range(n)], start)


def throughput_asgiref(n: int, kind: str = "asyncio") -> float:
    with sync_noop(kind) as call:
        calls = 0
        start = time.perf_counter()
        for _ in range(n):
            call()
            calls += 1
        elapsed = time.perf_counter() - start
    assert calls == n
    return n / elapsed


#
# Round trip: each function returns the median seconds of one submit-and-wait
#


def _median_call(call: Callable[[], Any], n: int) -> float:
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        call()
        samples.append(clock() - start)
    assert len(samples) == n
    return statistics.median(samples)


def round_trip_bridge(n: int, kind: str = "asyncio") -> float:
    with bridge(kind) as exe:
        return _median_call(lambda: exe.submit(noop).result(), n)


def round_trip_baseline(n: int, kind: str = "asyncio") -> float:
    with loop_in_thread(kind) as loop:
        return _median_call(lambda: asyncio.run_coroutine_threadsafe(noop(), loop).result(), n)


def round_trip_portal(n: int, kind: str = "asyncio") -> float:
    with portal(kind) as p:
        return _median_call(lambda: p.call(noop), n)


def round_trip_asgiref(n: int, kind: str = "asyncio") -> float:
    with sync_noop(kind) as call:
        return _median_call(call, n)


# (n, loop kind) -> jobs/s, or -> median seconds of one round trip
THROUGHPUT: dict[str, Callable[[int, str], float]] = {
    BASELINE: throughput_baseline,
    ANYIO: throughput_portal,
    ASGIREF: throughput_asgiref,
    OURS: throughput_bridge,
}
ROUND_TRIP: dict[str, Callable[[int, str], float]] = {
    BASELINE: round_trip_baseline,
    ANYIO: round_trip_portal,
    ASGIREF: round_trip_asgiref,
    OURS: round_trip_bridge,
}


#
# Blocking: seconds of wall time
#


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


Key = tuple[str, str]  # (loop kind, contender)


def _interleaved(fns: dict[Key, Callable[[], float]], rounds: int) -> dict[Key, list[float]]:
    """Run every contender once a round, the order rotated by one each round."""
    keys = list(fns)
    out: dict[Key, list[float]] = {k: [] for k in keys}
    for i in range(rounds):
        shift = i % len(keys)
        for key in keys[shift:] + keys[:shift]:
            gc.collect()
            out[key].append(fns[key]())
    return out


def _paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def _available() -> tuple[list[str], dict[Key, str]]:
    """The loop kinds to measure, and why a (loop, contender) is skipped."""
    loops = [k for k in LOOPS if k != "uvloop" or _installed("uvloop")]
    skipped: dict[Key, str] = {}
    for kind in LOOPS:
        for name in CONTENDERS:
            if kind not in loops:
                skipped[kind, name] = "skipped: uvloop is not installed"
            elif name in _NEEDS and not _installed(_NEEDS[name]):
                skipped[kind, name] = f"skipped: {_NEEDS[name]} is not installed"
    return loops, skipped


def _row(
    workload: str,
    kind: str,
    contender: str,
    result: str,
    ratio: str = "",
    target: str = "",
    met: Any = "",
) -> dict[str, Any]:
    return {
        "workload": workload,
        "loop": kind,
        "contender": contender,
        "result": result,
        "ratio vs baseline": ratio,
        "target": target,
        "met": met,
    }


def _contender_rows(
    workload: str,
    loops: list[str],
    skipped: dict[Key, str],
    values: dict[Key, list[float]],
    fmt: Callable[[Key, float], str],
    throughput: bool,
) -> list[dict[str, Any]]:
    unit = "rate" if throughput else "latency"
    rows = []
    for kind in LOOPS:
        if kind not in loops:
            rows.append(_row(workload, kind, "all", skipped[kind, BASELINE]))
            continue
        base = values[kind, BASELINE]
        for name in CONTENDERS:
            key = (kind, name)
            if key in skipped:
                rows.append(_row(workload, kind, name, skipped[key]))
                continue
            mine = values[key]
            # Throughput: a ratio of rates (higher is better); round trip: of latencies.
            ratio = _paired(mine, base)
            result = fmt(key, statistics.median(mine))
            if name == BASELINE:
                rows.append(_row(workload, kind, f"{name} (baseline)", result, f"1.00x {unit}"))
            elif name != OURS:
                rows.append(_row(workload, kind, name, result, f"{ratio:.2f}x {unit}"))
            elif throughput:
                margins = {
                    peer: _paired(mine, values[kind, peer])
                    for peer in (ANYIO, ASGIREF)
                    if (kind, peer) in values
                }
                if margins:
                    result += (
                        " ("
                        + ", ".join(f"{m:.2f}x {peer.split()[0]}" for peer, m in margins.items())
                        + ")"
                    )
                met = ratio >= 2.0 and all(m > 1.0 for m in margins.values())
                rows.append(
                    _row(
                        workload,
                        kind,
                        f"**{name}**",
                        result,
                        f"{ratio:.2f}x {unit}",
                        ">= 2.0x, ahead of anyio and asgiref",
                        met,
                    )
                )
            else:
                rows.append(
                    _row(
                        workload,
                        kind,
                        f"**{name}**",
                        result,
                        f"{ratio:.2f}x {unit}",
                        "<= 1.1x latency",
                        ratio <= 1.1,
                    )
                )
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure the three workloads; one row per (workload, loop, contender)."""
    scale = 10 if quick else 1
    rounds = 3 if quick else 7
    loops, skipped = _available()
    measured = [
        (kind, name) for kind in loops for name in CONTENDERS if (kind, name) not in skipped
    ]
    rows: list[dict[str, Any]] = []

    n = 100_000 // scale
    n_asgiref = n // ASGIREF_SHARE
    values = _interleaved(
        {
            (kind, name): partial(THROUGHPUT[name], n_asgiref if name == ASGIREF else n, kind)
            for kind, name in measured
        },
        rounds,
    )

    def fmt_rate(key: Key, rate: float) -> str:
        if key[1] == ASGIREF:
            return f"{rate:,.0f} calls/s ({n_asgiref:,} sequential calls; no future API)"
        return f"{rate:,.0f} jobs/s"

    rows += _contender_rows(
        f"throughput, {n:,} no-op jobs", loops, skipped, values, fmt_rate, throughput=True
    )

    n = 20_000 // scale
    n_asgiref = n // ASGIREF_SHARE
    values = _interleaved(
        {
            (kind, name): partial(ROUND_TRIP[name], n_asgiref if name == ASGIREF else n, kind)
            for kind, name in measured
        },
        rounds,
    )

    def fmt_latency(key: Key, seconds: float) -> str:
        text = f"{seconds * 1e6:.1f} us"
        return text + f" (median of {n_asgiref:,} calls)" if key[1] == ASGIREF else text

    rows += _contender_rows(
        f"round trip, median of {n:,} calls", loops, skipped, values, fmt_latency, throughput=False
    )

    n = 2_000 // scale
    values = _interleaved(
        {
            ("asyncio", OURS): lambda: blocking_bridge(n),
            ("asyncio", "pool"): lambda: blocking_baseline(n),
        },
        rounds,
    )
    mine, base = values["asyncio", OURS], values["asyncio", "pool"]
    ratio = _paired(mine, base)
    workload = f"blocking, {n:,} sleep(0.001) jobs, 32 workers"
    rows.append(
        _row(
            workload,
            "asyncio",
            "ThreadPoolExecutor(32) (baseline)",
            f"{statistics.median(base) * 1e3:.1f} ms",
            "1.00x time",
        )
    )
    rows.append(
        _row(
            workload,
            "asyncio",
            f"**{OURS}** (max_workers=32)",
            f"{statistics.median(mine) * 1e3:.1f} ms",
            f"{ratio:.2f}x time",
            "<= 1.1x wall time",
            ratio <= 1.1,
        )
    )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
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
