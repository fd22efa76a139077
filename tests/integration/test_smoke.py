"""A job runs from create to completed through the HTTP API."""

from __future__ import annotations

from tests.conftest import Running


async def test_json_job_runs_to_completion(running: Running) -> None:
    """A JSON job with two contacts is created, dialed, and ends completed with both answered."""
    created = await running.create_json([{"phone": "+12025550101"}, {"phone": "+12025550102"}])
    body = await running.wait_status(created["batchJobId"], "completed")
    assert body["successfulCalls"] == 2
    assert body["statusBreakdown"]["completed"] == 2
