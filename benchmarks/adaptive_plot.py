"""``python -m benchmarks.adaptive_plot [--out PATH]``: the adaptive limit over time.

Runs the limiter behind ``Adaptive`` against the simulated server of the tests
(tests/_simserver.py: virtual time, so the run is exact and takes a second or two)
while the server's capacity steps down and back up, and plots the limit against the
capacity. The default output is the chart in docs/semantics.rst.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coroexecutor import Adaptive
from coroexecutor._limiter import AdaptiveLimit
from tests._simserver import SimServer, drive

ROOT = Path(__file__).resolve().parent.parent
DOC_CHART = ROOT / "docs" / "_static" / "adaptive.png"

# (from this many seconds of virtual time, capacity)
SCHEDULE = ((0.0, 200.0), (40.0, 100.0), (80.0, 300.0), (130.0, 60.0), (170.0, 200.0))
END = 210.0


def capacity(now: float) -> float:
    """The server's capacity at ``now``: the last step of SCHEDULE that has begun."""
    current = SCHEDULE[0][1]
    for since, value in SCHEDULE:
        if now >= since:
            current = value
    return current


def simulate(seed: int = 1) -> tuple[list[float], list[int], list[float], list[bool]]:
    """Times, limits, capacities and probe flags after every completion, until END."""
    server = SimServer(capacity=capacity, thrash=1.0, jitter=0.3, seed=seed)
    limiter = AdaptiveLimit(Adaptive(min=4, max=1000, initial=4))
    probes: list[bool] = []

    class Watch:  # the limiter, noting after each completion whether it probes
        limit = limiter.limit

        def on_done(
            self, latency: float, error: BaseException | None = None, in_flight: int | None = None
        ) -> int:
            value = limiter.on_done(latency, error, in_flight)
            probes.append(limiter.probing)
            return value

    # Jobs complete at up to capacity / base per second: enough completions to reach END.
    bounds = [since for since, _ in SCHEDULE[1:]] + [END]
    work = sum((end - since) * c for (since, c), end in zip(SCHEDULE, bounds))
    run = drive(server, Watch(), completions=int(work / server.base), trace=True)
    times, limits, capacities = [], [], []
    for now, limit, cap in run.trace:
        if now > END:
            break
        times.append(now)
        limits.append(limit)
        capacities.append(cap)
    return times, limits, capacities, probes[: len(times)]


def plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, limits, capacities, probes = simulate()
    step = max(1, len(times) // 4000)  # enough points for the eye, a small file
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    ax.plot(times[::step], capacities[::step], color="0.55", lw=2, label="capacity C")
    ax.plot(times[::step], limits[::step], color="tab:blue", lw=1, label="adaptive limit")
    shown = [(t, v) for t, v, p in zip(times, limits, probes) if p][::step]
    if shown:
        xs, ys = [t for t, _ in shown], [v for _, v in shown]
        ax.scatter(xs, ys, s=2, color="tab:orange", label="probe rounds", zorder=3)
    ax.set_xlabel("virtual time (s); each job takes 0.1 s unloaded")
    ax.set_ylabel("jobs at once")
    ax.set_title("Adaptive(min=4, max=1000, initial=4) against a server whose capacity changes")
    ax.set_ylim(0, max(max(limits), max(capacities)) * 1.15)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adaptive_plot", description=__doc__)
    parser.add_argument("--out", type=Path, default=DOC_CHART, help=f"default: {DOC_CHART}")
    args = parser.parse_args(argv)
    plot(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
