"""The demo (`python -m coroexecutor`) the README tells newcomers to run."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from coroexecutor.__main__ import main

pytestmark = pytest.mark.timeout(60)


def test_demo_runs_every_scenario_and_reports_what_happened() -> None:
    out = io.StringIO()
    assert main(["--jobs", "300", "--workers", "20", "--no-progress"], out=out) == 0
    text = out.getvalue()
    peak = re.search(r"peak concurrency (\d+) \(limit 20\)", text)
    assert peak is not None and 1 <= int(peak.group(1)) <= 20
    assert "the block raised ValueError('job #100 failed') at once" in text
    stopped = re.search(r"the producer stopped after (\d+) of 300 submits", text)
    assert stopped is not None and int(stopped.group(1)) < 300
    absorbed = re.search(r"(\d+) succeeded, (\d+) failed; none was cancelled", text)
    assert absorbed is not None and sum(map(int, absorbed.groups())) == 300
    assert "300 concurrent.futures.Future results" in text
    assert "All scenarios done" in text


def test_demo_seed_makes_scenarios_2_and_3_reproducible() -> None:
    def reports(seed: int) -> tuple[str, str]:
        out = io.StringIO()
        argv = ["--jobs", "300", "--workers", "20", "--no-progress", "--seed", str(seed)]
        assert main(argv, out=out) == 0
        text = out.getvalue()
        fail_fast = re.search(r"^   the block raised .*$", text, re.M)
        absorbed = re.search(r"^   \d+ succeeded, \d+ failed; none was cancelled$", text, re.M)
        assert fail_fast is not None and absorbed is not None
        return fail_fast.group(), absorbed.group()

    first = reports(7)
    assert reports(7) == first  # what --help promises
    assert reports(7) == first


def test_demo_help_lists_its_options() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coroexecutor", "--help"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    for option in ("--jobs", "--workers", "--fail-rate", "--seed", "--no-progress"):
        assert option in proc.stdout
    assert "scenarios 2 and 3 report the same counts" in " ".join(proc.stdout.split())
    # Scenario 4 caps the jobs at 500 (plain futures held in a list): the help says so.
    assert "jobs per scenario; at most 500 in scenario 4 (3000)" in " ".join(proc.stdout.split())


def test_demo_rejects_bad_options() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--workers", "0"], out=io.StringIO())
    assert info.value.code == 2
