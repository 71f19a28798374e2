"""A DaskExecutor's end when its user's side goes first: a second Ctrl-C as the ``with``
block exits, and a client closed under a running executor.

Each test runs a child interpreter (a Ctrl-C needs a main thread of its own; a closed
client, a cluster of its own) with one worker in the child's process
(``processes=False``), so the jobs and the child's main thread share ``threading``
events: every step waits for the one before it, each wait bounded. The jobs live in a
module of their own (``jobs.py``), so that they travel by reference, not by value with
their events.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

pytest.importorskip(
    "distributed", reason='dask.distributed is not installed (pip install "coroexecutor[dask]")'
)

_CHILD_TIMEOUT = 100  # seconds; the child's own waits are bounded at 20 s

# The common start of the child and of its jobs module.
_PRELUDE = (
    "import asyncio, concurrent.futures, os, signal, sys, threading\n"
    "import distributed\n"
    "from coroexecutor.distributed import DaskExecutor\n"
    "WAIT = 20.0\n"
)
# The child's: its jobs, and a cluster with one in-process worker of one thread.
_MAIN_PRELUDE = _PRELUDE + (
    "sys.path.insert(0, sys.argv[1])\n"
    "from jobs import *\n"
    "def new_cluster():\n"
    "    return distributed.LocalCluster(n_workers=1, threads_per_worker=1,\n"
    "                                    processes=False, dashboard_address=None)\n"
)


def _run_child(folder: pathlib.Path, jobs: str, main: str) -> list[str]:
    """Run ``main`` in ``python -X dev``, its jobs module ``jobs`` in ``folder``; return
    the lines it printed."""
    (folder / "jobs.py").write_text(_PRELUDE + jobs)
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _MAIN_PRELUDE + main, str(folder)],
        capture_output=True, text=True, timeout=_CHILD_TIMEOUT,
        cwd=folder,  # (not a checkout's: its coroexecutor would come before sys.path's)
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout.splitlines()


@pytest.mark.timeout(120)
def test_a_second_ctrl_c_as_the_with_block_exits_propagates_at_once(
    tmp_path: pathlib.Path,
) -> None:
    # Found by a docs-only tester: the exit of a block that a Ctrl-C left took the next
    # Ctrl-C for a first one, cancelled the jobs again and waited for their clean-up;
    # only a third propagated. Here the job's clean-up waits for the main thread, after
    # the KeyboardInterrupt: it ends only if that propagated while the clean-up ran.
    jobs = (
        "started, cleaning, release, cleaned = (threading.Event() for _ in range(4))\n"
        "async def stubborn():\n"
        "    started.set()\n"
        "    try:\n"
        "        await asyncio.Event().wait()\n"
        "    except asyncio.CancelledError:\n"
        "        cleaning.set()\n"
        "        await asyncio.to_thread(release.wait, WAIT)  # its one cancel: a clean-up\n"
        "        cleaned.set()\n"
        "        raise\n"
        "def ctrl_c_twice(exe):\n"
        "    print(f'job started: {started.wait(WAIT)}', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # the first: leaves the block\n"
        "    print(f'clean-up began: {cleaning.wait(WAIT)}', flush=True)\n"
        "    # The exit has asked for the closing: it now waits for it (the next step).\n"
        "    asked = exe._closing._asked\n"
        "    closing = not concurrent.futures.wait([asked], WAIT).not_done\n"
        "    print(f'closing: {closing}', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # the second: while the block exits\n"
    )
    main = (
        "if __name__ == '__main__':\n"
        "    # Started in the background (as CI starts tox), a process inherits SIGINT as\n"
        "    # ignored: os.kill() would do nothing.\n"
        "    signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "    with new_cluster() as cluster, distributed.Client(cluster) as client:\n"
        "        exe = DaskExecutor(client=client, per_worker=2)\n"
        "        try:\n"
        "            with exe:\n"
        "                future = exe.submit(stubborn)\n"
        "                threading.Thread(target=ctrl_c_twice, args=(exe,), daemon=True).start()\n"
        "                future.result()\n"
        "        except KeyboardInterrupt:\n"
        "            print(f'out during the clean-up: {not cleaned.is_set()}', flush=True)\n"
        "        release.set()\n"
        "        exe.shutdown()  # waits for the closing the exit began\n"
        "        print(f'cancelled: {future.cancelled()}', flush=True)\n"
    )
    assert _run_child(tmp_path, jobs, main) == [
        "job started: True", "clean-up began: True", "closing: True",
        "out during the clean-up: True", "cancelled: True",
    ]


@pytest.mark.timeout(120)
def test_a_client_closed_under_the_executor_cancels_its_jobs_and_shutdown_removes_its_loops(
    tmp_path: pathlib.Path,
) -> None:
    # Found by a docs-only tester: the user's client closed under a running executor (the
    # cluster alive), the futures said cancelled but the jobs ran on, the queued ones
    # started later, and shutdown() left the worker plugin and its loop thread in the
    # worker for good. per_worker=1: the second job waits for the first one's slot.
    jobs = (
        "started, cleaning, release, cleaned, queued = (threading.Event() for _ in range(5))\n"
        "async def stubborn():\n"
        "    started.set()\n"
        "    try:\n"
        "        await asyncio.Event().wait()\n"
        "    except asyncio.CancelledError:\n"
        "        cleaning.set()\n"
        "        await asyncio.to_thread(release.wait, WAIT)  # its one cancel: a clean-up\n"
        "        cleaned.set()\n"
        "        raise\n"
        "async def behind():\n"
        "    queued.set()\n"
    )
    main = (
        "def ours(names):\n"
        "    return sorted(name for name in names if name.startswith('coroexecutor-'))\n"
        "if __name__ == '__main__':\n"
        "    with new_cluster() as cluster:\n"
        "        client = distributed.Client(cluster)\n"
        "        exe = DaskExecutor(client=client, per_worker=1)\n"
        "        futures = [exe.submit(stubborn), exe.submit(behind)]\n"
        "        print(f'job started: {started.wait(WAIT)}', flush=True)\n"
        "        client.close()  # the user's doing\n"
        "        print(f'cancelled on its worker: {cleaning.wait(WAIT)}', flush=True)\n"
        "        release.set()  # the clean-up ends: the slot frees\n"
        "        exe.shutdown()\n"
        "        print(f'clean-up ended: {cleaned.is_set()}', flush=True)\n"
        "        print(f'queued job started: {queued.is_set()}', flush=True)\n"
        "        print(f'cancelled: {[f.cancelled() for f in futures]}', flush=True)\n"
        "        print(f'plugins: {ours(cluster.scheduler.worker_plugins)}', flush=True)\n"
        "        print(f'threads: {ours(t.name for t in threading.enumerate())}', flush=True)\n"
    )
    assert _run_child(tmp_path, jobs, main) == [
        "job started: True", "cancelled on its worker: True", "clean-up ended: True",
        "queued job started: False", "cancelled: [True, True]", "plugins: []", "threads: []",
    ]


@pytest.mark.timeout(120)
def test_shutdown_after_the_client_and_its_local_cluster_closed_tries_no_connection(
    tmp_path: pathlib.Path,
) -> None:
    # The closing reaches the scheduler of a closed client with a client of its own, and
    # a scheduler gone costs its whole connect timeout: not tried for a LocalCluster the
    # client knew, closed too (a common end of a script that forgot the executor).
    jobs = ""
    main = (
        "import logging\n"
        "class Records(logging.Handler):\n"
        "    def __init__(self):\n"
        "        super().__init__(logging.DEBUG)\n"
        "        self.messages = []\n"
        "    def emit(self, record):\n"
        "        self.messages.append(record.getMessage())\n"
        "if __name__ == '__main__':\n"
        "    records = Records()\n"
        "    logger = logging.getLogger('coroexecutor.distributed')\n"
        "    logger.addHandler(records)\n"
        "    logger.setLevel(logging.DEBUG)\n"
        "    cluster = new_cluster()\n"
        "    client = distributed.Client(cluster)\n"
        "    exe = DaskExecutor(client=client, per_worker=1)\n"
        "    client.close()\n"
        "    cluster.close()\n"
        "    exe.shutdown()\n"
        "    print([m for m in records.messages if 'scheduler' in m], flush=True)\n"
    )
    assert _run_child(tmp_path, jobs, main) == ["[]"]
