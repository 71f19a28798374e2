"""Run the sync-bridge benchmarks (``bench_bridge.py``, written separately) for the report.

``bench_bridge`` is used through a function when it has one (``run(quick=...)`` or one of
the other names below, returning its rows); otherwise it runs as
``python -m benchmarks.bench_bridge [--quick]`` and its output is included verbatim.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["run_bridge"]

_ENTRY_POINTS = ("run", "run_benchmarks", "collect", "bench", "benchmark")


_CALL = """
import inspect, json, sys
import benchmarks.bench_bridge as m
for name in {names!r}:
    fn = getattr(m, name, None)
    if callable(fn) and "quick" in inspect.signature(fn).parameters:
        print("\\n" + json.dumps({{"entry": name, "rows": fn(quick={quick!r})}}, default=str))
        sys.exit(0)
sys.exit(99)
"""


def run_bridge(quick: bool) -> dict[str, Any]:
    """{"kind": "rows"|"text"|"missing"|"error", ...} for the report.

    Runs in a child process of the same code snapshot as the other workloads, so the
    bridge rows measure the same coroexecutor commit.
    """
    from . import _runner

    here = Path(__file__).resolve().parent
    if not (here / "bench_bridge.py").exists():
        return {"kind": "missing", "text": "benchmarks/bench_bridge.py does not exist yet"}
    print("bridge: running benchmarks.bench_bridge", file=sys.stderr, flush=True)
    env = _runner._child_env()
    call = _CALL.format(names=_ENTRY_POINTS, quick=quick)
    proc = subprocess.run([sys.executable, "-c", call], cwd=_runner._child_root, env=env,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode == 0:
        payload = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"kind": "rows", "rows": _jsonable(payload["rows"]), "entry": payload["entry"]}
    if proc.returncode != 99:
        return {"kind": "error", "text": f"bench_bridge failed:\n{proc.stderr.strip()}"}
    # No function to call: run it as a program and keep what it prints.
    cmd = [sys.executable, "-m", "benchmarks.bench_bridge", *(["--quick"] if quick else [])]
    proc = subprocess.run(cmd, cwd=_runner._child_root, env=env, capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        return {"kind": "error",
                "text": f"{' '.join(cmd[1:])} exited {proc.returncode}\n{proc.stderr.strip()}"}
    return {"kind": "text", "text": proc.stdout.rstrip()}


def _jsonable(rows: Any) -> Any:
    if isinstance(rows, str):
        return rows
    out: list[Any] = []
    for row in rows:
        if isinstance(row, dict):
            out.append({str(k): v if isinstance(v, (int, float, str)) or v is None else str(v)
                        for k, v in row.items()})
        elif hasattr(row, "_asdict"):
            out.append({k: v if isinstance(v, (int, float, str)) else str(v)
                        for k, v in row._asdict().items()})
        elif isinstance(row, (list, tuple)):
            out.append([v if isinstance(v, (int, float, str)) else str(v) for v in row])
        else:
            out.append(str(row))
    return out
