"""Per-job cost, paired inside one process: the precise form of the throughput ratios.

A timed run in its own process moves by several per cent from one run to the next on a
shared machine, so five rounds of them pin a ratio only to a few per cent. Here each
child process (still a fresh one per round) imports the baseline and ours, warms each
up, then runs short batches of every variant in turn, in an order rotated by one each
sub-round, on stock asyncio and on uvloop alike. Drift slower than a batch (a few tenths
of a second) lands on every variant of a sub-round, and the many sub-rounds give a
median with a narrow confidence interval. Both run in the same heap, so what is compared
is the cost per job alone (a separate process also charges ours for the objects its
import adds to every full garbage collection: see the separate-process tables).
"""

from __future__ import annotations

import gc
import random
import statistics
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import _contenders

if TYPE_CHECKING:
    from ._report import Table
    from ._runner import Config, Results

__all__ = ["BASE", "OPTIONS", "OURS", "measure", "summary_table", "targets"]

BASE = "sem_wrapper"
OURS = ("ours_submit", "ours_map")
OPTIONS = tuple(_contenders.OPTION_BASES)  # each compared with its plain form (OURS)


def _contender(key: str) -> _contenders.Contender:
    return _contenders.find("options" if key in OPTIONS else "throughput", key)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Child side: every variant in ``spec["loops"]`` x (BASE, *OURS), interleaved."""
    from ._child import _run_async

    n, workers, rounds = int(spec["n"]), int(spec["workers"]), int(spec["sub_rounds"])
    variants = [(loop, key) for loop in spec["loops"] for key in (BASE, *OURS, *OPTIONS)]
    times: dict[str, list[float]] = {f"{loop}/{key}": [] for loop, key in variants}
    for loop, key in variants:  # warm-up
        _contenders.reset()
        _run_async(_contender(key), loop, min(n, 2000), workers, None)
    for r in range(rounds):
        shift = r % len(variants)
        for loop, key in variants[shift:] + variants[:shift]:
            _contenders.reset()
            gc.collect()
            seconds, count = _run_async(_contender(key), loop, n, workers, None)
            if count != n or _contenders.completed() != n:
                raise AssertionError(f"paired/{loop}/{key}: {count} jobs completed, expected {n}")
            times[f"{loop}/{key}"].append(seconds)
    return {**spec, "seconds": sum(map(sum, times.values())), "count": n, "sub_times": times}


#
# Report side
#


def _sub_times(results: Results, config: Config) -> Iterator[dict[str, list[float]]]:
    """The per-variant sub-round times of every child of this configuration."""
    for record in results.records:
        if record["workload"] == "paired" and record["workers"] == config.workers:
            yield record["sub_times"]


def _ratios(results: Results, config: Config, num: str, den: str) -> list[float]:
    """num/den for every sub-round of every child of this configuration."""
    out: list[float] = []
    for subs in _sub_times(results, config):
        if num in subs and den in subs:
            out += [a / b for a, b in zip(subs[num], subs[den])]
    return out


def _gain_ratios(results: Results, config: Config, key: str) -> list[float]:
    """(ours on uvloop / baseline on uvloop) / (ours on asyncio / baseline on asyncio),
    per sub-round: <= 1 means ours gains at least as much from uvloop as the baseline."""
    names = [f"uvloop/{key}", f"uvloop/{BASE}", f"asyncio/{key}", f"asyncio/{BASE}"]
    out: list[float] = []
    for subs in _sub_times(results, config):
        if all(name in subs for name in names):
            out += [(ou / bu) / (oa / ba) for ou, bu, oa, ba in zip(*(subs[m] for m in names))]
    return out


def _median_ci(values: list[float]) -> tuple[float, float, float]:
    """Median and a 95 % bootstrap interval for it (seeded: a re-render is identical)."""
    rng = random.Random(20261202)
    boots = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(2000))
    return statistics.median(values), boots[49], boots[1949]


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    med, low, high = _median_ci(values)
    return f"{med:.3f} [{low:.3f}-{high:.3f}]"


def configs(results: Results) -> list[Config]:
    return [c for c in results.plan.timed if c.workload == "paired"
            and any(r["workload"] == "paired" and r["workers"] == c.workers
                    for r in results.records)]


def summary_table(results: Results) -> Table | None:
    from ._report import Table, _label, _wfmt

    cfgs = configs(results)
    if not cfgs:
        return None
    loops = [loop for loop in ("asyncio", "uvloop")
             if _ratios(results, cfgs[0], f"{loop}/{BASE}", f"{loop}/{BASE}")]
    header = ["Contender"] + [f"time vs wrapper form, {loop}, W={_wfmt(c.workers)}"
                              for loop in loops for c in cfgs]
    table = Table("Per-job cost, paired in one process (time ratio to the Semaphore wrapper"
                  " form)", header)
    for key in OURS:
        row = [_label("throughput", key)]
        for loop in loops:
            row += [_fmt(_ratios(results, c, f"{loop}/{key}", f"{loop}/{BASE}")) for c in cfgs]
        table.rows.append(row)
    for key in OPTIONS:
        plain = _contenders.OPTION_BASES[key][0]
        row = [f"{_contender(key).label}: vs {_label('throughput', plain)}"]
        for loop in loops:
            row += [_fmt(_ratios(results, c, f"{loop}/{key}", f"{loop}/{plain}")) for c in cfgs]
        table.rows.append(row)
    if "uvloop" in loops:
        for key in OURS:
            row = [f"{_label('throughput', key)}: uvloop gain vs the wrapper form's"]
            row += [_fmt(_gain_ratios(results, c, key)) for c in cfgs]
            row += ["-"] * (len(header) - len(row))
            table.rows.append(row)
    subs = len(_ratios(results, cfgs[0], f"{loops[0]}/{BASE}", f"{loops[0]}/{BASE}"))
    table.notes.append(
        f"Median [95 % bootstrap interval] of the per-sub-round ratios: {subs} sub-rounds of"
        f" {cfgs[0].n:,} jobs per cell, from {results.plan.repeats} fresh child processes"
        " (< 1 is faster than the wrapper form). The gain rows are (ours / wrapper on uvloop)"
        " / (ours / wrapper on stock asyncio) per sub-round: <= 1 means ours gains at least"
        " as much from uvloop as the wrapper form does. Each child interleaves every variant"
        " on both loops; the gain columns follow the W columns of stock asyncio. The rows"
        " with an option set (\"vs\") are time ratios to the plain form in the same"
        " sub-round, not to the wrapper form."
    )
    return table


def targets(results: Results) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    cfgs = configs(results)
    if not cfgs:
        return out
    from ._report import _wfmt

    details, ok = [], True
    for loop in ("asyncio", "uvloop"):
        for c in cfgs:
            for key in OURS:
                values = _ratios(results, c, f"{loop}/{key}", f"{loop}/{BASE}")
                if values:
                    ok &= _median_ci(values)[0] <= 1.0
                    details.append(f"{key} {loop} W={_wfmt(c.workers)}: {_fmt(values)}")
    if details:
        out.append(("per-job cost no higher than Semaphore + create_task, paired in one"
                    " process (median time ratio <= 1.0)", "met" if ok else "MISSED",
                    "; ".join(details)))
    for key in OPTIONS:
        plain, budget = _contenders.OPTION_BASES[key]
        details, ok = [], True
        for loop in ("asyncio", "uvloop"):
            for c in cfgs:
                values = _ratios(results, c, f"{loop}/{key}", f"{loop}/{plain}")
                if values:
                    ok &= _median_ci(values)[0] <= budget
                    details.append(f"{loop} W={_wfmt(c.workers)}: {_fmt(values)}")
        if details:
            out.append((f"{_contender(key).label}: per-job time at most {budget:.2f}x the"
                        " plain form's, paired (nothing fails)", "met" if ok else "MISSED",
                        "; ".join(details)))
    details, ok = [], True
    for c in cfgs:
        for key in OURS:
            values = _gain_ratios(results, c, key)
            if values:
                med = statistics.median(values)
                ok &= med <= 1.0
                details.append(f"{key} W={_wfmt(c.workers)}: {med:.3f}")
    if details:
        out.append(("uvloop gain, paired in one process ((ours/base on uvloop) /"
                    " (ours/base on asyncio) <= 1.0)", "met" if ok else "MISSED",
                    "; ".join(details)))
    return out
