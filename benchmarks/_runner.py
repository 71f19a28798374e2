"""Plan the runs, run each in a fresh child process, interleaved, and aggregate them.

Timed workloads run in rounds: every round runs every contender of every configuration
once, in an order rotated by one each round (A B C, B C A, ...), so slow drift of the
shared machine lands on every contender alike and each round gives one *paired* ratio
per contender (its time over the baseline's time in the same round). Memory runs are
not timed, so they run two children at a time.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _contenders, _paired

__all__ = ["Config", "Plan", "Results", "plan_for", "run_plan"]

ROOT = Path(__file__).resolve().parent.parent


class BenchmarkError(RuntimeError):
    """A child failed: a wrong job count or a crash. The whole run stops."""


@dataclass(frozen=True)
class Config:
    workload: str
    loop: str
    workers: int
    n: int
    measure: str = "time"  # "time", "rss" or "tracemalloc"

    def spec(self, contender: str) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "contender": contender,
            "loop": self.loop,
            "workers": self.workers,
            "n": self.n,
            "measure": self.measure,
        }


@dataclass
class Plan:
    quick: bool
    repeats: int
    timed: list[Config] = field(default_factory=list)
    memory: list[Config] = field(default_factory=list)
    memory_repeats: int = 3
    memory_parallel: int = 2
    bridge: bool = True
    source: str = "head"  # "head" (committed coroexecutor) or "worktree"
    paired_sub_rounds: int = 24


def plan_for(quick: bool, repeats: int | None, only: Sequence[str] | None) -> Plan:
    """The configurations issue 7 asks for, or a small version of them for --quick."""
    want = set(only or ("throughput", "paired", "memory", "map", "stretch", "blocking",
                        "bridge"))
    plan = Plan(quick=quick, repeats=repeats or 5, bridge="bridge" in want)
    if quick:
        n, workers_list, mem_sizes, map_n, block_n, sleep_n = (
            10_000, (10, 1000, 10_000), (1_000, 10_000, 50_000), 20_000, 5_000, 500)
        plan.memory_repeats = 1
    else:
        n, workers_list, mem_sizes, map_n, block_n, sleep_n = (
            200_000, (10, 1000, 10_000), (10_000, 100_000, 1_000_000), 200_000, 20_000, 2_000)
    if "throughput" in want:
        for loop in ("asyncio", "uvloop"):
            # --quick: uvloop at max_workers=1000 only
            for workers in workers_list if loop == "asyncio" or not quick else (1000,):
                plan.timed.append(Config("throughput", loop, workers, n))
    if "paired" in want:
        # One child per round runs every variant on both loops (see _paired); --quick:
        # max_workers=1000 only, short batches.
        plan.paired_sub_rounds = 8 if quick else 24
        for workers in (1000,) if quick else workers_list:
            batch = 5_000 if quick else max(20_000, 5 * workers)
            plan.timed.append(Config("paired", "both", workers, batch))
    if "map" in want:
        for loop in ("asyncio", "uvloop"):
            plan.timed.append(Config("map", loop, 1000, map_n))
    if "stretch" in want:
        plan.timed.append(Config("stretch", "asyncio", 1000, map_n))
    if "blocking" in want:
        plan.timed.append(Config("blocking", "asyncio", 32, block_n))
        plan.timed.append(Config("blocking_sleep", "asyncio", 32, sleep_n))
    if "memory" in want:
        for size in mem_sizes:
            plan.memory.append(Config("memory", "asyncio", 1000, size, "tracemalloc"))
            if not quick:  # at --quick sizes RSS is all interpreter: not worth the time
                plan.memory.append(Config("memory", "asyncio", 1000, size, "rss"))
    return plan


#
# Child processes
#


# Where children run: a snapshot holding the committed coroexecutor and a copy of this
# benchmarks package (see snapshot()), or the working tree itself.
_child_root: Path = ROOT
_snapshot_commit: str = ""


def snapshot(source: str) -> str:
    """Freeze the code the children import; return a description of it for the report.

    Others edit the working tree while a long run goes on: by default the children import
    coroexecutor as committed at HEAD (``git archive``) and a copy of the benchmarks taken
    now, so every run of one report measures the same code. ``source="worktree"``
    measures the working tree as it is at each moment instead.
    """
    global _child_root, _snapshot_commit
    if source == "worktree":
        _child_root = ROOT
        return "working tree"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    dest = Path(tempfile.mkdtemp(prefix=f"coroexecutor-bench-{commit}-"))
    archive = subprocess.run(["git", "archive", "HEAD", "coroexecutor"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, **safe)  # type: ignore[arg-type]
    shutil.copytree(ROOT / "benchmarks", dest / "benchmarks",
                    ignore=shutil.ignore_patterns("results", "__pycache__"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    _child_root = dest
    _snapshot_commit = commit
    return f"commit {commit}"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the child's cwd (sys.path[0] under -m) has everything
    env.pop("PYTHONASYNCIODEBUG", None)  # debug mode would measure asyncio's checks
    env.pop("PYTHONDEVMODE", None)
    env.pop("PYTHONTRACEMALLOC", None)
    return env


def run_child(spec: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Run one contender once in a fresh interpreter; raise BenchmarkError on failure."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks._child", json.dumps(spec)],
        cwd=_child_root, env=_child_env(), capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        what = "wrong job count" if proc.returncode == 3 else f"exit status {proc.returncode}"
        raise BenchmarkError(
            f"{spec['workload']}/{spec['contender']} ({spec['loop']}, workers={spec['workers']},"
            f" n={spec['n']}) failed: {what}\n{proc.stderr.strip()}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def probe() -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks._child", "--probe"],
        cwd=_child_root, env=_child_env(), capture_output=True, text=True, timeout=120,
        check=True,
    )
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


#
# Results
#


@dataclass
class Results:
    plan: Plan
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # "workload/key" -> why
    bridge: Any = None  # whatever the bridge benchmark produced (rows or text)
    code: str = ""  # which coroexecutor was measured ("commit abc1234", "working tree")
    started: float = field(default_factory=time.time)
    finished: float = 0.0

    def contenders(self, workload: str) -> list[str]:
        return [c.key for c in _contenders.WORKLOADS[workload]
                if f"{workload}/{c.key}" not in self.skipped]

    def times(self, config: Config, key: str) -> dict[int, float]:
        """Round number -> seconds, for one contender in one configuration."""
        return {
            r["round"]: r["seconds"] for r in self.records
            if r["contender"] == key and _config_of(r) == config
        }

    def values(self, config: Config, key: str, field_name: str) -> list[float]:
        return [r[field_name] for r in self.records
                if r["contender"] == key and _config_of(r) == config and field_name in r]

    def to_json(self) -> dict[str, Any]:
        return {
            "quick": self.plan.quick,
            "repeats": self.plan.repeats,
            "records": self.records,
            "skipped": self.skipped,
            "bridge": self.bridge,
            "code": self.code,
            "started": self.started,
            "finished": self.finished,
        }


def workloads_in(saved: dict[str, Any]) -> list[str]:
    """The workloads (``--only`` names) a saved results.json holds records for."""
    held = {"blocking" if r["workload"] == "blocking_sleep" else r["workload"]
            for r in saved["records"]}
    if saved.get("bridge"):
        held.add("bridge")
    return sorted(held)


def _config_of(record: dict[str, Any]) -> Config:
    return Config(record["workload"], record["loop"], record["workers"], record["n"],
                  record.get("measure", "time"))


def paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """b[r] / a[r] for every round both ran: > 1 means a is faster than b."""
    return [b[r] / a[r] for r in sorted(a.keys() & b.keys())]


def summary(values: Iterable[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    vals = sorted(values)
    if not vals:
        return (float("nan"),) * 3
    return statistics.median(vals), vals[0], vals[-1]


def baseline_key(results: Results, config: Config) -> str | None:
    """The row this configuration's ratios are taken against."""
    if config.workload in ("throughput", "memory"):
        forms = [k for k in _contenders.SEMAPHORE_FORMS if k in results.contenders("throughput")]
        if config.workload == "memory":
            # Memory has no timing: use the baseline of the matching throughput runs.
            match = Config("throughput", config.loop, config.workers,
                           _max_n(results, "throughput"))
            forms_t = [(summary(results.times(match, k).values())[0], k) for k in forms]
            forms_t = [ft for ft in forms_t if ft[0] == ft[0]]
            return min(forms_t)[1] if forms_t else (forms[0] if forms else None)
        timed = [(summary(results.times(config, k).values())[0], k) for k in forms]
        timed = [t for t in timed if t[0] == t[0]]  # drop NaN (not run)
        return min(timed)[1] if timed else None
    return _contenders.BASELINES.get(config.workload)


def _max_n(results: Results, workload: str) -> int:
    ns = [c.n for c in results.plan.timed if c.workload == workload]
    return max(ns) if ns else 0


#
# Running
#


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _preflight(results: Results, workloads: Iterable[str], available: dict[str, str]) -> None:
    """Skip contenders whose imports fail; a tiny run of each catches broken ones early."""
    for workload in workloads:
        for contender in _contenders.WORKLOADS[workload]:
            tag = f"{workload}/{contender.key}"
            missing = [m for m in contender.needs if available.get(m)]
            if missing:
                results.skipped[tag] = "; ".join(available[m] for m in missing)
                _log(f"skipping {tag}: {results.skipped[tag]}")
                continue
            spec = Config(workload, "asyncio", 4, 20).spec(contender.key)
            try:
                run_child(spec, timeout=120)
            except BenchmarkError as exc:
                if "wrong job count" in str(exc):
                    raise
                results.skipped[tag] = str(exc).splitlines()[-1]
                _log(f"skipping {tag}: {results.skipped[tag]}")


def run_plan(plan: Plan) -> Results:
    results = Results(plan)
    results.code = snapshot(plan.source)
    available = probe()
    if available.get("uvloop"):
        _log(f"uvloop unavailable ({available['uvloop']}): stock asyncio only")
        plan.timed = [c for c in plan.timed if c.loop != "uvloop"]
    loops = ["asyncio"] if available.get("uvloop") else ["asyncio", "uvloop"]
    workloads = {c.workload for c in plan.timed + plan.memory} - {"paired"}
    if any(c.workload == "paired" for c in plan.timed):
        workloads.add("throughput")  # the paired variants are throughput contenders
    _preflight(results, sorted(workloads), available)
    missing = [k for k in (_paired.BASE, *_paired.OURS)
               if f"throughput/{k}" in results.skipped]
    if missing:
        _log(f"skipping paired: {', '.join(missing)} not runnable here")
        plan.timed = [c for c in plan.timed if c.workload != "paired"]

    total = sum(1 if c.workload == "paired" else len(results.contenders(c.workload))
                for c in plan.timed) * plan.repeats
    done = 0
    start = time.perf_counter()
    for rnd in range(plan.repeats):
        for config in plan.timed:
            if config.workload == "paired":
                spec = {**config.spec("all"), "loops": loops,
                        "sub_rounds": plan.paired_sub_rounds}
                record = run_child(spec)
                record["round"] = rnd
                results.records.append(record)
                done += 1
                continue
            keys = results.contenders(config.workload)
            shift = rnd % len(keys)
            for key in keys[shift:] + keys[:shift]:
                record = run_child(config.spec(key))
                record["round"] = rnd
                results.records.append(record)
                done += 1
            elapsed = time.perf_counter() - start
            _log(f"[{done}/{total} timed runs, {elapsed:.0f}s] round {rnd + 1}/{plan.repeats}"
                 f" {config.workload} {config.loop} workers={config.workers} n={config.n}")

    if plan.memory:
        _run_memory(plan, results)
    if plan.bridge:
        from ._bridge import run_bridge

        results.bridge = run_bridge(plan.quick)
    results.finished = time.time()
    return results


def _run_memory(plan: Plan, results: Results) -> None:
    jobs = []
    for config in plan.memory:
        repeats = 1 if config.measure == "tracemalloc" else plan.memory_repeats
        for rnd in range(repeats):
            for key in results.contenders(config.workload):
                jobs.append((config, key, rnd))
    # Largest first, so the long runs overlap each other rather than the short ones.
    jobs.sort(key=lambda j: -j[0].n)
    _log(f"memory: {len(jobs)} runs, {plan.memory_parallel} at a time")
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(plan.memory_parallel) as pool:
        futures = {pool.submit(run_child, config.spec(key)): rnd for config, key, rnd in jobs}
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            record = future.result()  # a failure stops the run (the pool finishes first)
            record["round"] = futures[future]
            results.records.append(record)
            if i % 10 == 0 or i == len(jobs):
                _log(f"[{i}/{len(jobs)} memory runs, {time.perf_counter() - start:.0f}s]")
