"""Turn the runs into tables (Markdown and reStructuredText), target checks and a chart."""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _contenders, _paired
from ._runner import ROOT, Config, Results, baseline_key, paired, summary

__all__ = ["Table", "build_tables", "markdown", "rst", "write_chart"]

DOC_BEGIN = ".. BEGIN GENERATED BENCHMARK RESULTS (python -m benchmarks --update-docs)"
DOC_END = ".. END GENERATED BENCHMARK RESULTS"


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#
# Formatting
#


def _fmt_ratio(values: list[float]) -> str:
    med, lo, hi = summary(values)
    if math.isnan(med):
        return "-"
    return f"{med:.2f} [{lo:.2f}-{hi:.2f}]"


def _fmt_rate(n: int, seconds: list[float]) -> str:
    med, lo, hi = summary(seconds)
    if math.isnan(med):
        return "-"
    rate = n / med
    spread = (hi - lo) / (2 * med) * 100
    text = f"{rate / 1000:,.0f}k" if rate >= 10_000 else f"{rate:,.0f}"
    return f"{text} ±{spread:.0f}%"


def _mib(values: list[float], scale: float = 1 / 2**20) -> str:
    med, lo, hi = summary(v * scale for v in values)
    if math.isnan(med):
        return "-"
    return f"{med:.1f}" if hi - lo < 0.05 * max(med, 0.1) else f"{med:.1f} ({lo:.1f}-{hi:.1f})"


def _label(workload: str, key: str) -> str:
    contender = _contenders.find(workload, key)
    label = contender.label
    return f"**{label}**" if key.startswith("ours") else label


def _loop_name(loop: str) -> str:
    return "stock asyncio" if loop == "asyncio" else loop


def _wfmt(workers: int) -> str:
    return f"{workers:,}"


#
# Header
#


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def header_lines(results: Results, command: str) -> list[str]:
    import os

    started = datetime.datetime.fromtimestamp(results.started, datetime.timezone.utc)
    minutes = (results.finished - results.started) / 60 if results.finished else 0
    libs = ", ".join(f"{d} {_version(d)}" for d in
                     ("uvloop", "aiometer", "asyncio-pool", "aiojobs", "anyio", "asgiref"))
    plan = results.plan
    lines = [
        f"Command: ``{command}`` ({'quick' if plan.quick else 'full'} mode;"
        f" {started:%Y-%m-%d %H:%M} UTC; {minutes:.1f} min;"
        f" coroexecutor: {results.code or _commit()})",
        f"Machine: {platform.system()} {platform.release()} {platform.machine()};"
        f" CPU: {_cpu_model()}, {os.cpu_count()} logical cores (shared)",
        f"Python: {platform.python_implementation()} {platform.python_version()}; {libs}",
        f"Method: every run is a fresh child process with a small warm-up;"
        f" {plan.repeats} rounds, contenders interleaved in rotated order each round;"
        f" every run counts its completed jobs and the benchmark stops if a count is wrong."
        f" Speed ratio = baseline time / contender time *in the same round*, median"
        f" [min-max] over the rounds (> 1 is faster than the baseline). Absolute rates are"
        f" medians ± half the range.",
    ]
    if results.skipped:
        lines.append("Not measured: " + "; ".join(f"{k} ({v})" for k, v in results.skipped.items()))
    return lines


#
# Tables
#


def _timed_configs(results: Results, workload: str, loop: str | None = None) -> list[Config]:
    """The planned configurations of a workload that have runs (a report re-rendered
    from an older results.json may lack a workload added since)."""
    measured = {(r["workload"], r["loop"], r["workers"], r["n"]) for r in results.records}
    return [c for c in results.plan.timed
            if c.workload == workload and (loop is None or c.loop == loop)
            and (c.workload, c.loop, c.workers, c.n) in measured]


def throughput_tables(results: Results) -> list[Table]:
    tables = []
    for loop in ("asyncio", "uvloop"):
        configs = _timed_configs(results, "throughput", loop)
        if not configs:
            continue
        n = configs[0].n
        ws = [_wfmt(c.workers) for c in configs]
        table = Table(
            f"Async throughput, {n:,} no-op jobs, {_loop_name(loop)}",
            ["Contender"] + [f"speed vs Semaphore, W={w}" for w in ws]
            + [f"jobs/s, W={w}" for w in ws],
        )
        bases = {c: baseline_key(results, c) for c in configs}
        for key in results.contenders("throughput"):
            ratios, rates = [], []
            for c in configs:
                base = bases[c]
                t = results.times(c, key)
                if base is None:
                    ratios.append("-")
                elif key == base:
                    ratios.append("1.00 (baseline)")
                else:
                    ratios.append(_fmt_ratio(paired(t, results.times(c, base))))
                rates.append(_fmt_rate(c.n, list(t.values())))
            table.rows.append([_label("throughput", key), *ratios, *rates])
        base_names = sorted({_contenders.find("throughput", b).label for b in bases.values() if b})
        table.notes.append(
            "W = max_workers. Baseline: the fastest Semaphore form in each column"
            f" ({'; '.join(base_names)})."
        )
        for key in results.contenders("throughput"):
            contender = _contenders.find("throughput", key)
            if contender.note:
                table.notes.append(f"{contender.label}: {contender.note}")
        tables.append(table)
    return tables


def uvloop_table(results: Results) -> Table | None:
    stock = {c.workers: c for c in _timed_configs(results, "throughput", "asyncio")}
    uv = {c.workers: c for c in _timed_configs(results, "throughput", "uvloop")}
    workers = [w for w in stock if w in uv]
    if not workers:
        return None
    table = Table("Gain from uvloop (stock time / uvloop time, same round)",
                  ["Contender"] + [f"W={_wfmt(w)}" for w in workers])
    for key in results.contenders("throughput"):
        row = [_label("throughput", key)]
        for w in workers:
            row.append(_fmt_ratio(paired(results.times(uv[w], key), results.times(stock[w], key))))
        table.rows.append(row)
    return table


def memory_table(results: Results) -> Table | None:
    configs = results.plan.memory
    if not configs:
        return None
    sizes = sorted({c.n for c in configs})
    trace = {c.n: c for c in configs if c.measure == "tracemalloc"}
    rss = {c.n: c for c in configs if c.measure == "rss"}
    big, small = sizes[-1], sizes[0]
    base = baseline_key(results, trace[big]) if big in trace else None
    table = Table(
        "Memory, max_workers=1,000 (tracemalloc peak and peak RSS growth, MiB)",
        ["Contender", f"tracemalloc peak vs Semaphore at {big:,}",
         f"growth {big:,} / {small:,} jobs (tracemalloc)"]
        + [f"tracemalloc, {s:,} jobs" for s in sizes]
        + [f"RSS growth, {s:,} jobs" for s in sizes if s in rss],
    )
    for key in results.contenders("memory"):
        peaks = {s: results.values(trace[s], key, "trace_peak") for s in sizes if s in trace}
        base_peak = summary(results.values(trace[big], base, "trace_peak"))[0] if base else math.nan
        own_big = summary(peaks.get(big, []))[0]
        own_small = summary(peaks.get(small, []))[0]
        ratio = "1.00 (baseline)" if key == base else (
            f"{own_big / base_peak:.2f}" if base_peak == base_peak and own_big == own_big else "-")
        growth = f"{own_big / own_small:.2f}" if own_small and own_big == own_big else "-"
        row = [_label("memory", key), ratio, growth]
        row += [_mib(peaks.get(s, [])) for s in sizes]
        for s in sizes:
            if s in rss:
                deltas = [p - b for p, b in zip(results.values(rss[s], key, "rss_peak_kib"),
                                                  results.values(rss[s], key, "rss_before_kib"))]
                row.append(_mib(deltas, 1 / 1024))
        table.rows.append(row)
    table.notes.append(
        "tracemalloc peak: Python allocations traced from the start of the run (one run per"
        " cell: tracemalloc is deterministic here and slow). RSS growth: peak RSS minus RSS"
        f" just before the run, median of {results.plan.memory_repeats} run(s) without"
        " tracemalloc (not measured with --quick). Memory runs are not timed and run two at"
        " a time."
    )
    return table


def simple_timed_table(results: Results, workload: str, title: str) -> Table | None:
    configs = _timed_configs(results, workload)
    if not configs:
        return None
    base = _contenders.BASELINES[workload]
    loops = [c.loop for c in configs]
    table = Table(title, ["Contender"] + [f"speed vs {_contenders.find(workload, base).label}"
                                          + (f", {c.loop}" if len(loops) > 1 else "")
                                          for c in configs]
                  + [f"jobs/s{', ' + c.loop if len(loops) > 1 else ''}" for c in configs])
    for key in results.contenders(workload):
        ratios, rates = [], []
        for c in configs:
            t = results.times(c, key)
            ratios.append("1.00 (baseline)" if key == base
                          else _fmt_ratio(paired(t, results.times(c, base))))
            rates.append(_fmt_rate(c.n, list(t.values())))
        table.rows.append([_label(workload, key), *ratios, *rates])
    for key in results.contenders(workload):
        note = _contenders.find(workload, key).note
        if note:
            table.notes.append(f"{_contenders.find(workload, key).label}: {note}")
    return table


def build_tables(results: Results) -> list[Table]:
    tables: list[Table | None] = [*throughput_tables(results), uvloop_table(results),
                                  _paired.summary_table(results)]
    map_cfg = _timed_configs(results, "map")
    if map_cfg:
        tables.append(simple_timed_table(
            results, "map", f"Ordered map over a lazy generator of {map_cfg[0].n:,} items,"
                            f" max_workers={map_cfg[0].workers:,}"))
    stretch = _timed_configs(results, "stretch")
    if stretch:
        tables.append(simple_timed_table(
            results, "stretch", f"Stretch goal: ordered map of {stretch[0].n:,} no-op jobs on"
                                f" {stretch[0].workers:,} long-lived worker tasks"))
    blocking = (("blocking", "no-op calls"), ("blocking_sleep", "calls of time.sleep(0.001)"))
    for workload, what in blocking:
        cfg = _timed_configs(results, workload)
        if cfg:
            tables.append(simple_timed_table(
                results, workload, f"Blocking callables: {cfg[0].n:,} {what}, 32 worker threads"))
    tables.append(memory_table(results))
    return [t for t in tables if t is not None]


#
# Targets (issue 7)
#


def targets(results: Results) -> list[tuple[str, str, str]]:
    """(target, "met"/"MISSED"/"n/a", detail) for each target the run can judge."""
    out: list[tuple[str, str, str]] = []
    keys = results.contenders("throughput")
    ours = [k for k in ("ours_submit", "ours_map") if k in keys]
    peers = [k for k in _contenders.PEERS if k in keys]
    configs = _timed_configs(results, "throughput")
    if ours and configs:
        # Paired median speed of ours over each peer, the closest peer reported.
        worst: tuple[float, str] = (math.inf, "")
        for c in configs:
            for o in ours:
                for p in peers:
                    med = summary(paired(results.times(c, o), results.times(c, p)))[0]
                    if med < worst[0]:
                        worst = (med, f"{o} vs {p}, {c.loop}, W={_wfmt(c.workers)}: {med:.2f}x")
        out.append(("ours ahead of every peer library, every max_workers, both loops",
                    "met" if worst[0] > 1.0 else "MISSED", f"closest: {worst[1]}"))
        details, ok = [], True
        for c in configs:
            base = baseline_key(results, c)
            if base is None:
                continue
            for o in ours:
                med = summary(paired(results.times(c, base), results.times(c, o)))[0]
                ok &= med <= 1.0
                details.append(f"{o} {c.loop} W={_wfmt(c.workers)}: {med:.2f}")
        out.append(("no slower than Semaphore + create_task (time ratio ours/baseline <= 1.0)",
                    "met" if ok else "MISSED", "; ".join(details)))
        stock = {c.workers: c for c in configs if c.loop == "asyncio"}
        uv = {c.workers: c for c in configs if c.loop == "uvloop"}
        details, ok = [], True
        for w in stock:
            if w not in uv:
                continue
            base = baseline_key(results, stock[w])
            if base is None:
                continue
            base_gain = summary(
                paired(results.times(uv[w], base), results.times(stock[w], base)))[0]
            for o in ours:
                gain = summary(paired(results.times(uv[w], o), results.times(stock[w], o)))[0]
                ok &= gain >= base_gain
                details.append(f"W={_wfmt(w)} {o} {gain:.2f}x vs baseline {base_gain:.2f}x")
        if details:
            out.append(("uvloop: ours gains at least as much as the stdlib pattern",
                        "met" if ok else "MISSED", "; ".join(details)))
    out += _paired.targets(results)
    mem = results.plan.memory
    trace = {c.n: c for c in mem if c.measure == "tracemalloc"}
    if trace:
        big, small = max(trace), min(trace)
        details, ok = [], True
        for mine in [k for k in ("ours_submit", "ours_map", "ours_map_unordered")
                     if k in results.contenders("memory")]:
            a = summary(results.values(trace[big], mine, "trace_peak"))[0]
            b = summary(results.values(trace[small], mine, "trace_peak"))[0]
            ok &= a <= 1.5 * b
            details.append(f"{mine}: {a / b:.2f}x ({b / 2**20:.2f} -> {a / 2**20:.2f} MiB)")
        out.append((f"memory flat: peak at {big:,} jobs within 1.5x of {small:,} (tracemalloc)",
                    "met" if ok else "MISSED", "; ".join(details)))
    for c in _timed_configs(results, "map"):
        if "ours_map" in results.contenders("map"):
            med = summary(paired(results.times(c, "window"), results.times(c, "ours_map")))[0]
            out.append((f"ordered map ({c.loop}): time ratio ours / stdlib window",
                        "info", f"{med:.2f}"))
    return out


def targets_table(results: Results) -> Table:
    table = Table("Targets (issue 7)", ["Target", "Status", "Measured"])
    for name, status, detail in targets(results):
        table.rows.append([name, f"**{status}**" if status == "MISSED" else status, detail])
    table.notes.append("The sync-bridge targets are judged in the bridge section.")
    return table


#
# Rendering
#


def _md_table(t: Table) -> str:
    lines = [f"### {t.title}", ""]
    lines.append("| " + " | ".join(t.header) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(t.header))) + "|")
    for row in t.rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    if t.notes:
        lines.append("")
        lines.extend(f"- {n}" for n in t.notes)
    return "\n".join(lines)


def _rst_table(t: Table) -> str:
    lines = [t.title, "~" * len(t.title), "", ".. list-table::", "   :header-rows: 1", ""]
    for row in [t.header, *t.rows]:
        for i, cell in enumerate(row):
            lines.append(f"   {'* -' if i == 0 else '  -'} {cell or ' '}")
    if t.notes:
        lines.append("")
        lines.extend(f"* {n}" for n in t.notes)
    return "\n".join(lines)


def _bridge_md(bridge: Any) -> str:
    if not bridge:
        return ""
    head = "## Sync bridge (benchmarks/bench_bridge.py)\n\n"
    kind = bridge.get("kind")
    if kind == "rows":
        rows = bridge["rows"]
        if isinstance(rows, str):
            return head + rows
        if rows and isinstance(rows[0], dict):
            cols = list(rows[0])
            t = Table("Sync bridge", cols, [[str(r.get(c, "")) for c in cols] for r in rows])
            return head + _md_table(t)
        return head + "\n".join(str(r) for r in rows)
    return head + str(bridge.get("text", ""))


def _bridge_rst(bridge: Any) -> str:
    if not bridge:
        return ""
    title = "Sync bridge"
    head = f"{title}\n{'~' * len(title)}\n\n"
    if bridge.get("kind") == "rows" and bridge["rows"] and isinstance(bridge["rows"][0], dict):
        rows = bridge["rows"]
        cols = list(rows[0])
        t = Table(title, cols, [[str(r.get(c, "")) for c in cols] for r in rows])
        return _rst_table(t)
    text = bridge.get("text") or "\n".join(map(str, bridge.get("rows", [])))
    return head + "::\n\n" + "\n".join("   " + line for line in text.splitlines())


def markdown(results: Results, command: str) -> str:
    parts = ["# coroexecutor benchmarks", ""]
    parts += [f"- {line.replace('``', '`')}" for line in header_lines(results, command)]
    parts += ["", _md_table(targets_table(results))]
    for t in build_tables(results):
        parts += ["", _md_table(t)]
    bridge = _bridge_md(results.bridge)
    if bridge:
        parts += ["", bridge]
    return "\n".join(parts) + "\n"


def rst(results: Results, command: str, chart: str | None) -> str:
    parts = [DOC_BEGIN, ""]
    parts += [f"* {line}" for line in header_lines(results, command)]
    if chart:
        parts += ["", f".. image:: {chart}",
                  "   :alt: throughput relative to Semaphore + create_task", "   :width: 100%"]
    parts += ["", _rst_table(targets_table(results))]
    for t in build_tables(results):
        parts += ["", _rst_table(t)]
    bridge = _bridge_rst(results.bridge)
    if bridge:
        parts += ["", bridge]
    parts += ["", DOC_END]
    return "\n".join(parts) + "\n"


def update_doc_page(path: Path, generated: str, skeleton: str) -> None:
    """Replace the generated block of the page (create the page from skeleton if new)."""
    text = path.read_text() if path.exists() else skeleton
    if DOC_BEGIN not in text or DOC_END not in text:
        text = text.rstrip() + "\n\n" + DOC_BEGIN + "\n" + DOC_END + "\n"
    head = text[: text.index(DOC_BEGIN)]
    tail = text[text.index(DOC_END) + len(DOC_END) + 1 :]
    path.write_text(head + generated + tail)


#
# Chart
#


def write_chart(results: Results, path: Path) -> bool:
    """Bar chart of the throughput speed ratios; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    loops = [lp for lp in ("asyncio", "uvloop") if _timed_configs(results, "throughput", lp)]
    if not loops:
        return False
    keys = results.contenders("throughput")
    fig, axes = plt.subplots(len(loops), 1, figsize=(11, 4.2 * len(loops)), squeeze=False)
    for ax, loop in zip(axes[:, 0], loops):
        configs = _timed_configs(results, "throughput", loop)
        width = 0.8 / len(configs)
        for j, c in enumerate(configs):
            base = baseline_key(results, c)
            meds, los, his = [], [], []
            for key in keys:
                med, lo, hi = summary(paired(results.times(c, key), results.times(c, base))) \
                    if base else (math.nan,) * 3
                meds.append(med)
                los.append(med - lo)
                his.append(hi - med)
            xs = [i + (j - (len(configs) - 1) / 2) * width for i in range(len(keys))]
            ax.bar(xs, meds, width, yerr=[los, his], capsize=2, label=f"max_workers={c.workers:,}")
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([_contenders.find("throughput", k).label for k in keys],
                           rotation=30, ha="right", fontsize=8)
        for tick, key in zip(ax.get_xticklabels(), keys):
            if key.startswith("ours"):
                tick.set_fontweight("bold")
        ax.set_ylabel("speed vs Semaphore + create_task")
        n = configs[0].n
        ax.set_title(f"{n:,} no-op jobs, {_loop_name(loop)}"
                     " (higher is faster; bars: median, whiskers: min-max over rounds)",
                     fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
