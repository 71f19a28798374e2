"""A simulated server in virtual time, and a client that keeps ``limit`` jobs in flight.

A discrete-event simulation: no event loop, no sleeps, no wall clock, so every run is
exact and repeatable (the only randomness is a seeded ``random.Random``). Used by
tests/test_adaptive.py and by benchmarks/adaptive_plot.py.

The server shares its capacity among the jobs it admits (processor sharing). Each job
needs ``base`` seconds of work, jittered by ``jitter`` either way. With ``n`` jobs in
service and capacity ``C``, each job progresses at speed 1 while ``n <= C`` and at
``(C / n) ** (1 + thrash)`` past it: latency at a steady ``n`` is ``base * (n / C) **
(1 + thrash)``, so it rises steeply past ``C`` and throughput *falls* there (with
``thrash=1``, as ``C * C / n``): the best fixed limit is ``C``. A job that arrives while
``2 * C`` jobs are in service is turned away at once with :class:`Overloaded` (an HTTP
503), after ``reject`` seconds.

All jobs in service move at the same speed, so a virtual *work clock* ``V`` (work done
per job since the start) orders their completions: a job admitted at ``V0`` ends when
``V`` reaches ``V0 + work``. Each event then costs O(log n).
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Union

__all__ = ["Overloaded", "Run", "SimServer", "best_fixed_limit", "drive"]


class Overloaded(Exception):
    """The simulated server turned a job away (think HTTP 503)."""


class Limiter(Protocol):
    """What drive() needs of a limiter: its current limit, and to be told of each end."""

    @property
    def limit(self) -> int: ...

    def on_done(
        self, latency: float, error: Optional[BaseException] = None, in_flight: Optional[int] = None
    ) -> int: ...


Capacity = Union[float, Callable[[float], float]]


@dataclass
class SimServer:
    """The server: ``capacity`` is a number or a function of the virtual time."""

    capacity: Capacity
    base: float = 0.1
    jitter: float = 0.2
    thrash: float = 1.0
    reject: float = 0.005
    seed: int = 0

    def capacity_at(self, now: float) -> float:
        c = self.capacity
        return c(now) if callable(c) else c

    def speed(self, n: int, capacity: float) -> float:
        """How fast each of ``n`` jobs in service progresses (1: at full speed)."""
        return 1.0 if n <= capacity else (capacity / n) ** (1.0 + self.thrash)


@dataclass
class Run:
    """What a run of :func:`drive` saw."""

    completions: int = 0
    successes: int = 0
    overloads: int = 0
    elapsed: float = 0.0
    # (virtual time, limit in force, capacity) after every completion, when recorded.
    trace: list[tuple[float, int, float]] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)  # the limit after every completion

    @property
    def throughput(self) -> float:
        """Successful jobs per second of virtual time."""
        return self.successes / self.elapsed if self.elapsed else 0.0


def drive(
    server: SimServer,
    limiter: Union[Limiter, int],
    completions: int,
    *,
    trace: bool = False,
    measure_from: int = 0,
) -> Run:
    """Keep as many jobs in flight as ``limiter`` allows (a fixed int, or a limiter fed
    every completion) until ``completions`` jobs have finished.

    ``measure_from``: count successes and time only from that completion on (to leave
    out a warm-up); ``limits`` and ``trace`` always cover the whole run.
    """
    rng = random.Random(server.seed)
    adaptive = None if isinstance(limiter, int) else limiter
    # A fixed limit, or the limiter's limit before any job ended.
    current = limiter if isinstance(limiter, int) else limiter.limit
    now = 0.0
    work_clock = 0.0  # work each job in service has received since the start
    seq = 0
    in_service: list[tuple[float, int, float]] = []  # (V at which it ends, seq, start time)
    turned_away: list[tuple[float, int, float]] = []  # (time it ends, seq, start time)
    run = Run()
    started_at = 0.0
    while run.completions < completions:
        capacity = server.capacity_at(now)
        while len(in_service) + len(turned_away) < current:
            seq += 1
            if len(in_service) >= 2 * capacity:
                heapq.heappush(turned_away, (now + server.reject, seq, now))
            else:
                work = server.base * (1.0 + server.jitter * (2.0 * rng.random() - 1.0))
                heapq.heappush(in_service, (work_clock + work, seq, now))
        speed = server.speed(len(in_service), capacity)
        next_service = now + (in_service[0][0] - work_clock) / speed if in_service else math.inf
        next_reject = turned_away[0][0] if turned_away else math.inf
        in_flight = len(in_service) + len(turned_away)
        if next_reject <= next_service:
            _, _, start = heapq.heappop(turned_away)
            work_clock += (next_reject - now) * speed
            now = next_reject
            error: Optional[BaseException] = Overloaded()
        else:
            end_clock, _, start = heapq.heappop(in_service)
            work_clock = end_clock
            now = next_service
            error = None
        run.completions += 1
        if run.completions == measure_from:
            started_at = now
        elif run.completions > measure_from:
            if error is None:
                run.successes += 1
            else:
                run.overloads += 1
        if adaptive is not None:
            current = adaptive.on_done(now - start, error, in_flight)
        run.limits.append(current)
        if trace:
            run.trace.append((now, current, server.capacity_at(now)))
    run.elapsed = now - started_at
    return run


def best_fixed_limit(
    server: SimServer, candidates: list[int], completions: int, measure_from: int
) -> tuple[int, float]:
    """The fixed limit with the best throughput on ``server``, and that throughput."""
    results = [
        (drive(server, n, completions, measure_from=measure_from).throughput, n) for n in candidates
    ]
    throughput, best = max(results)
    return best, throughput
