"""Run the real `dialer` command as a process, on 127.0.0.1, with its own config and database."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dialer import windows

BASE_CONFIG = """
[server]
host = "127.0.0.1"
port = {port}
requests_per_second = 100000
burst = 100000

[storage]
path = "{db}"
busy_timeout_seconds = {busy}

[engine]
max_concurrent_calls = 50
retry_delay_seconds = 0
shutdown_grace_seconds = {grace}

[telephony]
provider = "simulated"

[webhooks]
allow_private_urls = true

[telephony.simulated]
call_seconds = {call_seconds}
ring_seconds = 0
speed = 1.0
default_outcome = "completed"
dial_log = "{ledger}"
[[telephony.simulated.rules]]
prefix = "+1202555019"
outcome = "busy"

[[organizations]]
id = "org_demo"
{open_all_day}
[[agents]]
id = "agent_demo"
organization = "org_demo"

[[phone_numbers]]
id = "phone_demo"
organization = "org_demo"
number = "+12025550100"
outbound_agent = "agent_demo"
calls_per_second = 1000
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def dialer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dialer.cli", *args]


@dataclass
class Service:
    """One configured service: start/stop its process, call its API, read its database."""

    tmp: Path
    call_seconds: float = 0.5
    grace: float = 0.0
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    key: str = ""
    db_dir: Path | None = None  # where the database lives (default: tmp)
    busy_timeout: float = 5.0

    def __post_init__(self) -> None:
        self.db = (self.db_dir or self.tmp) / "dialer.db"
        self.ledger = self.tmp / "ledger.jsonl"
        self.config = self.tmp / "config.toml"
        self.log = self.tmp / "service.log"
        self.config.write_text(
            BASE_CONFIG.format(
                open_all_day=windows.ALL_DAY_UNCAPPED_TOML,
                port=self.port,
                db=self.db,
                ledger=self.ledger,
                grace=self.grace,
                call_seconds=self.call_seconds,
                busy=self.busy_timeout,
            )
        )

    def start(self, *, command: list[str] | None = None) -> None:
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                command or dialer_cmd("serve", "--config", str(self.config)),
                stdout=log,
                stderr=log,
                cwd=self.tmp,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url("/healthz"), timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers (503 says why: the tests read it)
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise AssertionError("service did not start")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def create_key(self) -> str:
        out = subprocess.run(
            dialer_cmd("keys", "create", "--org", "org_demo", "--config", str(self.config)),
            capture_output=True,
            text=True,
            check=True,
            cwd=self.tmp,
        )
        self.key = out.stdout.strip().splitlines()[-1]
        return self.key

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url(path),
            data=data,
            method=method,
            headers={"x-api-key": self.key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def request_multipart(self, path: str, fields: dict[str, str], csv: bytes) -> tuple[int, Any]:
        """POST a form with a CSV in its `file` part, as `curl -F file=@...` does."""
        boundary = "----dialer-test-boundary"
        head = '--{}\r\nContent-Disposition: form-data; name="{}"\r\n\r\n'
        parts = [(head.format(boundary, k) + f"{v}\r\n").encode() for k, v in fields.items()]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n".encode()
            + csv
            + f"\r\n--{boundary}--\r\n".encode()
        )
        req = urllib.request.Request(
            self.url(path),
            data=b"".join(parts),
            method="POST",
            headers={
                "x-api-key": self.key,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def db_rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def ledger_entries(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line]

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = self.request("GET", "/healthz")
        return status, body

    def audit(self) -> None:
        """From the dial ledger and the database: no attempt dialed twice, every dial recorded
        with an outcome, every contact final, counters that add up."""
        ledger = self.ledger_entries()
        dials = Counter((e["contact"], e["attempt"]) for e in ledger)
        twice = [k for k, n in dials.items() if n > 1]
        assert not twice, f"dialed twice: {twice[:10]}"
        attempts = {
            (r["contact_id"], r["attempt_no"]): r
            for r in self.db_rows("SELECT contact_id, attempt_no, outcome FROM attempts")
        }
        lost = [k for k in dials if k not in attempts or attempts[k]["outcome"] is None]
        assert not lost, f"dials without a recorded outcome: {lost[:10]}"
        open_rows = self.db_rows(
            "SELECT id, status FROM contacts WHERE status IN ('pending', 'queued', 'dialing')"
        )
        assert not open_rows, f"contacts not final: {[tuple(r) for r in open_rows[:10]]}"
        for job in self.db_rows("SELECT id, total_contacts FROM jobs"):
            counted = self.db_rows("SELECT count(*) FROM contacts WHERE job_id = ?", job["id"])
            assert counted[0][0] == job["total_contacts"]

    def wait(self, predicate: Any, timeout: float = 60.0) -> None:
        """Poll a condition on the running process's progress (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"condition not reached; log tail: {self.log.read_text()[-3000:]}")


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Service] = []

    def make(**kwargs: Any) -> Service:
        svc = Service(tmp_path, **kwargs)
        made.append(svc)
        return svc

    env_before = dict(os.environ)
    yield make
    for svc in made:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.proc.kill()
            svc.proc.wait(timeout=10)
    os.environ.clear()
    os.environ.update(env_before)
