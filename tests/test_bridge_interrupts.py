"""ThreadedLoopExecutor cut short by a KeyboardInterrupt (Ctrl-C): a submit() hands its job
off whole or not at all, a ``with`` exit cancels the jobs, and the executor goes on
working and shuts down.

The main thread gets the KeyboardInterrupt wherever the interpreter next checks for
signals: on entering a Python function, and after a C call returns (Python 3.10 on; 3.9
checks between most bytecodes). ``_Interrupting`` raises one at exactly such a point, the
n-th of a submit(), for every n, through ``sys.setprofile``: its "call" and "c_return"
events are those points. Under a Python trace function (a debugger, coverage's Python
tracer) the signal's handler runs inside the tracer, so the KeyboardInterrupt comes out
at any new line as well: ``_interrupting_at_line`` raises one at the n-th line run in the
library, through ``sys.settrace``. (A storm of real SIGINTs in a child process was not
reliable enough to keep: see the commit that removed it.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Optional

import pytest

import coroexecutor
from coroexecutor import ThreadedLoopExecutor

# own_exception_state: a KeyboardInterrupt raised by a trace function at the "pass" line of
# an except clause leaks that clause's exception into the thread (CPython 3.11+; see
# conftest.py), which later tests would see as the __context__ of their own errors.
pytestmark = [pytest.mark.timeout(60), pytest.mark.own_exception_state]

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure

Profile = Callable[[FrameType, str, Any], object]
LIBRARY = os.path.dirname(coroexecutor.__file__) + os.sep


# A weak set's or dict's callback runs when the collector frees an object, anywhere: a
# KeyboardInterrupt there is "Exception ignored" by the interpreter (the Ctrl-C is lost,
# nothing of ours is cut short), which the suite's warnings-as-errors would count as a
# failure. Points in them are not counted. Nor are those in traceback.py: asyncio's debug
# mode takes a stack summary for each call_soon_threadsafe, through a generator it leaves
# unfinished, and closes when it is freed; a KeyboardInterrupt as it is closed is ignored
# the same way (a cancel() posting to the loop hit it).
_CALLBACK_FILES = (os.sep + "_weakrefset.py", os.sep + "weakref.py", os.sep + "traceback.py")


class _Interrupting:
    """A profile function raising KeyboardInterrupt at the n-th point where a signal's
    handler could run, below ``caller`` (whose own C calls do not count).

    Other finalisers than those skipped above run at such points too (a generator closed
    as it is dropped: asyncio's debug mode makes one for every source traceback, CI on
    3.11), where the interpreter ignores the KeyboardInterrupt ("Exception ignored in").
    A real Ctrl-C landing there is lost, nothing of ours cut short; for the sweep it is
    raised again at the next point (see _unraisable), so the points after it are still
    tried and the sweep still ends where the call has no more points."""

    def __init__(self, n: int, caller: FrameType) -> None:
        self.n, self.caller = n, caller
        self.seen = 0
        self.fired = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if (
            (event == "call" or event == "c_return")
            and not self.fired
            and frame is not self.caller
            and frame.f_code not in _OWN_CODE  # the profiling's own switch and hook
            and not frame.f_code.co_filename.endswith(_CALLBACK_FILES)
            and frame.f_code.co_name != "__del__"  # also run by the collector: see above
        ):
            self.seen += 1
            if self.seen >= self.n:
                self.fired = True
                raise KeyboardInterrupt


_profiling: Optional[_Interrupting] = None
_hook_before: Optional[Callable[[Any], object]] = None


def _unraisable(unraisable: Any) -> None:
    """sys.unraisablehook while _Interrupting profiles: its KeyboardInterrupt, ignored by
    the interpreter in a finaliser, is raised again at the next point: the profile
    function is set again (a profile function that raises is removed)."""
    if _profiling is not None and _profiling.fired and isinstance(
        unraisable.exc_value, KeyboardInterrupt
    ):
        _profiling.fired = False
        sys.setprofile(_profiling)  # the interpreter removed it when it raised
        return
    assert _hook_before is not None
    _hook_before(unraisable)


class _InterruptingAtLine:
    """A trace function raising KeyboardInterrupt at the n-th line run in the library (in
    the calling thread), once; ``where`` says at which (file:line function)."""

    def __init__(
        self,
        n: int,
        *,
        entries: tuple[str, ...] = (),
        stop_at: str = "",
        on_stop: Callable[[], object] = lambda: None,
        files: tuple[str, ...] = (LIBRARY,),
        start_at: str = "",
    ) -> None:
        self.files = files  # whose lines count: those of the library, by default
        # Lines count from the first call of a function of this name on (if given).
        self.started = not start_at
        self.start_at = start_at
        self.n = n
        self.seen = 0
        self.where = ""
        # Entering a function of this name stops the count (see the with-exit test).
        self.stop_at, self.on_stop = stop_at, on_stop
        # The first line of a call of these is not counted: a KeyboardInterrupt there (a
        # ``try:`` line too, on every Python) comes out before the function has done
        # anything, as one on entering it would (see the with-exit test).
        self.entries = entries
        self.stopped = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Optional[Profile]:
        code = frame.f_code
        if self.where or self.stopped or not code.co_filename.startswith(self.files):
            return None
        if not self.started:
            if code.co_name != self.start_at:
                return None
            self.started = True
        if code.co_name == self.stop_at:
            self.stopped = True
            self.on_stop()
            return None
        if code.co_name in self.entries:
            first = True

            def after_first(frame: FrameType, event: str, arg: Any) -> Optional[Profile]:
                nonlocal first
                if event == "line" and first:
                    first = False
                    return after_first
                return self._line(frame, event, arg) and after_first

            return after_first
        return self._line

    def _line(self, frame: FrameType, event: str, arg: Any) -> Optional[Profile]:
        if event != "line" or self.where or self.stopped:
            return None
        self.seen += 1
        if self.seen == self.n:
            code = frame.f_code
            self.where = f"{code.co_filename}:{frame.f_lineno} {code.co_name}"
            raise KeyboardInterrupt
        return self._line


def _settrace(tracer: Optional[Profile]) -> None:
    """sys.settrace(tracer), with the garbage collector off while it traces: a collection
    could run a __del__ of the library (a previous executor's) under the tracer, whose
    KeyboardInterrupt would then be "ignored in __del__", not raised where it is meant."""
    if tracer is None:
        sys.settrace(None)
        gc.enable()
    else:
        gc.disable()
        sys.settrace(tracer)


def _setprofile(profile: Optional[Profile]) -> None:
    """sys.setprofile(profile), with the garbage collector off while it profiles, for the
    reason _settrace gives: a collection at one of the counted points would run an earlier
    test's __del__ (and what it calls) there. Unlike the tracer, the profile function counts
    every Python frame, so skipping __del__ frames alone was not enough (CI, 3.13: the
    KeyboardInterrupt landed in a function called by CoroutineExecutor.__del__)."""
    global _profiling, _hook_before
    if profile is None:
        sys.setprofile(None)
        gc.enable()
        if _hook_before is not None:
            sys.unraisablehook, _hook_before, _profiling = _hook_before, None, None
    else:
        gc.disable()
        _profiling = profile if isinstance(profile, _Interrupting) else None
        _hook_before, sys.unraisablehook = sys.unraisablehook, _unraisable
        sys.setprofile(profile)


_OWN_CODE = (_setprofile.__code__, _unraisable.__code__)


def _submit_cut_at(
    n: int, exe: ThreadedLoopExecutor, fn: Callable[..., Any], *args: Any, lines: bool = False
) -> Optional[concurrent.futures.Future[Any]]:
    """exe.submit(fn, *args), interrupted at its n-th interrupt point (with ``lines``, its
    n-th line in the library): None if it was (the submit raised KeyboardInterrupt), else
    the future (the submit has fewer points)."""
    if lines:
        _settrace(_InterruptingAtLine(n))
    else:
        _setprofile(_Interrupting(n, sys._getframe()))
    try:
        return exe.submit(fn, *args)
    except KeyboardInterrupt:
        return None
    finally:
        _setprofile(None)  # first: the profile function counts _settrace's calls
        _settrace(None)


def _bounded(fn: Callable[[], Any]) -> Any:
    """fn(), in another thread, so that a hang (a lock left held) fails here at once."""
    result: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            result.set_result(fn())
        except BaseException as error:
            result.set_exception(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return result.result(timeout=WAIT)


async def _coroutine_job(ran: list[int]) -> None:
    ran.append(1)


def _blocking_job(ran: list[int]) -> None:
    ran.append(1)


def _shut_down(exe: ThreadedLoopExecutor) -> None:
    """shutdown(wait=True), from another thread, so that a hang fails here at once."""
    thread = threading.Thread(target=exe.shutdown, kwargs={"wait": True})
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "shutdown(wait=True) hangs"


@pytest.mark.parametrize(
    ("fn", "options"),
    [
        pytest.param(_coroutine_job, {}, id="coroutine"),
        pytest.param(_blocking_job, {}, id="blocking"),
        # job_timeout: blocking jobs start from the loop too (the mailbox, then a worker)
        pytest.param(_blocking_job, {"job_timeout": 60}, id="blocking-via-loop"),
        # key=: the key's room a cut-short submit took would hold back its later jobs
        pytest.param(_coroutine_job, {"key": len, "max_per_key": 1}, id="coroutine-key"),
        pytest.param(_blocking_job, {"key": len, "max_per_key": 1}, id="blocking-key"),
    ],
)
@pytest.mark.parametrize("lines", [False, True], ids=["calls", "lines"])
def test_submit_interrupted_at_any_point_hands_off_the_job_whole_or_not_at_all(
    fn: Callable[..., Any], options: dict[str, Any], lines: bool
) -> None:
    ran: list[int] = []  # one entry per job that ran
    # One slot: a slot that a cut-short submit kept would block every later job.
    exe = ThreadedLoopExecutor(max_workers=1, **options)
    n = interrupted = 0
    while True:
        n += 1
        future = _submit_cut_at(n, exe, fn, ran, lines=lines)
        if future is not None:  # fewer than n points: every one has been tried
            break
        interrupted += 1
        # Later submits work: a wake-up of the loop (or of a worker) lost, a slot kept, or
        # the lock left held (a with block's exit cut short), would leave this one pending.
        _bounded(lambda: exe.submit(fn, ran).result(timeout=WAIT))
    assert interrupted > 10  # the interrupts reached into the hand-off
    future.result(timeout=WAIT)
    _shut_down(exe)
    stats = exe.stats
    # Every job counted as submitted ran, and no other: a job whose submit was cut short
    # ran whole or was never counted.
    assert (stats.submitted, stats.succeeded) == (len(ran), len(ran))
    assert (stats.queued, stats.running, stats.failed, stats.cancelled) == (0, 0, 0, 0)


@pytest.mark.parametrize("lines", [False, True], ids=["calls", "lines"])
def test_submit_interrupted_while_jobs_wait_for_a_slot(lines: bool) -> None:
    exe = ThreadedLoopExecutor(max_workers=1)
    interrupted, ran = _sweep_submit_behind_a_held_slot(exe, lines)
    assert interrupted > 3
    stats = exe.stats
    assert (stats.submitted, stats.succeeded) == (len(ran) + 1, len(ran) + 1)
    assert (stats.queued, stats.running, stats.cancelled) == (0, 0, 0)


def _sweep_submit_behind_a_held_slot(
    exe: ThreadedLoopExecutor, lines: bool
) -> tuple[int, list[int]]:
    """Hold exe's one place with a blocking job, cut submit() short at every point in
    turn (resubmitting each cut job), then free the place, let every job finish and shut
    down. Returns how many submits were cut short and what the jobs ran."""
    ran: list[int] = []
    gate = threading.Event()
    holder = exe.submit(gate.wait, WAIT)  # holds the place: later jobs wait
    n = interrupted = 0
    futures = []
    while True:
        n += 1
        future = _submit_cut_at(n, exe, _coroutine_job, ran, lines=lines)
        if future is not None:
            break
        interrupted += 1
        futures.append(_bounded(lambda: exe.submit(_coroutine_job, ran)))
    gate.set()
    assert holder.result(timeout=WAIT)
    for queued in [*futures, future]:
        queued.result(timeout=WAIT)
    _shut_down(exe)
    return interrupted, ran


def test_first_blocking_submit_interrupted_at_any_line_starts_no_stray_worker() -> None:
    # The first blocking job starts a worker thread (ensure_thread) under the pool's lock.
    n = interrupted = 0
    while True:
        n += 1
        exe = ThreadedLoopExecutor(max_workers=2, thread_name_prefix="first-blocking")
        future = _submit_cut_at(n, exe, abs, -1, lines=True)
        if future is not None:
            assert future.result(timeout=WAIT) == 1
        else:
            interrupted += 1
            assert _bounded(lambda exe=exe: exe.submit(abs, -2).result(timeout=WAIT)) == 2
        _shut_down(exe)
        if future is not None:
            break
    assert interrupted > 10
    assert not [t for t in threading.enumerate() if t.name.startswith("first-blocking")]


async def _parked(gate: concurrent.futures.Future[None]) -> None:
    await asyncio.wrap_future(gate)


def test_with_exit_interrupted_at_any_line_cancels_the_jobs_and_propagates() -> None:
    """bridge.rst: a Ctrl-C while leaving the block cancels the queued and running
    coroutine jobs, and propagates with every future done. Cut at each line the main
    thread runs in the library before it waits for the loop thread (LoopThread.join), but
    for ``__exit__``'s one line and the ``try:`` opening ``shut_down``: a Ctrl-C there
    leaves the block as one on entering ``__exit__`` would, from any ``__exit__`` written
    in Python (ThreadPoolExecutor's too)."""
    n = 0
    while True:
        n += 1
        gate: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Not cut short: the jobs end as the wait begins.
        tracer = _InterruptingAtLine(
            n,
            entries=("__exit__", "shut_down"),
            stop_at="join",
            on_stop=lambda gate=gate: gate.set_result(None),
        )
        try:
            with ThreadedLoopExecutor(max_workers=2, thread_name_prefix="exit-cut") as exe:
                # two running coroutine jobs; a blocking one waits for a slot
                futures = [exe.submit(_parked, gate), exe.submit(_parked, gate)]
                futures.append(exe.submit(gate.result, WAIT))
                _settrace(tracer)
        except KeyboardInterrupt:
            interrupted = True
        else:
            interrupted = False
        finally:
            _settrace(None)
            if not gate.done():
                gate.set_result(None)
        # Every future is done once the block is left, either way, and nothing runs on.
        assert all(f.done() for f in futures), (tracer.where, futures)
        assert not [t for t in threading.enumerate() if t.name.startswith("exit-cut")]
        if not interrupted:
            assert tracer.stopped  # the count reached join: every line before it was cut
            break
        assert all(f.cancelled() for f in futures), (tracer.where, futures)
    assert n > 10


def _one_key(*args: Any) -> str:
    return "h"


@pytest.mark.parametrize("lines", [False, True], ids=["calls", "lines"])
def test_submit_interrupted_while_jobs_wait_in_a_full_keys_line(lines: bool) -> None:
    # key=/max_per_key: a job queued behind a full key enters its key's line in several
    # steps; one cut short must leave the line as it was.
    exe = ThreadedLoopExecutor(max_workers=4, key=_one_key, max_per_key=1)
    interrupted, ran = _sweep_submit_behind_a_held_slot(exe, lines)  # the key's one place
    assert interrupted > 10
    stats = exe.stats
    assert (stats.submitted, stats.succeeded) == (len(ran) + 1, len(ran) + 1)
    assert (stats.queued, stats.running, stats.cancelled, stats.failed) == (0, 0, 0, 0)


async def _identity(value: int) -> int:
    return value


def test_map_interrupted_while_building_its_iterator_cancels_quietly() -> None:
    # A half-built iterator is collected without "Exception ignored in __del__".
    unraisable: list[Any] = []
    previous, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with ThreadedLoopExecutor(max_workers=2) as exe:
            n = 0
            while True:
                n += 1
                tracer = _InterruptingAtLine(n)
                _settrace(lambda frame, event, arg, tracer=tracer: (
                    tracer(frame, event, arg) if frame.f_code.co_name == "__init__" else None
                ))
                try:
                    results = exe.map(_identity, range(3))
                except KeyboardInterrupt:
                    gc.collect()
                    continue
                finally:
                    _settrace(None)
                assert list(results) == [0, 1, 2]
                break
    finally:
        sys.unraisablehook = previous
    assert n > 3
    assert not unraisable, [u.exc_value for u in unraisable]


def test_closing_a_map_stops_the_retries_of_a_running_blocking_attempt() -> None:
    # Not a Ctrl-C: close() while an attempt runs. bridge.rst (Retries): no further
    # attempt starts; the job whose call was running ends with its error when it fails
    # (a blocking call that began is never reported cancelled: reliability.rst).
    calls: list[int] = []
    started, gate = threading.Event(), threading.Event()

    def fail(x: int) -> None:
        calls.append(x)
        started.set()
        gate.wait(WAIT)
        raise OSError(x)

    def policy(attempt: int, exc: BaseException) -> float:
        return 0  # retry at once, for ever

    exe = ThreadedLoopExecutor(max_workers=1)
    results = exe.map(fail, [0], retry=policy)
    assert started.wait(WAIT)
    results.close()
    gate.set()
    _shut_down(exe)
    assert calls == [0]
    stats = exe.stats
    assert (stats.failed, stats.cancelled, stats.queued, stats.running, stats.retried) == (
        1, 0, 0, 0, 0,
    )


def test_result_interrupted_at_any_line_leaves_every_future_usable() -> None:
    # The first result() of a future makes its condition under a lock all futures share.
    ran: list[int] = []
    with ThreadedLoopExecutor(max_workers=2) as exe:
        n = interrupted = 0
        while True:
            n += 1
            future = exe.submit(_coroutine_job, ran)
            _settrace(_InterruptingAtLine(n))
            try:
                future.result(timeout=WAIT)
            except KeyboardInterrupt:
                interrupted += 1
            else:
                break
            finally:
                _settrace(None)
            # The future, and a new one, can still be waited for (from another thread).
            assert _bounded(lambda future=future: future.result(timeout=WAIT)) is None
            assert _bounded(lambda: exe.submit(_coroutine_job, ran).result(timeout=WAIT)) is None
    assert interrupted > 3


def test_shutdown_wait_interrupted_at_any_line_raises_keyboard_interrupt() -> None:
    """A Ctrl-C while shutdown(wait=True) waits is a KeyboardInterrupt that cancels the
    jobs (not "RuntimeError: cannot release un-acquired lock", which one inside a
    Condition.wait() left). Cut at each line run in the library and in ``threading``
    from shut_down's first step on (see the with-exit test), until the cuts land in the
    wait loop itself, a few times over."""
    threading_py = threading.__file__
    n = in_wait = 0
    while in_wait < 4:
        n += 1
        assert n < 300, "the cuts never reached the wait"
        exe = ThreadedLoopExecutor(max_workers=1, thread_name_prefix="shutdown-cut")
        parked = exe.submit(_parked, concurrent.futures.Future())  # ends when cancelled
        tracer = _InterruptingAtLine(
            n, files=(LIBRARY, threading_py), start_at="shut_down", entries=("shut_down",)
        )
        _settrace(tracer)
        try:
            with pytest.raises(KeyboardInterrupt):
                exe.shutdown(wait=True)
        finally:
            _settrace(None)
        assert parked.cancelled(), tracer.where
        assert not [t for t in threading.enumerate() if t.name.startswith("shutdown-cut")]
        in_wait = in_wait + 1 if tracer.where.endswith(" _wait_ended") else 0


def _cut_at(n: int, call: Callable[[], object], lines: bool) -> bool:
    """call(), interrupted at its n-th interrupt point (with ``lines``, its n-th line in
    the library): True if it was (it raised KeyboardInterrupt)."""
    if lines:
        _settrace(_InterruptingAtLine(n))
    else:
        _setprofile(_Interrupting(n, sys._getframe()))
    try:
        call()
    except KeyboardInterrupt:
        return True
    finally:
        _setprofile(None)  # first: the profile function counts _settrace's calls
        _settrace(None)
    return False


def test_a_finaliser_that_ignores_the_interrupt_passes_it_to_the_next_point() -> None:
    # The sweep itself: a generator closed as it is dropped (a "call" point) ignores a
    # KeyboardInterrupt, as the interpreter does in every finaliser. The sweep raises it
    # again at the next point: every n cuts the call until its points run out, and no
    # "Exception ignored" reaches pytest (which would fail the test as a warning).
    after: list[int] = []

    def call() -> None:
        numbers = (i for i in range(3))
        next(numbers)
        del numbers  # closed here: its frame resumes, with GeneratorExit
        after.append(1)
        after.append(2)

    cuts = 0
    while _cut_at(cuts + 1, call, lines=False):
        cuts += 1
        assert cuts < 20, "the points never ran out"
    assert cuts >= 5, cuts  # call, next(), its frame, the close (cut at the next), appends


def _sweep(
    make: Callable[[ThreadedLoopExecutor], Callable[[], object]],
    check: Callable[[ThreadedLoopExecutor, bool], object],
    lines: bool,
    options: Optional[dict[str, Any]] = None,
    later: Optional[Callable[[ThreadedLoopExecutor], object]] = None,
) -> int:
    """For n = 1, 2, ...: on a new executor (two places), cut ``make(exe)()`` at its n-th
    point, ``check(exe, cut)``, then see a later job run and the executor shut down, until
    the call has fewer points than n. Returns how many calls were cut."""
    n = interrupted = 0
    while True:
        n += 1
        exe = ThreadedLoopExecutor(max_workers=2, thread_name_prefix="cut", **(options or {}))
        cut = _cut_at(n, make(exe), lines)
        check(exe, cut)
        # No lock is left held and no place kept: a later job runs, the executor stops.
        if later is None:
            assert _bounded(lambda exe=exe, n=n: exe.submit(_identity, n).result(timeout=WAIT)) == n
        else:
            later(exe)
        _shut_down(exe)
        stats = exe.stats
        assert (stats.queued, stats.running) == (0, 0), stats
        assert not [t for t in threading.enumerate() if t.name.startswith("cut")]
        if not cut:
            return interrupted
        interrupted += 1


def _jobs(exe: ThreadedLoopExecutor) -> list[concurrent.futures.Future[Any]]:
    """Two jobs parked on the loop (ended by their cancel) and four waiting for a place."""
    return [exe.submit(_parked, concurrent.futures.Future()) for _ in range(6)]


@pytest.mark.parametrize("lines", [False, True], ids=["calls", "lines"])
@pytest.mark.parametrize("which", [0, 5], ids=["running", "waiting"])
def test_cancel_interrupted_at_any_point_cancels_the_future_and_its_job_or_neither(
    lines: bool, which: int
) -> None:
    futures: list[concurrent.futures.Future[Any]] = []

    def make(exe: ThreadedLoopExecutor) -> Callable[[], object]:
        futures[:] = _jobs(exe)
        return futures[which].cancel

    def check(exe: ThreadedLoopExecutor, cut: bool) -> None:
        future = futures[which]
        # Its lock is free: another thread can take it (the loop's _finish does).
        if not _bounded(future.cancelled):
            assert cut and not future.done()  # not cancelled: then nothing changed
        # Once cancelled, its job ends too (or, a parked job, holds its place for ever,
        # and the shutdown waits for it): the others are cancelled uncut.
        for other in futures:
            other.cancel()

    assert _sweep(make, check, lines) > 5


@pytest.mark.parametrize("lines", [False, True], ids=["calls", "lines"])
def test_map_close_interrupted_at_any_point_cancels_every_job_of_the_map(lines: bool) -> None:
    results: list[Any] = []

    def make(exe: ThreadedLoopExecutor) -> Callable[[], object]:
        gate: concurrent.futures.Future[None] = concurrent.futures.Future()  # never set
        results[:] = [exe.map(_parked, [gate] * 6)]
        return results[0].close

    def check(exe: ThreadedLoopExecutor, cut: bool) -> None:
        # Closed again, as ``del`` would: every job of the map is cancelled, the first
        # close cut short or not (the parked two would hold both places for ever).
        results[0].close()
        assert _bounded(lambda: exe.submit(_identity, 0).result(timeout=WAIT)) == 0
        with pytest.raises(StopIteration):
            next(results[0])
        stats = exe.stats
        assert (stats.cancelled, stats.queued, stats.running) == (6, 0, 0), stats

    assert _sweep(make, check, lines) > 10


@pytest.mark.parametrize("lines", [False, True], ids=["calls", "lines"])
def test_shutdown_cancel_futures_interrupted_at_any_point_leaves_no_job_waiting(
    lines: bool,
) -> None:
    """bridge.rst: the futures of jobs waiting for a slot are cancelled before shutdown()
    returns. One cut short cancels them, or leaves them waiting for a later shutdown to
    cancel (or run): never taken out of the backlog and left pending."""
    futures: list[concurrent.futures.Future[Any]] = []

    def make(exe: ThreadedLoopExecutor) -> Callable[[], object]:
        futures[:] = _jobs(exe)
        return lambda: exe.shutdown(wait=False, cancel_futures=True)

    def check(exe: ThreadedLoopExecutor, cut: bool) -> None:
        exe.shutdown(wait=False, cancel_futures=True)  # again, uncut
        assert all(f.cancelled() for f in futures[2:]), futures  # the four that waited
        for future in futures[:2]:
            future.cancel()

    def later_job_refused(exe: ThreadedLoopExecutor) -> None:
        with pytest.raises(RuntimeError):
            exe.submit(_identity, 0)

    assert _sweep(make, check, lines, later=later_job_refused) > 5


def _timing_out(wait: Callable[[float], object]) -> Callable[[], None]:
    """wait(0) on a future that is not done: it must time out (or be cut short)."""

    def call() -> None:
        try:
            wait(0)
        except concurrent.futures.TimeoutError:
            return
        raise AssertionError("wait(0) returned on a future that is not done")

    return call


@pytest.mark.parametrize("lines", [False, True], ids=["calls", "lines"])
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda f: f.add_done_callback(lambda f: None), id="add_done_callback"),
        pytest.param(lambda f: _timing_out(f.exception)(), id="exception"),
        # "cannot release un-acquired lock" in place of the KeyboardInterrupt, from one
        # cut as Condition.wait gives the lock up (before its try:)
        pytest.param(lambda f: _timing_out(f.result)(), id="result"),
        pytest.param(lambda f: f.cancelled(), id="cancelled"),
        pytest.param(repr, id="repr"),
    ],
)
def test_future_call_interrupted_at_any_point_leaves_its_lock_free(
    lines: bool, call: Callable[[concurrent.futures.Future[Any]], object]
) -> None:
    # The stdlib's versions take the future's Condition, whose Python __enter__ and
    # __exit__ a Ctrl-C can cut short with its lock held: the loop thread would then wait
    # for it for ever to resolve the future, and every later job with it.
    futures: list[concurrent.futures.Future[Any]] = []

    def make(exe: ThreadedLoopExecutor) -> Callable[[], object]:
        futures[:] = _jobs(exe)
        return lambda: call(futures[0])

    def check(exe: ThreadedLoopExecutor, cut: bool) -> None:
        assert _bounded(futures[0].cancel)  # its lock is free: another thread takes it
        for other in futures:
            other.cancel()

    assert _sweep(make, check, lines) > 0


@pytest.mark.parametrize("lines", [False, True], ids=["calls", "lines"])
@pytest.mark.parametrize("which", [0, 5], ids=["running", "waiting"])
def test_cancel_interrupted_at_any_point_leaves_no_wait_untold(lines: bool, which: int) -> None:
    """concurrent.futures.wait(ALL_COMPLETED) with no timeout, waiting on a future whose
    cancel() a Ctrl-C cuts short, is told of it once: never missed (it would wait for
    ever), never twice (it would return before the other future is done)."""
    futures: list[concurrent.futures.Future[Any]] = []
    waiters: list[Any] = []
    from concurrent.futures import _base  # the waiter wait() installs, installed here

    def make(exe: ThreadedLoopExecutor) -> Callable[[], object]:
        futures[:] = _jobs(exe)
        waited = {futures[0], futures[5]}
        with _base._AcquireFutures(waited):
            waiters[:] = [_base._create_and_install_waiters(waited, _base.ALL_COMPLETED)]
        return futures[which].cancel

    def check(exe: ThreadedLoopExecutor, cut: bool) -> None:
        for future in futures:
            future.cancel()  # the other one too, uncut
        waiter = waiters[0]
        assert waiter.event.wait(WAIT), (waiter.num_pending_calls, waiter.finished_futures)
        finished = sorted(map(id, waiter.finished_futures))
        assert finished == sorted([id(futures[0]), id(futures[5])])  # each told once
        assert waiter.num_pending_calls == 0

    assert _sweep(make, check, lines) > 5


@pytest.mark.parametrize("lines", [False, True], ids=["calls", "lines"])
@pytest.mark.parametrize("which", [1, 3], ids=["head", "middle"])
def test_cancel_of_a_job_waiting_for_its_key_interrupted_at_any_point(
    lines: bool, which: int
) -> None:
    """key=: cancel() of a job in its key's line, cut short anywhere, takes it out of the
    line whole or not at all: counted once, and the key's later jobs still start."""
    futures: list[concurrent.futures.Future[Any]] = []

    def make(exe: ThreadedLoopExecutor) -> Callable[[], object]:
        futures[:] = _jobs(exe)  # job 0 holds the key's one place; 1 to 5 wait for it
        return futures[which].cancel

    def check(exe: ThreadedLoopExecutor, cut: bool) -> None:
        for future in futures:
            future.cancel()

    def later(exe: ThreadedLoopExecutor) -> None:
        assert _bounded(lambda: exe.submit(_identity, 7).result(timeout=WAIT)) == 7
        stats = exe.stats
        assert (stats.cancelled, stats.succeeded) == (6, 1), stats

    options = {"key": _one_key, "max_per_key": 1}
    assert _sweep(make, check, lines, options, later) > 5


def _key_h(*args: Any) -> str:
    return "probe" if args == ("probe",) else "h"


def _fail_first(calls: list[int]) -> None:
    calls.append(1)
    if len(calls) == 1:
        raise OSError("the first attempt fails")


@pytest.mark.parametrize("lines", [False, True], ids=["calls", "lines"])
def test_cancel_of_a_pausing_job_interrupted_at_any_point_starts_the_next_of_its_key(
    lines: bool,
) -> None:
    """retry= and key=: cancel() of a job in its pause gives its key's room back, and the
    blocking job waiting for that room starts, the cancel() cut short anywhere: never
    given the slot and then dropped on the way to a worker thread."""
    futures: list[concurrent.futures.Future[Any]] = []
    paused: list[threading.Event] = []

    def policy(attempt: int, exc: BaseException) -> float:
        paused[0].set()
        return 60.0  # the pause outlasts the test: only cancel() ends it

    def make(exe: ThreadedLoopExecutor) -> Callable[[], object]:
        paused[:] = [threading.Event()]
        futures[:] = [exe.submit(_fail_first, []), exe.submit(_blocking_job, [])]
        assert paused[0].wait(WAIT)
        # The pause began in the loop's turn that asked the policy: one more turn (a job
        # of another key) and the job pauses, holding its key's one place.
        assert exe.submit(_identity, "probe").result(timeout=WAIT) == "probe"
        return futures[0].cancel

    def check(exe: ThreadedLoopExecutor, cut: bool) -> None:
        futures[0].cancel()  # again, uncut
        assert _bounded(lambda: futures[1].result(timeout=WAIT)) is None  # it ran

    def later(exe: ThreadedLoopExecutor) -> None:
        assert _bounded(lambda: exe.submit(_identity, 3).result(timeout=WAIT)) == 3
        stats = exe.stats
        assert (stats.cancelled, stats.succeeded, stats.retried) == (1, 3, 1), stats

    options = {"key": _key_h, "max_per_key": 1, "retry": policy}
    assert _sweep(make, check, lines, options, later) > 5
