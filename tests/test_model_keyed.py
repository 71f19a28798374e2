"""Model-based test of per-key limits on the real CoroutineExecutor (hypothesis).

A ``RuleBasedStateMachine`` submits jobs with random keys (``submit_nowait`` and
``await submit``), finishes, fails and cancels them, and after every rule runs the
executor's loop for a bounded number of iterations (``asyncio.sleep(0)``: no time is
involved). A small reference model says which jobs must be running: while fewer than
``max_workers`` run, the oldest waiting job whose key has fewer than ``max_per_key``
running starts. The executor must agree exactly, which checks both limits, FIFO within a
key, no head-of-line blocking across keys, and the counts in ``stats``; at the end no
key leaves any state behind.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from coroexecutor import CoroutineExecutor

pytestmark = pytest.mark.timeout(120)

STEPS = 24  # loop iterations after each rule: the longest chain a rule starts is ~6
KEYS = st.sampled_from("abcd")


class Failed(Exception):
    pass


@dataclass
class Job:
    n: int
    key: str
    state: str = "waiting"  # waiting, running, done
    future: Optional[asyncio.Future[Any]] = None  # submit_nowait's future, or the task
    producer: Optional[asyncio.Future[Any]] = None  # the task awaiting submit()


class KeyedExecutorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.loop.set_debug(True)
        self.loop.slow_callback_duration = 10.0  # noisy shared cores: no slow-callback logs
        self.problems: list[str] = []
        self.loop.set_exception_handler(lambda _, ctx: self.problems.append(str(ctx)))
        self.jobs: list[Job] = []
        self.gates: dict[int, asyncio.Future[None]] = {}
        self.running: set[int] = set()  # jobs whose coroutine runs (seen from inside)
        self.workers = self.per_key = 1
        self.exe: Optional[CoroutineExecutor] = None

    @initialize(workers=st.integers(1, 4), per_key=st.integers(1, 3))
    def make(self, workers: int, per_key: int) -> None:
        self.workers, self.per_key = workers, per_key
        self.exe = CoroutineExecutor(
            workers, key=lambda key, n: key, max_per_key=per_key, suppress_task_errors=True
        )

    # The loop runs only inside run(): every rule is one action plus STEPS iterations.
    def run(self, action: Any) -> Any:
        async def main() -> Any:
            result = action()
            for _ in range(STEPS):
                await asyncio.sleep(0)
            return result

        return self.loop.run_until_complete(main())

    async def job(self, key: str, n: int) -> int:
        self.running.add(n)
        try:
            await self.gates[n]
        finally:
            self.running.discard(n)
        return n

    #
    # The model
    #

    def running_of(self, key: str) -> int:
        return sum(j.state == "running" and j.key == key for j in self.jobs)

    def pump(self) -> None:
        while sum(j.state == "running" for j in self.jobs) < self.workers:
            startable = [
                j for j in self.jobs
                if j.state == "waiting" and self.running_of(j.key) < self.per_key
            ]
            if not startable:
                return
            startable[0].state = "running"  # the oldest (jobs are in arrival order)

    def new_job(self, key: str) -> Job:
        job = Job(len(self.jobs), key)
        self.gates[job.n] = self.loop.create_future()
        self.jobs.append(job)
        return job

    #
    # Rules
    #

    @rule(key=KEYS)
    def submit_nowait(self, key: str) -> None:
        assert self.exe is not None
        exe = self.exe
        job = self.new_job(key)
        job.future = self.run(lambda: exe.submit_nowait(self.job, key, job.n))
        self.pump()

    @rule(key=KEYS)
    def submit(self, key: str) -> None:
        assert self.exe is not None
        exe = self.exe
        job = self.new_job(key)
        job.producer = self.run(lambda: asyncio.ensure_future(exe.submit(self.job, key, job.n)))
        self.pump()

    def pick(self, data: st.DataObject, states: tuple[str, ...]) -> Optional[Job]:
        jobs = [j for j in self.jobs if j.state in states]
        return data.draw(st.sampled_from(jobs)) if jobs else None

    @precondition(lambda self: any(j.state == "running" for j in self.jobs))
    @rule(data=st.data(), fail=st.booleans())
    def finish(self, data: st.DataObject, fail: bool) -> None:
        job = self.pick(data, ("running",))
        assert job is not None
        gate = self.gates[job.n]
        self.run(lambda: gate.set_exception(Failed()) if fail else gate.set_result(None))
        job.state = "done"
        self.pump()

    @precondition(lambda self: any(j.state != "done" for j in self.jobs))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job = self.pick(data, ("waiting", "running"))
        assert job is not None
        if job.producer is not None and not job.producer.done():
            target = job.producer  # still waiting in its key's line
        elif job.producer is not None:
            target = job.producer.result()  # its job's task
        else:
            target = job.future
        assert target is not None
        self.run(target.cancel)
        job.state = "done"
        self.pump()

    #
    # Checks
    #

    @invariant()
    def agrees_with_the_model(self) -> None:
        if self.exe is None:
            return
        expected = {j.n for j in self.jobs if j.state == "running"}
        assert self.running == expected
        stats = self.exe.stats
        assert stats.running == len(expected)
        waiting: dict[str, int] = {}
        for j in self.jobs:
            if j.state == "waiting":
                waiting[j.key] = waiting.get(j.key, 0) + 1
        active = {j.key for j in self.jobs if j.state != "done"}
        assert stats.active_keys == len(active)
        if waiting:
            assert stats.busiest_key is not None
            key, count = stats.busiest_key
            assert count == max(waiting.values()) == waiting[str(key)]
        else:
            assert stats.busiest_key is None
        assert not self.problems

    def teardown(self) -> None:
        try:
            exe = self.exe
            if exe is not None and exe._bound:
                for gate in self.gates.values():
                    if not gate.done():
                        gate.set_result(None)
                self.loop.run_until_complete(exe.shutdown())
                slots: Any = exe._slots
                assert slots.jobs == {} and slots.line.active_keys == 0
                assert len(slots.line) == 0
            assert not self.problems
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


KeyedExecutorMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_keyed_executor_model = KeyedExecutorMachine.TestCase
