"""Logging: the engine's many attempt lines at once are the lines structlog would write."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from dialer import logs

ROWS: list[dict[str, Any]] = [
    {"job_id": "job_1", "contact_id": 7, "attempt": 2, "reason": 'Busy "486"', "sip_code": 486},
    {"job_id": "job_1", "contact_id": 8, "attempt": 1, "reason": None, "duration": 1.5},
]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(text: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in text.splitlines()]
    for line in found:
        assert line.pop("timestamp").endswith("Z")
    return found


def test_info_many_writes_the_lines_structlog_writes(capsys: pytest.CaptureFixture[str]) -> None:
    """As JSON lines: the same fields in the same order (context first), one write for all."""
    logs.configure("info", json=True)
    structlog.contextvars.bind_contextvars(run="r1")
    log = structlog.get_logger("test")
    for row in ROWS:
        log.info("call_attempt_finished", **row)
    one_by_one = capsys.readouterr().err
    logs.info_many(log, "call_attempt_finished", ROWS)
    at_once = capsys.readouterr().err
    assert len(at_once.splitlines()) == 2
    assert [list(line) for line in lines(at_once)] == [list(line) for line in lines(one_by_one)]
    assert lines(at_once) == lines(one_by_one)
    assert lines(at_once)[0]["run"] == "r1"


@pytest.mark.parametrize("level, json_lines", [("warning", True), ("info", False)])
def test_info_many_follows_the_configuration(
    capsys: pytest.CaptureFixture[str], level: str, json_lines: bool
) -> None:
    """Above info nothing is written; console lines go through structlog one by one."""
    logs.configure(level, json=json_lines)
    logs.info_many(structlog.get_logger("test"), "call_attempt_finished", ROWS)
    written = capsys.readouterr().err
    if level == "warning":
        assert written == ""
    else:
        assert written.count("call_attempt_finished") == 2 and not written.startswith("{")


def test_info_many_goes_through_captured_logs(capsys: pytest.CaptureFixture[str]) -> None:
    """A test (or anything) that changes the processors gets every row as an event."""
    logs.configure("info", json=True)
    with structlog.testing.capture_logs() as captured:
        logs.info_many(structlog.get_logger("test"), "call_attempt_finished", ROWS)
    assert [(e["event"], e["contact_id"]) for e in captured] == [
        ("call_attempt_finished", 7),
        ("call_attempt_finished", 8),
    ]
    assert capsys.readouterr().err == ""


def test_library_records_and_warnings_are_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """aiohttp's own errors and a library's warning are lines like the service's own, not
    stray text among them; below the level, nothing. Configuring twice adds no second copy."""
    logs.configure("info", json=True)
    logs.configure("info", json=True)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    logging.getLogger("livekit").info("not shown")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("key too short", UserWarning, stacklevel=1)
    found = lines(capsys.readouterr().err)
    assert [(f["event"], f["level"], f["logger"]) for f in found] == [
        ("Error handling request", "error", "aiohttp.server"),
        (found[1]["event"], "warning", "py.warnings"),
    ]
    assert "ValueError: boom" in found[0]["exception"]
    assert "UserWarning: key too short" in found[1]["event"]


def test_requests_aiohttp_cannot_parse_are_counted_never_quoted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """aiohttp's record of a request it could not parse quotes the offending header, which can
    hold a key: only a count and the kinds are logged, at most once a second."""
    from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

    logs.configure("info", json=True)
    server = logging.getLogger("aiohttp.server")
    for exc in (
        BadHttpMessage("Invalid header value char: x-api-key: dk_secret\x01"),
        LineTooLong(b"Bearer dk_secret" * 600, 8190),
        BadHttpMessage("again dk_secret"),
    ):
        try:
            raise exc
        except Exception:
            server.exception("Error handling request from %s", "127.0.0.1")
    written = capsys.readouterr().err
    assert "dk_secret" not in written
    [line] = lines(written)  # the first at once; the others counted for the next line
    assert (line["event"], line["count"], line["kinds"]) == (
        "http_requests_malformed",
        1,
        {"BadHttpMessage": 1},
    )
