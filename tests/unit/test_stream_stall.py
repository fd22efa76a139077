"""When a streamed answer's client counts as stalled (api.controls.write_or_drop)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from api import controls


class Transport:
    def __init__(self) -> None:
        self.aborted_at: float | None = None

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return None

    def abort(self) -> None:
        self.aborted_at = asyncio.get_running_loop().time()


class Request:
    path = "/batch/jobs/batch_1/export"

    def __init__(self) -> None:
        self.transport = Transport()


class NeverTaken:
    """A response whose write waits for room that never comes."""

    async def write(self, data: bytes) -> None:
        await asyncio.Event().wait()


async def test_a_client_that_stops_taking_is_dropped_a_stall_after_it_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that took some of the answer at first and then nothing is dropped about
    STREAM_STALL_SECONDS after it stopped. It was looked at once per STREAM_STALL_SECONDS, so
    one that took a little early in that time and then stopped stayed up to twice as long."""
    stall = 0.3
    monkeypatch.setattr(controls, "STREAM_STALL_SECONDS", stall)
    loop = asyncio.get_running_loop()
    started = loop.time()
    stops = started + 0.01

    def unsent(request: Any) -> int:  # 1,000 bytes waiting, taken at 100 KB/s, then none
        taken = int((min(loop.time(), stops) - started) * 100_000)
        return 1_000 - taken

    monkeypatch.setattr(controls, "_unsent", unsent)
    request = Request()
    with capture_logs() as logs, pytest.raises(ConnectionResetError):
        await controls.write_or_drop(request, NeverTaken(), b"x" * 100)  # type: ignore[arg-type]
    assert [e["event"] for e in logs] == ["stream_client_stalled"]
    assert request.transport.aborted_at is not None
    after = request.transport.aborted_at - stops
    assert stall <= after < stall * 5 / 3  # (looked at every stall / 6)
