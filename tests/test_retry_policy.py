"""The retry policies on their own: ``Retry``, the normaliser and the delay check.

How the executors use a policy (slots, cancellation, counts) is tested with them; here
a policy is only called, so every test is synchronous and deterministic.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import pickle
import random
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import coroexecutor
from coroexecutor import JobTimeoutError, Retry
from coroexecutor._retry import RetryPolicy, next_delay, resolve_retry

pytestmark = pytest.mark.timeout(15)


class FixedRandom:
    """A random source that returns the given values in turn."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


#
# Retry: what it decides
#


def test_defaults_and_repr() -> None:
    retry = Retry()
    assert (retry.attempts, retry.on, retry.backoff, retry.max_backoff, retry.jitter) == (
        3,
        (OSError, TimeoutError),
        0.1,
        30.0,
        True,
    )
    assert repr(retry) == (
        "Retry(attempts=3, on=(OSError, TimeoutError), backoff=0.1, max_backoff=30.0, jitter=True)"
    )
    assert repr(Retry(on=ValueError, jitter=False)) == (
        "Retry(attempts=3, on=ValueError, backoff=0.1, max_backoff=30.0, jitter=False)"
    )
    assert Retry is coroexecutor.Retry and "Retry" in coroexecutor.__all__
    assert Retry.__module__ == "coroexecutor"


def test_attempts_counts_every_run_including_the_first() -> None:
    retry = Retry(attempts=3, jitter=False)
    error = OSError("refused")
    # Attempt 1 failed: retry; attempt 2 failed: retry; attempt 3 failed: give up.
    assert [retry(attempt, error) is not None for attempt in (1, 2, 3, 4)] == [
        True,
        True,
        False,
        False,
    ]
    assert Retry(attempts=1)(1, error) is None  # one run, no retry


def test_only_the_named_exceptions_are_retried() -> None:
    retry = Retry(on=(ConnectionError, KeyError))
    assert retry(1, ConnectionResetError()) is not None  # a subclass
    assert retry(1, KeyError("k")) is not None
    assert retry(1, ValueError()) is None
    assert retry(1, OSError()) is None  # the base class of a named one is not named


def test_timeout_error_matches_asyncio_and_job_timeouts_on_every_version() -> None:
    retry = Retry()
    assert retry(1, TimeoutError()) is not None
    assert retry(1, asyncio.TimeoutError()) is not None  # another class on 3.9 and 3.10
    assert retry(1, JobTimeoutError("job f() ran longer than job_timeout=1 s")) is not None


def test_exponential_delays_capped_by_max_backoff_without_jitter() -> None:
    retry = Retry(attempts=10, backoff=0.5, max_backoff=3, jitter=False)
    delays = [retry(attempt, OSError()) for attempt in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert Retry(backoff=0, max_backoff=0, jitter=False)(1, OSError()) == 0.0


def test_full_jitter_scales_the_capped_delay_by_the_random_source() -> None:
    retry = Retry(attempts=5, backoff=1, max_backoff=5, rng=FixedRandom(0.5, 0.0, 0.25, 0.999))
    delays = [retry(attempt, OSError()) for attempt in range(1, 5)]
    assert delays == [1 * 0.5, 2 * 0.0, 4 * 0.25, 5 * 0.999]  # ceilings 1, 2, 4, then 5


def test_a_seeded_random_source_makes_the_delays_reproducible() -> None:
    def delays(seed: int) -> list[float | None]:
        retry = Retry(attempts=20, rng=random.Random(seed))
        return [retry(attempt, OSError()) for attempt in range(1, 20)]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


@given(
    attempt=st.integers(min_value=1, max_value=5000),
    backoff=st.floats(min_value=0, max_value=1e6),
    spread=st.floats(min_value=0, max_value=1e6),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_a_delay_is_never_negative_nor_above_the_capped_exponential(
    attempt: int, backoff: float, spread: float, draw: float
) -> None:
    max_backoff = backoff + spread
    plain = Retry(attempts=attempt + 1, backoff=backoff, max_backoff=max_backoff, jitter=False)
    ceiling = plain(attempt, OSError())
    assert ceiling is not None and 0 <= ceiling <= max_backoff
    if attempt < 60:
        assert ceiling == min(max_backoff, backoff * 2 ** (attempt - 1))
    jittered = Retry(
        attempts=attempt + 1, backoff=backoff, max_backoff=max_backoff, rng=FixedRandom(draw)
    )
    delay = jittered(attempt, OSError())
    assert delay is not None and 0 <= delay <= ceiling


def test_a_huge_attempt_number_waits_max_backoff() -> None:
    assert Retry(attempts=10**6, jitter=False)(5000, OSError()) == 30.0


@pytest.mark.parametrize(
    ("attempt", "exc", "error", "message"),
    [
        (0, OSError(), ValueError, "attempt must be 1 or more .* not 0"),
        (-5, OSError(), ValueError, "attempt must be 1 or more .* not -5"),
        (True, OSError(), TypeError, "attempt must be a whole number.* not bool"),
        (2.5, OSError(), TypeError, "attempt must be a whole number.* not float"),
        (math.nan, OSError(), TypeError, "attempt must be a whole number.* not float"),
        ("1", OSError(), TypeError, "attempt must be a whole number.* not str"),
        (1, "not an exception", TypeError, "exc must be the exception instance .* not str"),
        (1, OSError, TypeError, "exc must be the exception instance .* not the class OSError"),
    ],
)
def test_calling_a_retry_with_a_bad_attempt_or_exception_raises(
    attempt: Any, exc: Any, error: type[Exception], message: str
) -> None:
    # A policy of one's own may call a Retry: a mistake there must not become a delay
    # (a NaN attempt gave max_backoff, 0 and -5 gave delays below the first one).
    with pytest.raises(error, match=message):
        Retry(attempts=3, backoff=0.1, jitter=False)(attempt, exc)


def test_a_retry_takes_any_whole_number_for_the_attempt() -> None:
    class Count(int):
        pass

    retry = Retry(attempts=3, backoff=0.1, jitter=False)
    assert retry(Count(2), OSError()) == retry(2, OSError()) == 0.2
    assert retry(Fraction(2).numerator, OSError()) == 0.2


@pytest.mark.parametrize(
    ("draw", "error"),
    [
        (1e9, ValueError),
        (2.0, ValueError),
        (-0.5, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (Fraction(3, 2), ValueError),
        ("0.5", TypeError),
        (None, TypeError),
        (True, TypeError),
        (Decimal("0.5"), TypeError),
    ],
    ids=repr,
)
def test_a_random_source_answering_outside_0_to_1_raises(draw: Any, error: type[Exception]) -> None:
    # Passed through, it made a wait above max_backoff (1e9: 10,000,000 s for a cap of
    # 0.01), a negative one or NaN (brk28 finding 4).
    retry = Retry(backoff=0.01, max_backoff=0.01, rng=FixedRandom(draw))
    rule = "Retry: rng.random() must return a number from 0 to 1 (got "
    with pytest.raises(error, match=re.escape(rule)):
        retry(1, OSError())


def test_a_random_source_answering_0_to_1_scales_the_wait() -> None:
    # 1 (which random.Random never returns) gives the capped wait itself: still in bounds.
    draws = (0, 1, 1.0, 0.5, Fraction(1, 4))
    retry = Retry(attempts=9, backoff=2, max_backoff=2, rng=FixedRandom(*draws))
    delays = [retry(1, OSError()) for _ in draws]
    assert delays == [0.0, 2.0, 2.0, 1.0, 0.5]
    assert all(type(delay) is float for delay in delays)


#
# Retry: a value
#


def test_retry_is_immutable() -> None:
    retry = Retry()
    with pytest.raises(
        AttributeError, match=re.escape("Retry is immutable: cannot set 'attempts'")
    ):
        retry.attempts = 5  # type: ignore[misc]  # read-only: the point is that this fails
    with pytest.raises(AttributeError, match=re.escape("Retry is immutable: cannot delete 'on'")):
        del retry.on
    with pytest.raises(AttributeError):
        retry.other = 1  # no new attributes either
    assert retry.attempts == 3


def test_equal_settings_make_equal_policies() -> None:
    assert Retry() == Retry(3, (OSError, TimeoutError), 0.1, 30.0, True)
    assert Retry(on=OSError) == Retry(on=(OSError,))
    assert Retry(rng=random.Random(1)) == Retry()  # the random source is not a setting
    assert Retry(attempts=4) != Retry()
    assert len({Retry(), Retry(), Retry(jitter=False)}) == 2
    assert Retry() != "Retry()"


def test_copy_and_pickle_give_an_equal_policy() -> None:
    def make() -> Retry:
        return Retry(attempts=5, on=KeyError, backoff=0.2, max_backoff=1, rng=random.Random(3))

    first_delay = make()(1, KeyError())

    def roundtrip(retry: Retry) -> Retry:
        clone: Retry = pickle.loads(pickle.dumps(retry))
        return clone

    for clone_of in (copy.copy, copy.deepcopy, roundtrip):
        original = make()
        clone = clone_of(original)
        assert clone == original
        assert clone(1, KeyError()) == first_delay  # the random source came along


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"attempts": 0}, ValueError, "attempts must be greater than 0 (got 0)"),
        ({"attempts": -1}, ValueError, "attempts must be greater than 0 (got -1)"),
        ({"attempts": 2.0}, TypeError, "attempts must be an int (got 2.0)"),
        ({"attempts": True}, TypeError, "attempts must be an int (got True)"),
        ({"attempts": None}, TypeError, "attempts must be an int (got None)"),
        (
            {"on": "OSError"},
            TypeError,
            "on must be an Exception subclass or a tuple of them (got 'OSError')",
        ),
        (
            {"on": OSError()},
            TypeError,
            "on must be an Exception subclass or a tuple of them (got OSError())",
        ),
        (
            {"on": [OSError]},
            TypeError,
            "on must be an Exception subclass or a tuple of them (got [<class 'OSError'>])",
        ),
        (
            {"on": (OSError, asyncio.CancelledError)},
            TypeError,
            "on must be an Exception subclass or a tuple of them"
            " (got (<class 'OSError'>, <class 'asyncio.exceptions.CancelledError'>))",
        ),
        (
            {"on": KeyboardInterrupt},
            TypeError,
            "on must be an Exception subclass or a tuple of them (got <class 'KeyboardInterrupt'>)",
        ),
        ({"on": ()}, ValueError, "on must name at least one exception class (got ())"),
        ({"backoff": -0.1}, ValueError, "backoff must be 0 or greater (got -0.1)"),
        ({"backoff": math.nan}, ValueError, "backoff must be 0 or greater (got nan)"),
        ({"backoff": math.inf}, ValueError, "backoff must be a finite number (got inf)"),
        ({"backoff": "1"}, TypeError, "backoff must be a number of seconds (got '1')"),
        ({"backoff": False}, TypeError, "backoff must be a number of seconds (got False)"),
        ({"max_backoff": -1}, ValueError, "max_backoff must be 0 or greater (got -1)"),
        ({"max_backoff": math.inf}, ValueError, "max_backoff must be a finite number (got inf)"),
        (
            {"max_backoff": None},
            TypeError,
            "max_backoff must be a number of seconds (got None)",
        ),
        (
            {"backoff": 2, "max_backoff": 1},
            ValueError,
            "max_backoff must not be less than backoff (got max_backoff=1, backoff=2)",
        ),
        ({"jitter": 1}, TypeError, "jitter must be a bool (got 1)"),
        ({"jitter": None}, TypeError, "jitter must be a bool (got None)"),
        ({"rng": 42}, TypeError, "rng must have a random() method, or be None (got 42)"),
    ],
)
def test_bad_settings_are_refused_with_the_rule(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        Retry(**kwargs)


#
# resolve_retry: what retry= accepts
#


def test_resolve_retry_passes_policies_through() -> None:
    retry = Retry()

    def policy(attempt: int, exc: BaseException) -> float | None:
        return None

    class Policy:
        def __call__(self, attempt: int, exc: BaseException) -> float | None:
            return 1.0

    instance = Policy()
    assert resolve_retry(None) is None
    assert resolve_retry(retry) is retry
    assert resolve_retry(policy) is policy
    assert resolve_retry(instance) is instance
    bound = functools.partial(lambda cap, attempt, exc: cap, 2.0)
    assert resolve_retry(bound) is bound


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3, "retry must be a Retry, a callable policy(attempt, exc) or None (got 3)"),
        (True, "retry must be a Retry, a callable policy(attempt, exc) or None (got True)"),
        ((OSError,), "retry must be a Retry, a callable policy(attempt, exc) or None"),
        (Retry, "retry must be a Retry instance, not the class: write retry=Retry()"),
    ],
)
def test_resolve_retry_refuses_what_is_no_policy(value: object, message: str) -> None:
    with pytest.raises(TypeError, match=f"^{re.escape(message)}"):
        resolve_retry(value)


async def async_policy(attempt: int, exc: BaseException) -> float:
    return 0.0


class AsyncPolicy:
    async def __call__(self, attempt: int, exc: BaseException) -> float:
        return 0.0


@pytest.mark.parametrize(
    "policy",
    [async_policy, functools.partial(async_policy, 1), AsyncPolicy()],
    ids=["function", "partial", "object"],
)
def test_resolve_retry_refuses_an_async_policy(policy: object) -> None:
    with pytest.raises(TypeError, match=r"^retry must be a plain callable that returns a delay"):
        resolve_retry(policy)


#
# next_delay: the check of what a policy returned
#


def test_next_delay_returns_the_policys_delay_as_a_float() -> None:
    assert next_delay(lambda attempt, exc: None, 1, OSError()) is None
    delay = next_delay(lambda attempt, exc: 2, 1, OSError())
    assert delay == 2.0 and type(delay) is float
    assert next_delay(lambda attempt, exc: 0, 1, OSError()) == 0.0
    assert next_delay(Retry(jitter=False), 2, OSError()) == pytest.approx(0.2)


def test_next_delay_passes_the_attempt_and_the_exception() -> None:
    seen: list[tuple[int, BaseException]] = []
    error = KeyError("k")

    def policy(attempt: int, exc: BaseException) -> float | None:
        seen.append((attempt, exc))
        return None

    next_delay(policy, 4, error)
    assert seen == [(4, error)]
    assert seen[0][1] is error


@pytest.mark.parametrize(
    "exc",
    [asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(1), GeneratorExit()],
    ids=lambda exc: type(exc).__name__,
)
def test_next_delay_never_asks_about_a_base_exception(exc: BaseException) -> None:
    def policy(attempt: int, exc: BaseException) -> float | None:
        raise AssertionError("the policy was asked")

    assert next_delay(policy, 1, exc) is None


def test_next_delay_lets_the_policys_own_error_through() -> None:
    error = LookupError("no Retry-After header")

    def policy(attempt: int, exc: BaseException) -> float | None:
        raise error

    with pytest.raises(LookupError) as info:
        next_delay(policy, 1, OSError())
    assert info.value is error


@pytest.mark.parametrize("delay", [Fraction(1, 100), Decimal("0.01")], ids=repr)
def test_next_delay_takes_any_real_number_of_seconds(delay: object) -> None:
    assert next_delay(named_policy(delay), 1, OSError()) == 0.01


def named_policy(delay: object) -> RetryPolicy:
    def policy(attempt: int, exc: BaseException) -> Any:
        return delay

    return policy


@pytest.mark.parametrize(
    ("delay", "error", "message"),
    [
        (-1, ValueError, "returned a negative delay (got -1)"),
        (-0.5, ValueError, "returned a negative delay (got -0.5)"),
        (math.nan, ValueError, "must return a number, not NaN"),
        (math.inf, ValueError, "must return a finite delay; to give up, return None (got inf)"),
        ("1.5", TypeError, "must return a number of seconds or None (got '1.5')"),
        (True, TypeError, "must return a number of seconds or None (got True)"),
        (False, TypeError, "must return a number of seconds or None (got False)"),
        ([1], TypeError, "must return a number of seconds or None (got [1])"),
        (1j, TypeError, "must return a number of seconds or None (got 1j)"),
        (10**400, ValueError, "must return a finite delay; to give up, return None (got"
         " 100000000000000000...0000000000000000000)"),
        (Decimal("NaN"), ValueError, "must return a number, not NaN"),
    ],
)
def test_next_delay_refuses_a_bad_delay_and_says_which_policy(
    delay: object, error: type[Exception], message: str
) -> None:
    policy = named_policy(delay)
    with pytest.raises(
        error, match=f"^retry policy {re.escape(repr(policy))} {re.escape(message)}$"
    ):
        next_delay(policy, 1, OSError())


class _FloatRaises(int):
    def __float__(self) -> float:
        raise RuntimeError("float boom")


class _CompareRaises(float):
    def __lt__(self, other: object) -> bool:
        raise RuntimeError("lt boom")

    def __float__(self) -> float:
        return 0.25


def test_a_delay_whose_conversion_raises_is_refused_with_the_type_error() -> None:
    # Its own error would have replaced the documented TypeError (brk7).
    with pytest.raises(TypeError, match="must return a number of seconds or None"):
        next_delay(named_policy(_FloatRaises(1)), 1, OSError())


def test_a_float_subclass_delay_is_used_as_a_plain_float() -> None:
    # Its __lt__ raised from the negative-delay check (brk7); its __float__ is its value.
    delay = next_delay(named_policy(_CompareRaises(0.5)), 1, OSError())
    assert type(delay) is float and delay == 0.25


def test_next_delay_closes_a_coroutine_returned_by_mistake() -> None:
    # A plain function that returns a coroutine slips past resolve_retry. The error says
    # what came back, and the coroutine is closed: no "never awaited" warning (an error
    # under this suite's filterwarnings) follows.
    def policy(attempt: int, exc: BaseException) -> Any:
        return async_policy(attempt, exc)

    with pytest.raises(
        TypeError, match=r"must return a number of seconds or None \(got <coroutine"
    ):
        next_delay(policy, 1, OSError())


class Unreprable:
    """A user's object whose ``__repr__`` raises: messages must show it all the same."""

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ of the user's object")


class Huge:
    """A user's object whose repr is a megabyte long: messages must show it short."""

    def __repr__(self) -> str:
        return "x" * 1_000_000


class UnreprablePolicy(Unreprable):
    """A policy object whose own ``__repr__`` raises."""

    def __init__(self, delay: object) -> None:
        self.delay = delay

    def __call__(self, attempt: int, exc: BaseException) -> Any:
        return self.delay


@pytest.mark.parametrize("delay", [Unreprable(), Huge()], ids=["raises", "huge"])
def test_next_delay_shows_a_bad_delay_by_a_short_repr_that_never_raises(delay: object) -> None:
    # The messages called repr(): a delay whose __repr__ raises failed the job with that
    # RuntimeError instead, and a huge one put a megabyte into the TypeError.
    with pytest.raises(TypeError, match=r"must return a number of seconds or None \(got ") as info:
        next_delay(named_policy(delay), 1, OSError())
    assert len(str(info.value)) < 200
    with pytest.raises(TypeError, match=r"^retry policy <UnreprablePolicy instance at 0x\w+> "):
        next_delay(UnreprablePolicy(delay), 1, OSError())


@pytest.mark.parametrize("delay", [-1, math.nan, math.inf])
def test_next_delay_names_a_policy_whose_repr_raises(delay: object) -> None:
    with pytest.raises(ValueError, match=r"^retry policy <UnreprablePolicy instance at 0x\w+> "):
        next_delay(UnreprablePolicy(delay), 1, OSError())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"attempts": Unreprable()}, TypeError, "attempts must be an int (got <Unreprable"),
        ({"on": Unreprable()}, TypeError, "on must be an Exception subclass or a tuple"),
        ({"backoff": Unreprable()}, TypeError, "backoff must be a number of seconds (got <"),
        ({"jitter": Unreprable()}, TypeError, "jitter must be a bool (got <Unreprable"),
        ({"rng": Unreprable()}, TypeError, "rng must have a random() method, or be None"),
    ],
    ids=["attempts", "on", "backoff", "jitter", "rng"],
)
def test_bad_settings_whose_repr_raises_are_refused_with_the_rule(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        Retry(**kwargs)


def test_resolve_retry_refuses_a_value_whose_repr_raises_with_the_rule() -> None:
    with pytest.raises(TypeError, match=r"^retry must be a Retry, .* \(got <Unreprable instance"):
        resolve_retry(Unreprable())
