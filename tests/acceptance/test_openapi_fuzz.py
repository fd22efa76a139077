"""schemathesis against a started service: no 5xx, every answer conforms to /openapi.json."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_drift(
    service_factory: Any, tmp_path: Path
) -> None:
    """A seeded, bounded schemathesis run over every operation passes every check."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    svc = service_factory(call_seconds=0.2)
    svc.start()
    key = svc.create_key()
    run = subprocess.run(
        [
            cli,
            "run",
            svc.url("/openapi.json"),
            "-H",
            f"x-api-key: {key}",
            "--checks",
            CHECKS,
            "--max-examples",
            "20",
            "--seed",
            "1",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
