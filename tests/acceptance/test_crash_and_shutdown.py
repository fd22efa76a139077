"""Crash safety with the real process: kill -9 mid-job, restart, and SIGTERM drains."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import dialer_cmd

pytestmark = pytest.mark.slow

FINAL = ("completed", "busy", "failed", "no_answer", "cancelled")


def contacts(n: int) -> list[dict[str, str]]:
    # Every tenth number is busy (retried immediately, 3 attempts); the rest answer.
    return [{"phone": f"+1202555{(190 if i % 10 == 0 else 0) + 1000 + i:04d}"} for i in range(n)]


def job_status(svc: Any, job_id: str) -> dict[str, Any]:
    status, body = svc.request("GET", f"/batch/jobs/{job_id}?contactsPageSize=1")
    assert status == 200, body
    result: dict[str, Any] = body
    return result


def claimed_ahead(svc: Any) -> float:
    """The engine's gauge of contacts claimed ahead (moved to `dialing`, not yet dialed)."""
    with urllib.request.urlopen(svc.url("/metrics"), timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "dialer_contacts_claimed_ahead"
    )


def test_kill_9_mid_job_never_dials_twice(service_factory: Any) -> None:
    """After kill -9 and a restart, no attempt was dialed twice, every contact ends final, and
    every attempt counted was dialed: the contacts claimed ahead and not yet dialed at the kill
    go back undialed (the dial log tells them apart), only the calls placed are `interrupted`."""
    svc = service_factory(call_seconds=0.4)
    svc.start()
    svc.create_key()
    status, created = svc.request(
        "POST",
        "/batch/create",
        {
            "fromPhoneNumberId": "phone_demo",
            "name": "crash",
            "contacts": contacts(120),
            "concurrentCallLimit": 20,
        },
    )
    assert status == 201, created
    job_id = created["batchJobId"]
    svc.wait(lambda: job_status(svc, job_id)["statusBreakdown"]["completed"] >= 30)
    svc.wait(lambda: claimed_ahead(svc) >= 10)
    killed_at = time.time()
    assert svc.kill(signal.SIGKILL) == -signal.SIGKILL

    left_dialing = svc.db_rows("SELECT id, attempt_count FROM contacts WHERE status = 'dialing'")
    assert left_dialing, "the kill should interrupt live calls"
    dialed_before = {(e["contact"], e["attempt"]) for e in svc.ledger_entries()}

    # A start that fails after taking the database (its port is taken) changes nothing.
    with socket.create_server(("127.0.0.1", svc.port)):
        failed = subprocess.run(dialer_cmd("serve", "--config", str(svc.config)), timeout=60)
    assert failed.returncode != 0
    svc.start()
    svc.wait(lambda: job_status(svc, job_id)["status"] == "completed")

    ledger = svc.ledger_entries()
    dials = Counter((e["contact"], e["attempt"]) for e in ledger)
    assert max(dials.values()) == 1, "an attempt was dialed twice"
    rows = svc.db_rows("SELECT id, status, attempt_count FROM contacts")
    assert len(rows) == 120
    assert all(r["status"] in FINAL for r in rows)
    per_contact = Counter(e["contact"] for e in ledger)
    for row in rows:
        # Every dial is a recorded attempt, and every recorded attempt a dial.
        assert per_contact[row["id"]] == row["attempt_count"], dict(row)
    assert not svc.db_rows("SELECT id FROM attempts WHERE outcome IS NULL")
    interrupted = {
        r["contact_id"]
        for r in svc.db_rows("SELECT contact_id FROM attempts WHERE reason = 'interrupted'")
    }
    placed = {r["id"] for r in left_dialing if (r["id"], r["attempt_count"]) in dialed_before}
    assert interrupted <= placed
    # The others placed had ended before the kill, their outcomes kept on disk until written
    # (dialer.held): written at the restart as they happened, not as interrupted.
    ended = placed - interrupted
    ends = svc.db_rows(
        "SELECT contact_id, ended_at, reason FROM attempts WHERE contact_id IN "
        f"({','.join(str(c) for c in ended) or 'NULL'})"
    )
    assert {r["contact_id"] for r in ends} == ended
    assert all(r["ended_at"] <= killed_at and r["reason"] != "interrupted" for r in ends)
    held = [
        json.loads(line) for line in svc.log.read_text().splitlines() if "held_outcomes" in line
    ]
    assert sum(e.get("count", 0) for e in held if e["event"] == "held_outcomes_written") >= len(
        ended
    )
    assert len(placed) < len(left_dialing), "contacts claimed ahead should have gone back"
    detail = job_status(svc, job_id)
    assert sum(detail["statusBreakdown"].values()) == 120
    svc.kill(signal.SIGTERM)


def five_live(svc: Any, name: str, n: int) -> str:
    """Create a job of n contacts, 5 at a time; its id once 5 calls are live."""
    status, created = svc.request(
        "POST",
        "/batch/create",
        {
            "fromPhoneNumberId": "phone_demo",
            "name": name,
            "contacts": [{"phone": f"+1202555{1000 + i}"} for i in range(n)],
            "concurrentCallLimit": 5,
        },
    )
    assert status == 201, created
    job_id: str = created["batchJobId"]
    svc.wait(lambda: job_status(svc, job_id)["statusBreakdown"]["dialing"] == 5)
    return job_id


def test_sigterm_lets_live_calls_finish(service_factory: Any) -> None:
    """SIGTERM stops new dials, lets live calls finish within the grace period, and exits 0."""
    svc = service_factory(call_seconds=1.0, grace=10.0)
    svc.start()
    svc.create_key()
    five_live(svc, "drain", 50)
    assert svc.kill(signal.SIGTERM) == 0
    assert not svc.db_rows("SELECT id FROM contacts WHERE status = 'dialing'")
    assert not svc.db_rows("SELECT id FROM attempts WHERE outcome IS NULL")
    done = svc.db_rows("SELECT count(*) AS n FROM contacts WHERE status = 'completed'")[0]["n"]
    pending = svc.db_rows("SELECT count(*) AS n FROM contacts WHERE status = 'pending'")[0]["n"]
    assert done >= 5
    assert done + pending == 50
    assert len(svc.ledger_entries()) == done


def test_restart_resumes_a_job(service_factory: Any) -> None:
    """A job interrupted by a graceful stop carries on after the next start."""
    svc = service_factory(call_seconds=0.2, grace=5.0)
    svc.start()
    svc.create_key()
    status, created = svc.request(
        "POST",
        "/batch/create",
        {
            "fromPhoneNumberId": "phone_demo",
            "name": "resume",
            "contacts": [{"phone": f"+1202555{1000 + i}"} for i in range(40)],
            "concurrentCallLimit": 4,
        },
    )
    assert status == 201, created
    job_id = created["batchJobId"]
    svc.wait(lambda: job_status(svc, job_id)["statusBreakdown"]["completed"] >= 4)
    assert svc.kill(signal.SIGTERM) == 0
    svc.start()
    svc.wait(lambda: job_status(svc, job_id)["status"] == "completed")
    assert job_status(svc, job_id)["successfulCalls"] == 40
    assert len(svc.ledger_entries()) == 40
    svc.kill(signal.SIGTERM)


def test_sigterm_stops_dialing_at_once_while_a_request_is_in_flight(service_factory: Any) -> None:
    """A request still being sent (a slow upload) made the runner wait up to its shutdown
    timeout before the engine was told to stop, and calls kept being placed meanwhile (75 dials
    after SIGTERM in 11 s, seen from outside). Now no call starts after SIGTERM, and repeated
    signals while it drains (a supervisor sending them again) do not kill it: it exits 0."""
    svc = service_factory(call_seconds=3.0, grace=3.0)
    svc.start()
    key = svc.create_key()
    five_live(svc, "in flight", 200)
    slow = socket.create_connection(("127.0.0.1", svc.port))
    slow.sendall(
        b"POST /batch/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\nx-api-key: " + key.encode() + b"\r\n\r\n{"
    )
    time.sleep(0.2)  # (the request's handler is reading its body)
    dialed_before = len(svc.ledger_entries())
    assert svc.proc is not None
    started = time.monotonic()
    for _ in range(5):
        svc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    assert svc.proc.wait(timeout=30) == 0
    took = time.monotonic() - started
    svc.proc = None
    slow.close()
    assert len(svc.ledger_entries()) == dialed_before
    assert took < 3.0 + 5 + 3  # the grace, the runner's wait for the request, some slack
    assert not svc.db_rows("SELECT id FROM attempts WHERE outcome IS NULL")
