"""The long soak: the model-based and fault tests, many times, with fresh randomness.

Usage (from the repository root)::

    python tests/soak.py [--rounds N] [--examples N]

Each round runs ``tests/test_model_core.py``, ``tests/test_model_bridge.py`` and
``tests/test_faults.py`` in a fresh interpreter (``python -X dev``), in a random test
order (pytest-randomly, a new seed per round), with ``COROEXECUTOR_SOAK=1``: hypothesis
then draws fresh examples each time (no fixed seed), ``--examples`` of them per model
test, and keeps failures in its example database (``.hypothesis/``) so that the next run
replays them first. Stops at the first failing round and prints how to rerun it.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ["tests/test_model_core.py", "tests/test_model_bridge.py", "tests/test_faults.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--examples", type=int, default=2000)
    args = parser.parse_args()
    env = dict(os.environ, COROEXECUTOR_SOAK="1", COROEXECUTOR_SOAK_EXAMPLES=str(args.examples))
    started = time.monotonic()
    for round_number in range(1, args.rounds + 1):
        seed = random.randrange(2**32)
        command = [
            sys.executable, "-X", "dev", "-m", "pytest", "-q", "-p", "randomly",
            f"--randomly-seed={seed}",
            "-o", "faulthandler_timeout=0",  # a soak test runs for minutes: no stack dumps
            *FILES,
        ]  # fmt: skip
        print(f"round {round_number}/{args.rounds}: seed {seed}", flush=True)
        result = subprocess.run(command, cwd=ROOT, env=env, check=False)
        if result.returncode != 0:
            print(f"FAILED in round {round_number}; rerun with:")
            print(f"  COROEXECUTOR_SOAK=1 COROEXECUTOR_SOAK_EXAMPLES={args.examples} "
                  + " ".join(command[1:]))  # fmt: skip
            return result.returncode
    print(f"{args.rounds} rounds passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
