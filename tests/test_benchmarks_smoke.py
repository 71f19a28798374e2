"""The benchmark code cannot rot: every contender runs once at a tiny size, counts right.

Each contender runs in-process through the same ``measure()`` the benchmark's child
processes call, so a contender that loses or duplicates jobs, or a peer library whose
API moved, fails here rather than in a half-hour benchmark run. The report is rendered
once from synthetic runs, chart included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # plain `pytest` puts only tests/ on sys.path
    sys.path.insert(0, str(ROOT))

from benchmarks import __main__ as cli  # noqa: E402
from benchmarks import _child, _contenders, _paired, _report, _runner, bench_bridge  # noqa: E402
from benchmarks.__main__ import _SAVED_KEYS, parse_args  # noqa: E402
from benchmarks.experiments import gctime  # noqa: E402

try:
    import uvloop
except ImportError:  # pragma: no cover - platform dependent
    uvloop = None

CASES = [
    pytest.param(workload, c.key, id=f"{workload}-{c.key}")
    for workload, contenders in _contenders.WORKLOADS.items()
    if workload != "memory"  # the same contenders as throughput
    for c in contenders
]


def _skip_if_missing(contender: _contenders.Contender) -> None:
    for module in contender.needs:
        pytest.importorskip(module)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("workload", "key"), CASES)
def test_contender_completes_every_job(workload: str, key: str) -> None:
    _skip_if_missing(_contenders.find(workload, key))
    spec = {"workload": workload, "contender": key, "loop": "asyncio", "n": 57, "workers": 4}
    result = _child.measure(spec)
    assert result["count"] == 57
    assert result["seconds"] > 0


@pytest.mark.timeout(60)
@pytest.mark.skipif(uvloop is None, reason="uvloop not installed")
@pytest.mark.parametrize("key", [c.key for c in _contenders.THROUGHPUT])
def test_throughput_contender_on_uvloop(key: str) -> None:
    _skip_if_missing(_contenders.find("throughput", key))
    spec = {"workload": "throughput", "contender": key, "loop": "uvloop", "n": 31, "workers": 3}
    assert _child.measure(spec)["count"] == 31


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key", ["ours_submit", "sem_callback"])
def test_memory_measurement_reports_tracemalloc_peak(key: str) -> None:
    _skip_if_missing(_contenders.find("memory", key))
    spec = {"workload": "memory", "contender": key, "n": 200, "workers": 10,
            "measure": "tracemalloc"}
    result = _child.measure(spec)
    assert result["count"] == 200
    assert result["trace_peak"] > 0
    assert result["rss_peak_kib"] >= result["rss_before_kib"] > 0


@pytest.mark.timeout(60)
def test_wrong_job_count_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    async def loses_a_job(n: int, workers: int) -> int:
        for i in range(n - 1):
            await _contenders.job(i)
        return _contenders.completed()

    lossy = _contenders.Contender("lossy", "loses one job", loses_a_job)
    monkeypatch.setitem(_contenders.WORKLOADS, "throughput", [lossy])
    with pytest.raises(AssertionError, match="9 jobs completed, expected 10"):
        _child.measure({"workload": "throughput", "contender": "lossy", "n": 10, "workers": 2})


@pytest.mark.timeout(60)
def test_paired_child_runs_every_variant_on_every_loop_in_each_sub_round() -> None:
    loops = ["asyncio"] + (["uvloop"] if uvloop is not None else [])
    spec = {"workload": "paired", "contender": "all", "loop": "both", "n": 40, "workers": 4,
            "measure": "time", "loops": loops, "sub_rounds": 3}
    result = _child.measure(spec)
    assert result["count"] == 40
    keys = (_paired.BASE, *_paired.OURS, *_paired.OPTIONS)
    expected = {f"{loop}/{key}" for loop in loops for key in keys}
    assert set(result["sub_times"]) == expected
    assert all(len(times) == 3 and min(times) > 0 for times in result["sub_times"].values())


@pytest.mark.timeout(60)
def test_child_process_prints_one_json_line() -> None:
    spec = {"workload": "throughput", "contender": "sem_callback", "loop": "asyncio",
            "n": 100, "workers": 5}
    proc = subprocess.run([sys.executable, "-m", "benchmarks._child", json.dumps(spec)],
                          cwd=ROOT, capture_output=True, text=True, timeout=50, check=True)
    assert json.loads(proc.stdout)["count"] == 100


@pytest.mark.timeout(60)
def test_report_renders_tables_targets_and_chart(tmp_path: Path) -> None:
    plan = _runner.plan_for(quick=True, repeats=3, only=None)
    results = _runner.Results(plan, code="synthetic")
    for rnd in range(plan.repeats):
        for config in plan.timed:
            if config.workload == "paired":
                subs = {f"{loop}/{key}": [1.0 - 0.05 * i + 0.001 * j for j in range(4)]
                        for loop in ("asyncio", "uvloop")
                        for i, key in enumerate((_paired.BASE, *_paired.OURS))}
                # With retry=Retry(): submit 2 % above its plain form, map 5 % (missed).
                for loop in ("asyncio", "uvloop"):
                    for key, factor in (("ours_submit_retry", 1.02), ("ours_map_retry", 1.05)):
                        plain = _contenders.OPTION_BASES[key][0]
                        subs[f"{loop}/{key}"] = [t * factor for t in subs[f"{loop}/{plain}"]]
                results.records.append({**config.spec("all"), "round": rnd, "count": config.n,
                                        "seconds": 1.0, "sub_times": subs})
                continue
            for i, key in enumerate(results.contenders(config.workload)):
                results.records.append({**config.spec(key), "round": rnd, "count": config.n,
                                        "seconds": 1.0 + 0.1 * i + 0.01 * rnd})
    for config in plan.memory:
        for key in results.contenders(config.workload):
            results.records.append({**config.spec(key), "round": 0, "count": config.n,
                                    "seconds": 1.0, "trace_peak": 2**20, "rss_before_kib": 1000,
                                    "rss_peak_kib": 3000})
    results.bridge = {"kind": "rows", "rows": [{"workload": "w", "ratio": 1.0}]}
    results.finished = results.started + 60

    text = _report.markdown(results, "python -m benchmarks --quick")
    assert "### Async throughput" in text
    assert "| **coroexecutor submit** |" in text
    assert "Targets (issue 7)" in text
    # The paired table: ours 5 % and 10 % below the baseline in every sub-round.
    assert "### Per-job cost, paired in one process" in text
    assert "| **coroexecutor submit** | 0.950 [0.950-0.950] |" in text
    assert "| per-job cost no higher than Semaphore + create_task, paired in one process" in text
    assert "| coroexecutor submit, retry=Retry(): vs **coroexecutor submit** | 1.020 [" in text
    assert "| coroexecutor submit, retry=Retry(): per-job time at most 1.03x the plain form's," \
        " paired (nothing fails) | met |" in text
    assert "| coroexecutor map, retry=Retry(): per-job time at most 1.03x the plain form's," \
        " paired (nothing fails) | **MISSED** |" in text
    page = tmp_path / "performance.rst"
    _report.update_doc_page(page, _report.rst(results, "cmd", "_static/x.png"), "Perf\n====\n")
    first = page.read_text()
    assert first.startswith("Perf\n====\n")
    assert ".. list-table::" in first
    _report.update_doc_page(page, _report.rst(results, "cmd", None), "unused")
    assert page.read_text().count(_report.DOC_BEGIN) == 1  # replaced, not appended
    pytest.importorskip("matplotlib")
    assert _report.write_chart(results, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 1000


@pytest.mark.timeout(60)
def test_report_from_json_renders_only_the_workloads_the_file_holds(tmp_path: Path) -> None:
    from benchmarks import __main__ as cli

    plan = _runner.plan_for(quick=True, repeats=2, only=["paired"])
    results = _runner.Results(plan, code="synthetic")
    for rnd in range(plan.repeats):
        for config in plan.timed:
            subs = {f"{loop}/{key}": [1.0 - 0.05 * i] * 4
                    for loop in ("asyncio", "uvloop")
                    for i, key in enumerate((_paired.BASE, *_paired.OURS))}
            results.records.append({**config.spec("all"), "round": rnd, "count": config.n,
                                    "seconds": 1.0, "sub_times": subs})
    results.finished = results.started + 60
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(results.to_json()))
    assert _runner.workloads_in(results.to_json()) == ["paired"]

    assert cli.main(["--from-json", str(saved), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "results.md").read_text()
    assert "### Per-job cost, paired in one process" in text
    assert "| **coroexecutor submit** | 0.950 [0.950-0.950] |" in text
    # Workloads the run left out get no table and no target row (they used to read
    # MISSED, with nan for the memory target).
    assert "### Async throughput" not in text
    assert "memory flat" not in text
    assert "nan" not in text


BRIDGE_CASES = [
    pytest.param(kind, name, id=f"bridge-{kind}-{name.split()[0]}")
    for kind in bench_bridge.LOOPS
    for name in bench_bridge.CONTENDERS
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "name"), BRIDGE_CASES)
def test_bridge_contender_runs_on_its_loop(kind: str, name: str) -> None:
    # Each contender checks its own completed count and that it runs on `kind`'s loop.
    skipped = bench_bridge._available()[1]
    if (kind, name) in skipped:
        pytest.skip(skipped[kind, name])
    assert bench_bridge.THROUGHPUT[name](20, kind) > 0
    assert bench_bridge.ROUND_TRIP[name](5, kind) > 0


@pytest.mark.timeout(60)
def test_bridge_rows_skip_missing_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_bridge, "_installed", lambda module: module == "anyio")
    loops, skipped = bench_bridge._available()
    assert loops == ["asyncio"]
    values = {key: [1.0, 2.0] for key in [("asyncio", bench_bridge.BASELINE),
                                          ("asyncio", bench_bridge.ANYIO),
                                          ("asyncio", bench_bridge.OURS)]}
    rows = bench_bridge._contender_rows("w", loops, skipped, values,
                                        lambda key, v: f"{v}", throughput=True)
    assert [r["contender"] for r in rows] == [
        f"{bench_bridge.BASELINE} (baseline)", bench_bridge.ANYIO, bench_bridge.ASGIREF,
        f"**{bench_bridge.OURS}**", "all"]
    assert rows[2]["result"] == "skipped: asgiref is not installed"
    assert rows[4]["result"] == "skipped: uvloop is not installed"
    assert rows[3]["met"] is False  # 1.00x the baseline is short of 2.0x
    assert len({tuple(r) for r in rows}) == 1  # same columns everywhere: the report needs it


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--only", ""], "--only names no workload"),
        (["--only", ",,"], "--only names no workload"),
        (["--from-json", "/nonexistent/results.json"], "--from-json: no such file"),
    ],
)
def test_command_line_mistakes_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found by a docs-only tester: an empty --only started the full 30-minute run, and a
    # missing --from-json file ended in a raw traceback.
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is a directory"),
        (b"not json at all", "is not JSON"),
        (b"\xff\xfe\x00", "cannot read"),
        (b"[1, 2]", "not a saved benchmark run"),
        (b'{"quick": true}', "no repeats, records"),
    ],
)
def test_a_from_json_that_is_no_saved_run_is_a_usage_error(
    tmp_path: Path, content: bytes | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found by a docs-only tester: a file that is not JSON ended in a raw traceback, and a
    # directory was called "no such file".
    target = tmp_path / "results.json"
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content)
    with pytest.raises(SystemExit) as info:
        parse_args(["--from-json", str(target)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_a_from_json_that_is_no_regular_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # /dev/zero was read without end (found by a docs-only tester).
    with pytest.raises(SystemExit) as info:
        parse_args(["--from-json", "/dev/zero"])
    assert info.value.code == 2
    assert "is not a regular file" in capsys.readouterr().err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", [None, 5, "x", ["x"]])
def test_a_from_json_with_the_keys_but_not_their_contents_is_an_error_not_a_traceback(
    tmp_path: Path, value: object, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({key: value for key in _SAVED_KEYS}))
    assert cli.main(["--from-json", str(saved), "--out", str(tmp_path / "out")]) == 2
    assert "is not a saved benchmark run" in capsys.readouterr().err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(gctime.VARIANTS))
def test_experiment_variant_completes_every_job(name: str) -> None:
    """The variants gctime and instructions count (the map floor's too) run every job."""
    import asyncio

    async def run() -> int:
        _contenders.reset()
        return int(await gctime.VARIANTS[name](57, 4))

    assert asyncio.run(run()) == 57
    assert _contenders.completed() == 57
