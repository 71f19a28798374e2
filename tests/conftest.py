"""Test harness: runs ``async def`` tests in a fresh debug loop and checks for leaks.

No async pytest plugin is used (``-p no:asyncio`` in the config). An ``async def``
test runs under ``asyncio.run(..., debug=True)`` with an exception handler that turns
anything the loop would log ("Task exception was never retrieved", a failing callback)
into a test failure, and with a check that the test left no task behind.
The ``loop_kind`` parametrisation (default, eager task factory, uvloop) follows
anyio's ``asyncio_params``.
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import gc
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

try:  # uvloop is a test extra on CPython/POSIX only
    import uvloop
except ImportError:  # pragma: no cover - depends on the platform
    uvloop = None  # type: ignore[assignment]

LOOP_KINDS = ["default"]
if sys.version_info >= (3, 12):
    LOOP_KINDS.append("eager")
if uvloop is not None:
    LOOP_KINDS.append("uvloop")
# COROEXECUTOR_LOOP_KINDS=default,eager keeps only those kinds (tox.ini: the loop kinds
# another run of the matrix covers are left out of the older Pythons, to keep CI short).
_ONLY = [k for k in os.environ.get("COROEXECUTOR_LOOP_KINDS", "").split(",") if k.strip()]
if _ONLY:
    _unknown = {k.strip() for k in _ONLY} - {"default", "eager", "uvloop"}
    assert not _unknown, f"COROEXECUTOR_LOOP_KINDS: unknown loop kinds {sorted(_unknown)}"
    LOOP_KINDS[:] = [k for k in LOOP_KINDS if k in {k.strip() for k in _ONLY}]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the given kind, not yet set as current."""
    if kind == "virtual":  # chosen by the virtual_time marker, never by loop_kind
        from tests.virtual_clock import VirtualClockLoop

        return VirtualClockLoop()
    if kind == "uvloop":
        assert uvloop is not None
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    if kind == "eager":
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


def run_in_fresh_loop(
    fn: Callable[..., Coroutine[Any, Any, Any]],
    kind: str = "default",
    watchdog: float | None = None,
) -> Callable[..., None]:
    """Wrap an async test so pytest can call it synchronously."""

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> None:
        problems: list[str] = []

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            problems.append(f"{context.get('message')}: {context.get('exception')!r}")

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(handler)
            started = loop.time()
            try:
                # The watchdog ends a hung test from inside the loop: pytest-timeout's
                # SIGALRM does not interrupt uvloop while it blocks in its poller.
                await asyncio.wait_for(fn(**kwargs), watchdog)
                if watchdog is not None and loop.time() - started >= watchdog:
                    # wait_for returns normally when the cancelled test swallowed the
                    # cancel (say, inside pytest.raises(CancelledError)): still a hang.
                    problems.append(f"test still running after {watchdog} s: cancelled")
            finally:
                leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in leftovers:
                    task.cancel()
                if leftovers:
                    await asyncio.gather(*leftovers, return_exceptions=True)
                    problems.append(f"test left {len(leftovers)} task(s) running: {leftovers!r}")

        loop = new_loop(kind)
        loop.set_debug(True)
        loop.slow_callback_duration = 10.0  # noisy shared cores: do not log slow callbacks
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(main())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
        gc.collect()
        if problems:
            pytest.fail("event loop reported problems:\n" + "\n".join(problems))

    return wrapper


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "loop_kind" in metafunc.fixturenames:
        metafunc.parametrize("loop_kind", LOOP_KINDS)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        funcargs = pyfuncitem.funcargs
        kind = str(funcargs.get("loop_kind", "default"))
        argnames = pyfuncitem._fixtureinfo.argnames
        kwargs = {name: funcargs[name] for name in argnames}
        marker = pyfuncitem.get_closest_marker("timeout")
        limit = marker.args[0] if marker and marker.args else pyfuncitem.config.getini("timeout")
        watchdog = max(float(limit) - 1.0, 1.0) if limit else None
        if pyfuncitem.get_closest_marker("virtual_time") is not None:
            assert "loop_kind" not in funcargs, "virtual_time runs on its own loop kind"
            kind = "virtual"
            # The watchdog is a loop timer: on virtual time it would fire at the first
            # idle moment. pytest-timeout's SIGALRM stops a hung selector loop anyway.
            watchdog = None
        run_in_fresh_loop(pyfuncitem.obj, kind, watchdog)(**kwargs)
        return True
    if pyfuncitem.get_closest_marker("own_exception_state") is not None:
        funcargs = pyfuncitem.funcargs
        kwargs = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

        def in_own_exception_state() -> Iterator[object]:
            # A generator's frame has its exception state of its own, dropped with it: a
            # trace function raising at the "pass" line of an except clause leaves that
            # clause's exception set as the thread's "being handled" one (CPython 3.11+),
            # and every later exception in the thread would get it as its __context__.
            yield pyfuncitem.obj(**kwargs)

        next(in_own_exception_state())
        return True
    return None


class _HangWatchdog:
    """The last line of defence against a hung run. pytest-timeout interrupts a test once;
    a test still running 30 s after its timeout (a teardown waiting for a wake-up that was
    lost, a test that swallowed the interruption) gets every thread's traceback printed
    and ends the whole run with exit status 1, rather than leaving CI waiting for ever.
    One daemon thread for the session, started before any test, so the thread-leak check
    never sees it."""

    # Seconds past a test's timeout; tests/test_watchdog.py shortens it to check the watchdog.
    GRACE = float(os.environ.get("COROEXECUTOR_HANG_GRACE", "30"))

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._deadline: float | None = None
        self._nodeid = ""
        self._changed = threading.Condition()
        threading.Thread(target=self._watch, name="hang-watchdog", daemon=True).start()

    def arm(self, item: pytest.Item) -> None:
        marker = item.get_closest_marker("timeout")
        limit = marker.args[0] if marker and marker.args else self._config.getini("timeout")
        with self._changed:
            self._deadline = time.monotonic() + float(limit) + self.GRACE if limit else None
            self._nodeid = item.nodeid
            self._changed.notify()

    def disarm(self) -> None:
        with self._changed:
            self._deadline = None
            self._changed.notify()

    def _watch(self) -> None:
        with self._changed:
            while True:
                if self._deadline is None:
                    self._changed.wait()
                elif time.monotonic() < self._deadline:
                    self._changed.wait(self._deadline - time.monotonic())
                else:
                    break
            nodeid = self._nodeid
        capture = self._config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            capture.suspend_global_capture(in_=True)
        sys.stderr.write(f"\n{nodeid} is still running {self.GRACE:.0f} s after its timeout;"
                         " every thread's traceback follows, then the run stops\n")
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(1)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_WATCHDOG] = _HangWatchdog(config)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what the imports and the collection made (about 170,000 objects: dask,
    aiohttp, hypothesis, the test items): every collection after this, the full one each
    async test ends with included, walks only what the tests made since. On 3.11 it
    took ``pytest -k "policy or core_map"`` from 51-59 s to 21-22 s, and the whole suite
    from 519 s to 282 s. What is frozen is never collected: a leak the process ends."""
    gc.collect()
    gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    watchdog = item.config.stash[_WATCHDOG]
    watchdog.arm(item)
    try:
        yield
    finally:
        watchdog.disarm()


_WATCHDOG = pytest.StashKey[_HangWatchdog]()


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread running (CPython's test_concurrent_futures check)."""
    before = set(threading.enumerate())
    yield
    survivors = []
    for thread in threading.enumerate():
        if thread not in before:
            thread.join(5)
            if thread.is_alive():
                survivors.append(thread)
    if survivors:
        pytest.fail(f"test left threads running: {survivors!r}")
