"""Adaptive concurrency: the ``Adaptive`` settings and the limiter, in virtual time.

The limiter is a pure object fed one completion at a time, so these tests drive it with
a discrete-event simulation of a server (tests/_simserver.py): no event loop, no sleeps,
no wall clock; every run is exact and repeatable. The server's latency rises steeply past
its capacity ``C`` (``thrash`` sets how steeply) and it answers 503 past ``2 * C``.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import re
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import coroexecutor
from coroexecutor import Adaptive
from coroexecutor._limiter import ERROR_BACKOFF, MIN_SAMPLES, AdaptiveLimit
from tests._simserver import Overloaded, SimServer, best_fixed_limit, drive

SOAK = os.environ.get("COROEXECUTOR_SOAK", "") not in ("", "0")
if SOAK:  # tests/soak.py: many random examples (run with a longer timeout)
    SIM = settings(
        max_examples=int(os.environ.get("COROEXECUTOR_SOAK_EXAMPLES", "200")), deadline=None
    )
else:  # CI: a fixed seed and a modest count, so a run is repeatable and quick
    SIM = settings(max_examples=12, deadline=None, derandomize=True, database=None)

# The simulations run on the CPU in virtual time: slow on a loaded machine, never a hang.
SIM_TIMEOUT = pytest.mark.timeout(3600 if SOAK else 240)

#
# The settings object
#


def test_defaults_and_repr() -> None:
    config = Adaptive()
    assert (config.min, config.max, config.initial, config.overload) == (4, 1000, 32, None)
    assert repr(config) == "Adaptive(min=4, max=1000, initial=32)"
    assert coroexecutor.Adaptive is Adaptive
    assert Adaptive.__module__ == "coroexecutor"


async def _async_overload(exc: BaseException) -> bool:
    return True


class _AsyncCall:
    async def __call__(self, exc: BaseException) -> bool:
        return True


@pytest.mark.parametrize(
    "overload",
    [_async_overload, functools.partial(_async_overload), _AsyncCall()],
    ids=["async def", "partial", "async __call__"],
)
def test_an_async_overload_predicate_is_refused_at_once(overload: Any) -> None:
    # Found by a docs-only tester: accepted, its coroutine (true, never awaited) made
    # every error an overload and warned once per failed job.
    with pytest.raises(TypeError, match="not an async one"):
        Adaptive(overload=overload)


def test_repr_shows_the_overload_predicate() -> None:
    def is_503(exc: BaseException) -> bool:
        return isinstance(exc, Overloaded)

    assert repr(Adaptive(min=1, max=8, initial=2, overload=is_503)) == (
        f"Adaptive(min=1, max=8, initial=2, overload={is_503!r})"
    )


@pytest.mark.parametrize(
    ("kwargs", "initial"),
    [({"min": 64}, 64), ({"max": 8}, 8), ({"min": 1, "max": 1}, 1), ({"min": 10}, 32)],
)
def test_the_default_initial_is_32_moved_into_the_bounds(kwargs: Any, initial: int) -> None:
    assert Adaptive(**kwargs).initial == initial


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"min": 0}, ValueError, "min must be greater than 0 (got 0)"),
        ({"max": -1}, ValueError, "max must be greater than 0 (got -1)"),
        ({"min": 2.5}, TypeError, "min must be an int (got 2.5)"),
        ({"max": True}, TypeError, "max must be an int (got True)"),
        ({"initial": "8"}, TypeError, "initial must be an int (got '8')"),
        ({"min": 9, "max": 8}, ValueError, "min must not be greater than max (got min=9, max=8)"),
        (
            {"min": 4, "max": 8, "initial": 9},
            ValueError,
            "initial must be between min and max (got 9, min=4, max=8)",
        ),
        ({"overload": 503}, TypeError, "overload must be a plain function, or None (got 503)"),
    ],
)
def test_bad_settings_are_refused(kwargs: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Adaptive(**kwargs)


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Adaptive(4, 100)  # type: ignore[call-arg]  # the point: positional arguments are refused


def test_settings_are_immutable_values() -> None:
    config = Adaptive(min=2, max=50, initial=10)
    with pytest.raises(AttributeError, match="Adaptive objects are immutable"):
        config.min = 3  # type: ignore[misc]  # the point: no assignment
    with pytest.raises(AttributeError):
        config.anything = 1  # no new attributes either
    assert config == Adaptive(min=2, max=50, initial=10)
    assert config != Adaptive(min=2, max=50, initial=11)
    assert hash(config) == hash(Adaptive(min=2, max=50, initial=10))
    assert pickle.loads(pickle.dumps(config)) == config


#
# The limiter, fed by hand
#


class Recorder:
    """Wraps a limiter and records, after each completion, the limit and whether the
    limiter was in a probe round."""

    def __init__(self, limiter: AdaptiveLimit) -> None:
        self.limiter = limiter
        self.rows: list[tuple[int, bool]] = []

    @property
    def limit(self) -> int:
        return self.limiter.limit

    def on_done(
        self, latency: float, error: Optional[BaseException] = None, in_flight: Optional[int] = None
    ) -> int:
        limit = self.limiter.on_done(latency, error, in_flight)
        self.rows.append((limit, self.limiter.probing))
        return limit


def feed(
    limiter: AdaptiveLimit,
    n: int,
    latency: float = 0.1,
    error: Optional[BaseException] = None,
    in_flight: Optional[int] = None,
) -> list[int]:
    return [limiter.on_done(latency, error, in_flight) for _ in range(n)]


def test_a_storm_of_errors_shrinks_the_limit_once_per_round() -> None:
    limiter = AdaptiveLimit(Adaptive(min=4, max=1000, initial=100))
    limits = feed(limiter, 10_000, error=Overloaded())
    steps = [b for a, b in zip([100, *limits], limits) if a != b]
    # Each step is one multiplicative decrease ...
    expected, level = [], 100.0
    while int(level) > 4:
        level = max(level * ERROR_BACKOFF, 4.0)
        expected.append(int(level))
    assert steps == expected
    # ... made after a whole round: a burst as large as the limit takes one step only.
    assert limits[:99] == [100] * 99
    assert limits[99] == 70
    assert limits[-1] == 4


def test_only_overload_errors_shrink_the_limit() -> None:
    config = Adaptive(min=4, max=1000, initial=100, overload=lambda e: isinstance(e, Overloaded))
    limiter = AdaptiveLimit(config)
    assert set(feed(limiter, 1000, error=ValueError("not found"))) == {100}
    feed(limiter, 100, error=Overloaded())
    assert limiter.limit == 70


def test_an_overload_predicate_that_raises_propagates_and_counts_nothing() -> None:
    def broken(exc: BaseException) -> bool:
        raise LookupError("bug in the predicate")

    limiter = AdaptiveLimit(Adaptive(min=4, max=100, initial=40, overload=broken))
    with pytest.raises(LookupError, match="bug in the predicate"):
        limiter.on_done(0.1, ValueError())
    # That job was not counted: the round still needs all of its completions.
    limits = feed(limiter, max(40, MIN_SAMPLES))
    assert limits[-2] == 40
    assert limits[-1] != 40


def _logged(predicate: Any) -> Any:
    """A decorator as users write them: a plain function around the predicate."""

    @functools.wraps(predicate)
    def wrapper(exc: BaseException) -> Any:
        return predicate(exc)

    return wrapper


@pytest.mark.parametrize(
    "overload",
    [_logged(_async_overload), lambda exc: _async_overload(exc)],
    ids=["decorated", "lambda"],
)
def test_an_async_overload_predicate_the_constructor_cannot_see_raises_when_asked(
    overload: Any,
) -> None:
    # Found by a docs-only tester: behind a plain wrapper an async predicate passed the
    # constructor's check, and its coroutine (true, never awaited) made every error an
    # overload. Its answer is checked: a TypeError, reported as any error of the
    # predicate is, the coroutine closed (no "never awaited" warning: warnings are errors
    # in this suite), the job not counted.
    limiter = AdaptiveLimit(Adaptive(min=4, max=100, initial=40, overload=overload))
    with pytest.raises(TypeError, match="overload must be a plain function: it returned"):
        limiter.on_done(0.1, ValueError())
    assert feed(limiter, max(40, MIN_SAMPLES))[-2] == 40  # not counted


def test_the_limit_does_not_grow_while_the_caller_leaves_it_unused() -> None:
    limiter = AdaptiveLimit(Adaptive(min=4, max=1000, initial=32))
    limits = feed(limiter, 5000, in_flight=10)
    assert max(limits) == 32  # (a probe round dips below it, to half of what is used)
    assert limits[-1] == 32
    feed(limiter, 2 * MIN_SAMPLES, in_flight=32)  # a round that fills it
    assert limiter.limit > 32


def test_latency_near_the_baseline_grows_the_limit_up_to_max() -> None:
    recorder = Recorder(AdaptiveLimit(Adaptive(min=4, max=300, initial=4)))
    for _ in range(20_000):
        recorder.on_done(0.1)
    grown = [limit for limit, probing in recorder.rows if not probing]
    assert grown == sorted(grown)  # only a probe round ever lowers it
    assert grown[-1] == 300


events = st.lists(
    st.tuples(
        st.one_of(st.floats(0.0, 1e6), st.sampled_from([0.0, 1e-9, 1e9])),
        st.sampled_from([None, None, None, "overload", "other"]),
        st.one_of(st.none(), st.integers(0, 2000)),
    ),
    max_size=3000,
)


@given(
    low=st.integers(1, 50),
    span=st.integers(0, 500),
    start=st.floats(0, 1),
    events=events,
)
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
def test_the_limit_never_leaves_its_bounds(
    low: int, span: int, start: float, events: list[tuple[float, Optional[str], Optional[int]]]
) -> None:
    high = low + span
    initial = low + int(start * span)
    limiter = AdaptiveLimit(
        Adaptive(min=low, max=high, initial=initial, overload=lambda e: isinstance(e, Overloaded))
    )
    for latency, kind, in_flight in events:
        error = None if kind is None else Overloaded() if kind == "overload" else KeyError()
        limit = limiter.on_done(latency, error, in_flight)
        assert low <= limit <= high
        assert limit == limiter.limit


#
# The limiter against the simulated server
#


def adaptive(initial: str, low: int = 4, high: int = 1000) -> Recorder:
    start = low if initial == "min" else high
    return Recorder(AdaptiveLimit(Adaptive(min=low, max=high, initial=start)))


def test_the_simulated_server_is_best_at_its_capacity() -> None:
    # The model the tests rely on: below C throughput grows with the limit; above it falls.
    server = SimServer(capacity=50, thrash=1.0, seed=3)
    rates = {n: drive(server, n, 5000, measure_from=1000).throughput for n in (25, 40, 50, 60, 80)}
    assert rates[25] < rates[40] < rates[50]
    assert rates[50] > rates[60] > rates[80]
    assert drive(server, 150, 2000).overloads > 0  # past 2 * C it answers 503
    assert drive(server, 50, 3000).limits == drive(server, 50, 3000).limits  # repeatable


@given(
    capacity=st.integers(20, 400),
    thrash=st.sampled_from([0.5, 1.0, 2.0]),
    jitter=st.floats(0.0, 0.4),
    seed=st.integers(0, 1000),
    initial=st.sampled_from(["min", "max"]),
)
@SIM
@SIM_TIMEOUT
def test_the_limit_converges_to_the_capacity(
    capacity: int, thrash: float, jitter: float, seed: int, initial: str
) -> None:
    server = SimServer(capacity=capacity, thrash=thrash, jitter=jitter, seed=seed)
    recorder = adaptive(initial)
    total = max(20_000, 120 * capacity)
    drive(server, recorder, total)
    tail = recorder.rows[total // 2 :]
    # Within +-30% of C outside probe rounds; probe rounds (a deliberate dip to half the
    # limit, to re-measure the no-load latency) are a small share of the completions.
    outside = [
        limit for limit, probing in tail if not probing and abs(limit - capacity) > 0.3 * capacity
    ]
    assert outside == []
    assert sum(probing for _, probing in tail) <= 0.05 * len(tail)


# Latency up to quadratic in the load past C, and C of 40 or more. Steeper still (cubic,
# thrash=2) or with a smaller C, one job more than C already costs over 5% of the
# throughput, and the ratio measured falls to 0.86-0.9 (docs/semantics.rst says so).
@given(
    capacity=st.integers(40, 400),
    thrash=st.sampled_from([0.5, 1.0]),
    jitter=st.floats(0.0, 0.4),
    seed=st.integers(0, 1000),
    initial=st.sampled_from(["min", "max"]),
)
@SIM
@SIM_TIMEOUT
def test_throughput_is_at_least_90_percent_of_the_best_fixed_limit(
    capacity: int, thrash: float, jitter: float, seed: int, initial: str
) -> None:
    server = SimServer(capacity=capacity, thrash=thrash, jitter=jitter, seed=seed)
    total = max(20_000, 120 * capacity)
    run = drive(server, adaptive(initial), total, measure_from=total // 2)
    candidates = sorted({max(1, round(capacity * f / 20)) for f in range(10, 41)})
    best, best_rate = best_fixed_limit(server, candidates, total // 2, total // 4)
    assert abs(best - capacity) <= 0.1 * capacity + 1  # the model: the best limit is C
    assert run.throughput >= 0.9 * best_rate


@given(
    capacity=st.integers(40, 400),
    thrash=st.sampled_from([0.5, 1.0, 2.0]),
    jitter=st.floats(0.0, 0.4),
    seed=st.integers(0, 1000),
)
@SIM
@SIM_TIMEOUT
def test_the_limit_follows_when_the_capacity_halves(
    capacity: int, thrash: float, jitter: float, seed: int
) -> None:
    change_at = 30.0  # seconds of virtual time: some 300 * C completions before it
    server = SimServer(
        capacity=lambda now: capacity if now < change_at else capacity / 2,
        thrash=thrash,
        jitter=jitter,
        seed=seed,
    )
    recorder = adaptive("min")
    run = drive(server, recorder, 500 * capacity, trace=True)
    change = next(i for i, (_, _, c) in enumerate(run.trace) if c < capacity)
    after = recorder.rows[change:]
    half = capacity / 2
    strays = [
        i
        for i, (limit, probing) in enumerate(after)
        if not probing and abs(limit - half) > 0.3 * half
    ]
    # Within +-30% of the new capacity after at most 10 * C completions (the slowest
    # measured: about 6 * C, that is some 3 rounds), and it stays there.
    followed_after = strays[-1] + 1 if strays else 0
    assert followed_after <= 10 * capacity


def test_the_limit_recovers_when_the_server_becomes_slower_at_every_load() -> None:
    # Twice the latency at every load is not less capacity: the limit may dip while the
    # limiter tells the two apart (a cut in load that does not cut latency), then returns.
    capacity = 100
    server = SimServer(capacity=capacity, thrash=1.0, seed=5)
    recorder = adaptive("min")
    drive(server, recorder, 300 * capacity)
    server.base *= 2
    recorder.rows.clear()
    drive(server, recorder, 300 * capacity)
    limits = [limit for limit, _ in recorder.rows]
    dipped = next(i for i, limit in enumerate(limits) if limit < 0.7 * capacity)
    back = next(i for i in range(dipped, len(limits)) if limits[i] >= 0.7 * capacity)
    assert back - dipped <= 40 * capacity
    tail = [limit for limit, probing in recorder.rows[len(limits) // 2 :] if not probing]
    assert all(abs(limit - capacity) <= 0.3 * capacity for limit in tail)


def test_an_error_storm_from_the_server_shrinks_the_limit_within_its_bounds() -> None:
    # The server's capacity collapses to 1: nearly every job is turned away with a 503.
    server = SimServer(capacity=lambda now: 200 if now < 30 else 1, thrash=1.0, seed=9)
    recorder = adaptive("min", low=3)
    run = drive(server, recorder, 60_000, trace=True)
    change = next(i for i, (_, _, c) in enumerate(run.trace) if c < 200)
    limits = [limit for limit, _ in recorder.rows]
    before = limits[change - 1]
    assert before >= 140
    after = limits[change:]
    assert min(after) >= 3
    assert after[-1] <= 4
    # Multiplicatively: each drop is by at most half (the gradient floor; an error round
    # takes 0.7), and the drops are a round apart, not all at once.
    drops = [(a, b) for a, b in zip(limits[change - 1 :], after) if b < a]
    assert all(b >= math.floor(a * 0.5) for a, b in drops)
    assert len(drops) >= math.log(before / 4) / math.log(1 / 0.5)


@pytest.mark.timeout(60)
def test_with_use_counted_at_starts_growth_needs_half_of_the_limit_at_once() -> None:
    # As the executors feed it: the use comes from the starts (how many jobs ran as one
    # started), and a completion's in_flight only says how many jobs to let settle, so a
    # burst of completions that still hold their slots is no evidence of use.
    def round_of(limiter: AdaptiveLimit, use: int) -> None:
        for _ in range(max(limiter.limit, MIN_SAMPLES)):
            limiter.note_use(use)
            limiter.on_done(0.1, in_flight=limiter.limit)

    limiter = AdaptiveLimit(Adaptive(min=1, max=1000, initial=32), use_at_start=True)
    for _ in range(100):  # (the probe rounds among them dip, then come back)
        round_of(limiter, 15)
        assert limiter.limit <= 32
    while limiter.probing:
        round_of(limiter, 15)
    assert limiter.limit == 32
    round_of(limiter, 16)  # half of it at once: slow start doubles it
    while limiter.probing:
        round_of(limiter, 16)
    assert limiter.limit == 64
    limiter.on_done(0.1, Overloaded(), in_flight=64)  # ends slow start: 64 * 0.7
    for _ in range(MIN_SAMPLES * 3):
        if limiter.limit != 64:
            break
        limiter.on_done(0.1, Overloaded(), in_flight=64)
    after_errors = limiter.limit
    assert after_errors == int(64 * ERROR_BACKOFF)
    for _ in range(40):  # the additive step needs the same evidence
        round_of(limiter, after_errors // 2 - 1)
        assert limiter.limit <= after_errors
    round_of(limiter, after_errors)  # all of it at once: the additive step, no doubling
    while limiter.probing:
        round_of(limiter, after_errors)
    assert after_errors < limiter.limit < 2 * after_errors
