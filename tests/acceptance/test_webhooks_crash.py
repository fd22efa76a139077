"""Outbound webhooks with the real process: kill -9 mid-job loses no event."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.acceptance.test_crash_and_shutdown import contacts, job_status

pytestmark = pytest.mark.slow


class Received:
    """What a receiver on 127.0.0.1 got: verified bodies by webhook-id."""

    def __init__(self) -> None:
        self.secret = ""
        self.lock = threading.Lock()
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.unverified = 0


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    """A threaded HTTP receiver that verifies every request with standardwebhooks."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
            try:
                body = Webhook(received.secret).verify(raw, dict(self.headers.items()))
            except Exception:
                with received.lock:
                    received.unverified += 1
                self.send_response(400)
                self.end_headers()
                return
            with received.lock:
                received.bodies.setdefault(self.headers["webhook-id"], []).append(body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_kill_9_mid_job_loses_no_webhook_event(
    service_factory: Any, receiver: tuple[str, Received]
) -> None:
    """Killed mid-job, every outcome committed has its event in the outbox already; after the
    restart the receiver gets every event of the job (verified), at least once, in sequence."""
    url, received = receiver
    svc = service_factory(call_seconds=0.4)
    svc.start()
    svc.create_key()
    status, endpoint = svc.request("POST", "/webhooks/endpoints", {"url": url})
    assert status == 201, endpoint
    received.secret = endpoint["secret"]
    status, created = svc.request(
        "POST",
        "/batch/create",
        {
            "fromPhoneNumberId": "phone_demo",
            "name": "webhooks crash",
            "contacts": contacts(120),
            "concurrentCallLimit": 20,
        },
    )
    assert status == 201, created
    job_id = created["batchJobId"]
    svc.wait(lambda: job_status(svc, job_id)["statusBreakdown"]["completed"] >= 30)
    svc.wait(lambda: job_status(svc, job_id)["statusBreakdown"]["dialing"] > 0)
    assert svc.kill(signal.SIGKILL) == -signal.SIGKILL
    audit_outbox(svc)  # what was committed when the process died has its events

    svc.start()
    svc.wait(lambda: job_status(svc, job_id)["status"] == "completed")
    svc.wait(
        lambda: not svc.db_rows("SELECT 1 FROM webhook_deliveries WHERE status <> 'delivered'")
    )
    events = audit_outbox(svc)
    assert received.unverified == 0
    with received.lock:
        got = {webhook_id: bodies for webhook_id, bodies in received.bodies.items()}
    assert set(got) == {e["webhook_id"] for e in events}
    for event in events:
        bodies = got[event["webhook_id"]]
        assert all(b == bodies[0] for b in bodies)  # a resend is the same event
        assert (bodies[0]["type"], bodies[0]["sequence"]) == (event["type"], event["sequence"])
    assert sorted(e["sequence"] for e in events) == list(range(1, len(events) + 1))
    finished_job = [b[0] for b in got.values() if b[0]["type"] == "job.completed"]
    assert len(finished_job) == 1 and finished_job[0]["data"]["id"] == job_id
    svc.kill(signal.SIGTERM)


def audit_outbox(svc: Any) -> list[Any]:
    """Every attempt with an outcome has its contact.attempt_finished event, every final contact
    its contact.finished, every job status its event: the outbox and the history agree."""
    events = svc.db_rows(
        "SELECT e.webhook_id, e.type, e.sequence, d.data FROM webhook_events AS e"
        " JOIN webhook_event_documents AS d ON d.id = e.id ORDER BY e.id"
    )
    attempts_reported = sorted(
        (d["id"], d["attempt"]["attemptNumber"], d["attempt"]["outcome"])
        for e in events
        if e["type"] == "contact.attempt_finished"
        for d in [json.loads(e["data"])]
    )
    attempts = sorted(
        (f"contact_{r['contact_id']}", r["attempt_no"], r["outcome"])
        for r in svc.db_rows(
            "SELECT contact_id, attempt_no, outcome FROM attempts"
            " WHERE outcome IS NOT NULL AND outcome <> 'not_placed'"
        )
    )
    assert attempts_reported == attempts
    finished = sorted(
        (d["id"], d["status"])
        for e in events
        if e["type"] == "contact.finished"
        for d in [json.loads(e["data"])]
    )
    final = sorted(
        (f"contact_{r['id']}", r["status"])
        for r in svc.db_rows(
            "SELECT id, status FROM contacts WHERE status NOT IN ('pending', 'queued', 'dialing')"
        )
    )
    assert finished == final
    job_events = [e["type"] for e in events if e["type"].startswith("job.")]
    assert job_events[0] == "job.started"
    assert len({e["webhook_id"] for e in events}) == len(events)
    return list(events)
