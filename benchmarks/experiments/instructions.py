"""Instructions per job, counted by valgrind, and system calls per job, counted by strace.

``python -m benchmarks.experiments.instructions [--cache] [max_workers] [asyncio|uvloop]
[name ...]``

Wall-clock ratios on a shared two-core machine move by several per cent from one run to
the next; an instruction count does not move at all. Each variant runs in a child
process under ``valgrind --tool=callgrind`` twice, with 10,000 and with 60,000 no-op
jobs (after the same warm-up), and the difference divided by 50,000 is its instructions
per job: start-up and imports cancel out. ``PYTHONHASHSEED`` is fixed, so a rerun gives
the same figures to the instruction.

Instructions are not time. They leave out the kernel, so strace counts the system calls
per job as well (a design that looks up the running loop on every job makes a
``getpid()`` call each time: free in instructions, dear in time). Nor do they see cache
misses, which is why ``gctime`` times the garbage collector separately, and ``--cache``
adds first-level data-cache misses per job from ``valgrind --tool=cachegrind
--cache-sim=yes`` (a simulation of this machine's caches; the address layout differs
from run to run, so these move by a few per cent). Use the counts to compare versions
of one design, and the timed benchmarks for the verdict.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

from .gctime import VARIANTS

SMALL, LARGE = 10_000, 60_000

_CHILD = """
import asyncio, gc, sys
from benchmarks import _contenders as C
from benchmarks.experiments.gctime import VARIANTS
from benchmarks._child import _new_loop
name, n, workers, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
run = VARIANTS[name]
loop = _new_loop(kind)
C.reset(); loop.run_until_complete(run(2_000, workers))
C.reset(); gc.collect()
if n and loop.run_until_complete(run(n, workers)) != n:
    raise SystemExit(f"{name}: wrong job count")
loop.close()
"""


def _child(tool: list[str], name: str, n: int, workers: int, kind: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED="0")
    for var in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONTRACEMALLOC"):
        env.pop(var, None)
    proc = subprocess.run(
        [*tool, sys.executable, "-c", _CHILD, name, str(n), str(workers), kind],
        capture_output=True, text=True, env=env, check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    return proc.stderr


def instructions(name: str, workers: int, kind: str) -> float:
    def count(n: int) -> int:
        out = _child(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"],
                     name, n, workers, kind)
        match = re.search(r"Collected : (\d+)", out)
        if match is None:
            raise RuntimeError(f"no instruction count from valgrind:\n{out}")
        return int(match.group(1))

    return (count(LARGE) - count(SMALL)) / (LARGE - SMALL)


def d1_misses(name: str, workers: int, kind: str) -> float:
    """First-level data-cache misses (reads and writes) per job, simulated."""
    def count(n: int) -> int:
        out = _child(["valgrind", "--tool=cachegrind", "--cache-sim=yes",
                      "--cachegrind-out-file=/dev/null"], name, n, workers, kind)
        match = re.search(r"D1\s+misses:\s+([\d,]+)", out)
        if match is None:
            raise RuntimeError(f"no D1 miss count from valgrind:\n{out}")
        return int(match.group(1).replace(",", ""))

    return (count(LARGE) - count(SMALL)) / (LARGE - SMALL)


def syscalls(name: str, workers: int, kind: str) -> float:
    def count(n: int) -> int:
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
            _child(["strace", "-f", "-c", "-o", out.name], name, n, workers, kind)
            total = re.search(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)", out.read(), re.M)
        if total is None:
            raise RuntimeError("no total from strace -c")
        return int(total.group(1))

    return (count(LARGE) - count(SMALL)) / (LARGE - SMALL)


def main() -> None:
    args = sys.argv[1:]
    cache = "--cache" in args
    args = [a for a in args if a != "--cache"]
    workers = int(args[0]) if args else 1000
    kind = args[1] if len(args) > 1 else "asyncio"
    names = args[2:] or list(VARIANTS)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    have_strace = shutil.which("strace") is not None
    base_name = next(iter(VARIANTS))
    wanted = dict.fromkeys([base_name, *names])  # the baseline first, once
    counts = {name: instructions(name, workers, kind) for name in wanted}
    print(f"Python {sys.version.split()[0]}, {kind}, max_workers={workers:,}:"
          f" per job, from runs of {SMALL:,} and {LARGE:,} no-op jobs")
    print(f"  {'variant':40s} {'instructions':>12s} {'vs ' + base_name:>28s}"
          + (f" {'system calls':>13s}" if have_strace else "")
          + (f" {'D1 misses':>10s}" if cache else ""))
    for name, value in counts.items():
        line = f"  {name:40s} {value:12,.0f} {value / counts[base_name]:28.3f}"
        if have_strace:
            line += f" {syscalls(name, workers, kind):13.3f}"
        if cache:
            line += f" {d1_misses(name, workers, kind):10.1f}"
        print(line)


if __name__ == "__main__":
    main()
