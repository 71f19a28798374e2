"""``python -m benchmarks [--quick] [--update-docs]``: run the suite, write the report."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from . import _report, _runner

DOC_PAGE = _runner.ROOT / "docs" / "performance.rst"
DOC_CHART = _runner.ROOT / "docs" / "_static" / "throughput.png"
WORKLOADS = ("throughput", "paired", "memory", "map", "stretch", "blocking", "bridge")

_SKELETON = """\
Performance
===========

Regenerate this page (tables and chart) with::

    python -m pip install -e '.[bench]'
    python -m benchmarks --update-docs

"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="coroexecutor against its peers: async throughput, memory, ordered map,"
        " blocking callables and the sync bridge. Each run is a fresh child process.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and fewer configurations (two to three minutes)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds of every timed configuration (default 5)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    parser.add_argument("--out", type=Path, default=_runner.ROOT / "benchmarks" / "results",
                        help="where results.md, results.json and throughput.png go")
    parser.add_argument("--update-docs", action="store_true",
                        help="also write docs/performance.rst and docs/_static/throughput.png")
    parser.add_argument("--worktree", action="store_true",
                        help="measure the working tree's coroexecutor (default: the one"
                        " committed at HEAD, exported once so concurrent edits cannot mix in)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="re-render the report from a saved results.json, running nothing")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.saved = None if args.from_json is None else _load_saved(parser, args.from_json)
    if args.only is not None:
        only = [w.strip() for w in args.only.split(",") if w.strip()]
        if not only:  # an empty --only must not start the full run
            parser.error(f"--only names no workload; choose from {', '.join(WORKLOADS)}")
        bad = [w for w in only if w not in WORKLOADS]
        if bad:
            parser.error(
                f"unknown workload(s) {', '.join(bad)}; choose from {', '.join(WORKLOADS)}"
            )
        args.only = only
    return args


# What a results.json must hold to be rendered again (see _runner.Results.to_json).
_SAVED_KEYS = ("quick", "repeats", "records", "skipped", "bridge", "started", "finished")


def _load_saved(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """The results a --from-json file holds, or a usage error that says what is wrong."""
    if path.is_dir():
        parser.error(f"--from-json: {path} is a directory, not a results.json file")
    if path.exists() and not path.is_file():  # a device or a pipe: /dev/zero never ends
        parser.error(f"--from-json: {path} is not a regular file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        parser.error(f"--from-json: no such file: {path}")
    except (OSError, UnicodeDecodeError) as exc:
        parser.error(f"--from-json: cannot read {path}: {exc}")
    try:
        saved = json.loads(text)
    except ValueError as exc:
        parser.error(f"--from-json: {path} is not JSON ({exc})")
    if not isinstance(saved, dict):
        parser.error(f"--from-json: {path} is JSON but not a saved benchmark run")
    missing = [key for key in _SAVED_KEYS if key not in saved]
    if missing:
        parser.error(
            f"--from-json: {path} is not a saved benchmark run (no {', '.join(missing)});"
            " give the results.json a run wrote"
        )
    return saved


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.from_json:
        return _main(args)
    try:
        return _main(args)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # The file has the run's keys, but not what a run writes under them.
        print(
            f"python -m benchmarks: error: --from-json: {args.from_json} is not a saved"
            f" benchmark run ({type(exc).__name__}: {exc}); give the results.json a run"
            " wrote",
            file=sys.stderr,
        )
        return 2


def _main(args: argparse.Namespace) -> int:
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {','.join(args.only)}"
    if args.repeats is not None:
        command += f" --repeats {args.repeats}"
    if args.from_json:
        saved = args.saved
        # Without --only, the workloads the file holds: a table of a workload the run
        # left out would show as measured, with nothing in it.
        only = args.only or _runner.workloads_in(saved)
        plan = _runner.plan_for(saved["quick"], saved["repeats"], only)
        results = _runner.Results(plan, saved["records"], saved["skipped"], saved["bridge"],
                                  saved.get("code", ""), saved["started"], saved["finished"])
        command = "python -m benchmarks" + (" --quick" if saved["quick"] else "")
    else:
        plan = _runner.plan_for(args.quick, args.repeats, args.only)
        plan.source = "worktree" if args.worktree else "head"
        try:
            results = _runner.run_plan(plan)
        except _runner.BenchmarkError as exc:
            print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
            return 1
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not args.from_json:
        (out / "results.json").write_text(json.dumps(results.to_json(), indent=1))
    chart = out / "throughput.png"
    have_chart = _report.write_chart(results, chart)
    text = _report.markdown(results, command)
    (out / "results.md").write_text(text)
    print(text)
    print(f"written: {out / 'results.md'}" + (f", {chart}" if have_chart else ""), file=sys.stderr)
    if args.update_docs:
        if have_chart:
            DOC_CHART.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(chart, DOC_CHART)
        generated = _report.rst(results, command, "_static/throughput.png" if have_chart else None)
        _report.update_doc_page(DOC_PAGE, generated, _SKELETON)
        print(f"updated: {DOC_PAGE}" + (f", {DOC_CHART}" if have_chart else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
