"""Worker-task pools against a Task per job, as jobs await more often (stretch goal).

``python -m benchmarks.experiments.awaits [rounds]``: an ordered map, max_workers=1000,
200,000 awaits in total split into jobs of 1, 4 and 16 awaits; speed relative to the
stdlib window of Tasks awaited in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import sys
from typing import Any

from .. import _contenders as C
from ._harness import compare, print_table

W = 1000


def variants_for(k: int, n: int) -> dict[str, Any]:
    async def kjob(i: int) -> int:
        for _ in range(k):
            await asyncio.sleep(0)
        C._done += 1
        return i

    async def window() -> None:
        create_task = asyncio.get_running_loop().create_task
        pending: collections.deque[asyncio.Task[int]] = collections.deque()
        expected = 0
        for i in range(n):
            if len(pending) >= W:
                expected = C._check(expected, await pending.popleft())
            pending.append(create_task(kjob(i)))
        while pending:
            expected = C._check(expected, await pending.popleft())

    async def shared() -> None:
        await C._pool_map(n, W, kjob)

    async def per_job_context() -> None:
        copy = contextvars.copy_context
        await C._pool_map(n, W, lambda i: C._trampoline(kjob(i), copy()))

    def reset_and(run: Any) -> Any:
        async def wrapped() -> None:
            C.reset()
            await run()

        return wrapped

    return {
        "window of Tasks (stdlib)": reset_and(window),
        "worker pool, shared context": reset_and(shared),
        "worker pool, per-job context (trampoline)": reset_and(per_job_context),
    }


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"Python {sys.version.split()[0]}, ordered map, max_workers={W:,}")
    for k in (1, 4, 16):
        n = 200_000 // k
        print(f"{k} await(s) per job, {n:,} jobs:")
        times = compare(variants_for(k, n), reps, C.completed, n)
        print_table(times, "window of Tasks (stdlib)", n, inverse=True)


if __name__ == "__main__":
    main()
