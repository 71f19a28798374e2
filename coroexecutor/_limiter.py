"""AdaptiveLimit: the limiter of one executor, which follows its ``Adaptive`` settings.

``AdaptiveLimit`` is fed one finished job at a time (its latency and its error, if any)
and answers with the limit to use from now on. It knows nothing of event loops or
clocks: the caller measures the latency, so the same object runs in the executor and in
the discrete-event simulation the tests drive it with. The algorithm, with its
constants, is described in ``docs/semantics.rst`` ("Adaptive concurrency"); the names
below match that text.
"""

from __future__ import annotations

import math
from typing import Optional

from ._adaptive import Adaptive
from ._typing import final
from ._validate import plain_answer

__all__ = ["AdaptiveLimit"]

#
# The constants of the algorithm (docs/semantics.rst, "Adaptive concurrency", gives the
# reasons; keep the two in step)
#

# A round measures at least this many completions, so a small limit still averages a few.
MIN_SAMPLES = 32
# A round's mean latency counts as above a threshold only when it is so by more than
# CONFIDENCE standard errors of that mean (measured in the round itself), and lowers the
# baseline only to what it surely stays under: noise alone moves nothing.
CONFIDENCE = 2.0
# A round whose mean latency is within TOLERANCE times the baseline is "near the
# baseline"; above that, the server is queueing our jobs.
TOLERANCE = 1.1
# Near the baseline, the limit doubles per round until the first sign of overload (as
# TCP's slow start), then grows by the queue allowance max(1, QUEUE * sqrt(limit)).
SLOW_START = 2.0
QUEUE = 0.3
# Above tolerance, the limit is multiplied by the gradient baseline / mean (the share of
# the latency that is not queueing), but by no less than GRADIENT_FLOOR in one round, and
# the queue allowance is added back.
GRADIENT_FLOOR = 0.5
# A round with an overload error multiplies the limit by ERROR_BACKOFF.
ERROR_BACKOFF = 0.7
# The limit grows only in rounds where at least USED_FRACTION of it was in use (the most
# jobs running at once, against the limit the round ran under: the one growth raises).
USED_FRACTION = 0.5
# When a probe cut the load (to CUT_EVIDENCE of the last round's or less) but the latency
# stayed within the tolerance of the last round's (either way), the latency is the
# server's own: the baseline is set to agree with it. Any other such cut brings the next
# probe forward to the next round.
CUT_EVIDENCE = 0.75
# After the first round with latencies, and then every PROBE_EVERY rounds, one round runs
# at PROBE_FRACTION of the limit (a cut made to gather that evidence); then the limit
# comes back.
PROBE_EVERY = 40
PROBE_FRACTION = 0.5
# At the minimum limit a round still above tolerance moves the baseline up by this
# fraction of the gap: nothing more can be shed.
BASELINE_RISE = 1 / 8


@final
class AdaptiveLimit:
    """The limiter of one executor: fed each finished job, it answers with the limit.

    ``use_at_start``: the caller reports how many jobs run as each round begins and as
    each job starts (``note_use``), and a round's use is the most of those: the most
    that ran at once, as only a start adds one. ``on_done``'s ``in_flight`` then only
    says how many jobs to let settle. (The executors do so: see ``Tuner``.)

    Work goes in rounds. After each change of the limit the limiter first lets the jobs
    that were in flight at that moment finish (they ran under the old limit and say
    nothing about the new one: the *settling* part), then measures the next
    ``max(limit, MIN_SAMPLES)`` completions, then decides once (``_decide``). So a storm
    of errors shrinks the limit once per round, multiplicatively, and never to ``min`` in
    one burst.
    """

    __slots__ = (
        "_baseline",
        "_begun",
        "_count",
        "_errors",
        "_high",
        "_is_overload",
        "_last_mean",
        "_last_used",
        "_limit",
        "_low",
        "_measure",
        "_next_probe",
        "_probing",
        "_restore",
        "_rounds",
        "_samples",
        "_settle",
        "_slow_start",
        "_squares",
        "_sum",
        "_use_at_start",
        "_used",
    )

    def __init__(self, config: Adaptive, *, use_at_start: bool = False) -> None:
        self._low = config.min
        self._high = config.max
        self._is_overload = config.overload
        self._limit = float(config.initial)  # a float: small steps add up
        self._baseline = math.inf  # the no-load latency estimate; none before a round
        self._last_mean = math.inf  # the last round's mean latency (inf: none usable)
        self._last_used = 0.0  # the most jobs in flight in the last round
        self._use_at_start = use_at_start
        self._slow_start = True
        self._rounds = 0  # rounds decided so far, probes not counted
        self._next_probe = 1  # the first round with latencies is followed by a probe
        self._probing = False
        self._restore = 0.0  # the limit to come back to after a probe round
        self._settle = 0  # completions left to ignore (jobs started under an older limit)
        self._begun = 0  # rounds begun, probes included
        self._start_round()

    @property
    def limit(self) -> int:
        """The current limit, an int in ``[min, max]``."""
        return int(self._limit)

    @property
    def baseline(self) -> float:
        """The no-load latency estimate in seconds (``inf`` before the first round)."""
        return self._baseline

    @property
    def probing(self) -> bool:
        """Whether the current round is a probe round (run at a fraction of the limit)."""
        return self._probing

    def __repr__(self) -> str:
        return (
            f"<AdaptiveLimit limit={self.limit} [{self._low}, {self._high}]"
            f" baseline={self._baseline:.6g}s{' probing' if self._probing else ''}>"
        )

    @property
    def rounds_begun(self) -> int:
        """How many rounds have begun (a change tells the caller to count its use)."""
        return self._begun

    def _start_round(self) -> None:
        self._begun += 1
        self._measure = max(int(self._limit), MIN_SAMPLES)
        self._count = 0
        self._samples = 0
        self._sum = 0.0
        self._squares = 0.0
        self._errors = 0
        self._used = 0.0

    def is_overload(self, error: BaseException) -> bool:
        """Whether ``error`` signals overload (the one call of the ``overload`` predicate)."""
        return self._is_overload is None or bool(plain_answer(self._is_overload(error), "overload"))

    def on_done(
        self, latency: float, error: Optional[BaseException] = None,
        in_flight: Optional[int] = None, overload: Optional[bool] = None,
    ) -> int:
        """Account for one finished job and return the limit to use from now on.

        Args:
            latency: seconds from the job's start to its end.
            error: the job's exception, or ``None`` if it succeeded. Do not pass jobs that
                were cancelled: they say nothing about the server.
            in_flight: how many jobs were running when this one ended (itself included),
                if the caller knows; the limit grows only in rounds where at least half
                of it was in use. ``None`` counts as fully in use. With
                ``use_at_start``, only the jobs to let settle after a change.
            overload: ``is_overload(error)`` if the caller asked it first (the bridge
                does, holding no lock); ``None``: asked here.

        Raises:
            Whatever the ``overload`` predicate raises; the job is then not counted.
        """
        if overload is None:
            overload = error is not None and self.is_overload(error)
        if self._settle > 0:
            self._settle -= 1
            return int(self._limit)
        if error is None:
            self._samples += 1
            self._sum += latency
            self._squares += latency * latency
        elif overload:
            self._errors += 1
        # A failure that is not an overload is neither a latency sample (a fast 404 would
        # drag the baseline down) nor a signal: it only counts towards the round.
        if not self._use_at_start:
            used = self._limit if in_flight is None else in_flight
            if used > self._used:
                self._used = used
        self._count += 1
        if self._count >= self._measure:
            before = int(self._limit)
            self._decide()
            if int(self._limit) != before:
                # The jobs still in flight started under the old limit: let them finish
                # unmeasured.
                self._settle = before - 1 if in_flight is None else in_flight - 1
            self._start_round()
        return int(self._limit)

    def wants_count(self, bound: int) -> bool:
        """Whether a job starting with at most ``bound`` jobs in flight could be this
        round's first evidence that the limit may grow: only then is an exact count of
        the jobs in flight worth its cost (see ``Tuner.count_use``)."""
        return self._used < USED_FRACTION * self._limit <= bound

    def note_use(self, in_flight: int) -> None:
        """``in_flight`` jobs ran at once: as the round began, or as a job started (itself
        included). With ``use_at_start``, the round's use is the most of these."""
        if in_flight > self._used:
            self._used = in_flight

    def _decide(self) -> None:
        """End a round: update the baseline, then move the limit once."""
        mean = margin = math.nan
        if self._samples and not self._errors:
            mean, margin = self._round_mean()
            self._update_baseline(mean, margin)
            self._last_mean = mean
        else:
            self._last_mean = math.inf  # errors make this round's latency no reference
        self._last_used = self._used
        if self._probing:  # the probe has gathered its evidence: back to the full limit
            self._probing = False
            self._limit = self._restore
            return
        limit = self._limit
        if self._errors:
            self._slow_start = False
            limit *= ERROR_BACKOFF
        elif self._samples:
            baseline = self._baseline
            grow = self._used >= USED_FRACTION * limit
            if mean - margin <= TOLERANCE * baseline:  # near the baseline
                if grow:
                    limit = limit * SLOW_START if self._slow_start else limit + _queue(limit)
            elif limit > self._low:  # queueing: shed the share of the latency it causes
                self._slow_start = False
                limit *= max(baseline / mean, GRADIENT_FLOOR)
                if grow:
                    limit += _queue(limit)
            else:  # nothing more to shed, and still slow: learn the server's latency
                self._baseline += (mean - baseline) * BASELINE_RISE
        # else: only failures that are not overload: no evidence either way; hold.
        limit = min(max(limit, float(self._low)), float(self._high))
        self._rounds += 1
        if self._samples and not self._errors and self._rounds >= self._next_probe:
            self._next_probe = self._rounds + PROBE_EVERY
            probe = max(float(self._low), min(limit, self._used) * PROBE_FRACTION)
            if int(probe) < int(limit):
                self._probing = True
                self._restore = limit
                limit = probe
        self._limit = limit

    def _round_mean(self) -> tuple[float, float]:
        """The round's mean latency and its margin of error (CONFIDENCE standard errors)."""
        n = self._samples
        mean = self._sum / n
        if n < 2:
            return mean, mean
        variance = max(0.0, (self._squares - n * mean * mean) / (n - 1))
        return mean, CONFIDENCE * math.sqrt(variance / n)

    def _update_baseline(self, mean: float, margin: float) -> None:
        last = self._last_mean
        if self._used <= CUT_EVIDENCE * self._last_used and last <= mean * TOLERANCE <= (
            last * TOLERANCE * TOLERANCE
        ):
            # The load was cut and the latency stayed where it was, within the tolerance
            # either way. After a probe (half the load), that means the latency is the
            # server's own, at the higher load too: the baseline must agree with it (the
            # server may have become slower for good, or faster). After any other cut
            # (a decrease, or the caller) it may also mean the server lost capacity
            # while the last round ran: probe next round to tell the two apart.
            if self._probing:
                self._baseline = min(max(self._baseline, mean - margin), mean + margin)
            else:
                self._next_probe = self._rounds + 1
        elif mean + margin < self._baseline:
            # Queueing only adds latency: a round surely faster is nearer the truth.
            self._baseline = mean + margin


def _queue(limit: float) -> float:
    return max(1.0, QUEUE * math.sqrt(limit))
