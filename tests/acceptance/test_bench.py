"""`dialer bench` at a tiny size, so that the benchmark cannot rot (its figures are not judged)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.conftest import dialer_cmd

pytestmark = pytest.mark.slow


def bench(tmp_path: Path, *args: str, timeout: float) -> list[str]:
    """`dialer bench --quick ARGS` run in tmp_path: the lines it printed (it must succeed)."""
    result = subprocess.run(
        dialer_cmd("bench", "--quick", *args),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_bench_quick_runs_every_scenario_and_prints_measured_figures(tmp_path: Path) -> None:
    """Every scenario prints one JSON object of measured figures; the limits held meanwhile."""
    rows = {r["scenario"]: r for r in map(json.loads, bench(tmp_path, "--json", timeout=300))}
    assert set(rows) == {
        "engine",
        "pacing",
        "api",
        "ingest",
        "scale",
        "watched",
        "watched_pacing",
        "heavy",
        "webhooks",
        "disk",
    }
    engine = rows["engine"]
    assert engine["contacts_per_second"] > 0 and engine["sqlite_ceiling_per_second"] > 0
    assert engine["ratio_to_ceiling"] == pytest.approx(
        engine["contacts_per_second"] / engine["sqlite_ceiling_per_second"], abs=0.01
    )
    pacing = rows["pacing"]
    assert pacing["max_concurrency"] == pacing["concurrent_call_limit"] == 50
    assert pacing["makespan_seconds"] >= pacing["ideal_seconds"]
    api = rows["api"]
    assert api["requests"] > 0 and api["errors"] == 0
    assert 0 < api["p50_ms"] <= api["p99_ms"]
    assert rows["ingest"]["median_seconds"] > 0
    hooks = rows["webhooks"]
    assert hooks["deliveries_written"] == 2 * hooks["contacts"] + 2  # 2 per contact, 2 per job
    assert hooks["paced_seconds_with_dead_endpoint"] > 0 and hooks["instant_ratio"] > 0
    scale = rows["scale"]
    assert scale["contacts"] == scale["jobs"] * 200 and scale["peak_rss_mb"] > 0
    assert scale["ratio_to_engine"] == pytest.approx(
        scale["contacts_per_second"] / engine["contacts_per_second"], abs=0.01
    )
    # Measured from outside, against a real `dialer serve` process.
    watched = rows["watched"]
    assert watched["contacts"] == 600 and watched["contacts_per_second"] > 0
    paced = rows["watched_pacing"]
    assert paced["max_live_calls"] <= 50 and paced["api_errors"] == 0
    assert 0 < paced["efficiency"] <= 1 and paced["api_p50_ms"] <= paced["api_p99_ms"]
    assert paced["storage_writes_over_50ms"] >= 0
    heavy = rows["heavy"]
    assert heavy["api_requests"] > 0 and heavy["api_errors"] == 0
    disk = rows["disk"]
    assert disk["flushes"] > 0 and 0 < disk["p50_ms"] <= disk["p99_ms"] <= disk["max_ms"]
    assert 0 <= disk["over_100ms_per_minute"] <= disk["over_20ms_per_minute"]


def test_bench_table_names_the_machine_and_its_speed_before_and_after(tmp_path: Path) -> None:
    """The table starts with the machine (its Python loop speed measured now) and ends with
    that speed measured again: figures of a shared machine are read against it."""
    lines = bench(tmp_path, "--scenario", "ingest", timeout=120)
    first = json.loads(lines[0].removeprefix("machine: "))
    assert first["cpus"] >= 1 and first["python_mloops_per_second"] > 0
    assert lines[-1].startswith("machine after: python_mloops_per_second=")
    assert float(lines[-1].rpartition("=")[2]) > 0
    assert any(line.startswith("ingest ") for line in lines)
