"""`dialer bench` scenarios measured from outside, as a user sees them: the real `dialer serve`
process (its own config, database and logs, as the README starts it) driven over HTTP by
clients in this process, while they watch it.

  watched  two jobs of instant answered calls, each job's detail polled every 50 ms: contacts/s
           from the scheduled start to both completed
  watched_pacing  concurrentCallLimit 50 with 0.2 s calls while 16 keep-alive clients alternate
           detail and list and a sampler polls every 20 ms: efficiency, most live calls, API p99
  heavy    32 clients hammering the API while a job of instant calls runs: API p99 and the
           engine's contacts/s meanwhile
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dialer import windows

ORG = "org_watched"
NUMBER = "num_watched"

CONFIG = """
[server]
host = "127.0.0.1"
port = {port}
requests_per_second = 1000000
burst = 1000000
[storage]
path = "{db}"
[engine]
max_concurrent_calls = 1000
shutdown_grace_seconds = 2
[telephony]
provider = "simulated"
[telephony.simulated]
call_seconds = {call_seconds}
ring_seconds = 0
default_outcome = "completed"
[[organizations]]
id = "{org}"
max_active_jobs = 1000
{open_all_day}[[agents]]
id = "agent_watched"
organization = "{org}"
[[phone_numbers]]
id = "{number}"
organization = "{org}"
number = "+12025550100"
outbound_agent = "agent_watched"
calls_per_second = 1000000
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Client:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a minimal client, so that the
    client's own CPU takes as little as possible from the server measured."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self._streams
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {self.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        writer.write(head.encode() + data)
        answer = await reader.readuntil(b"\r\n\r\n")
        status = int(answer[9:12])
        length = 0
        for line in answer.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await reader.readexactly(length)
        if not payload:
            return status, None
        return status, json.loads(payload) if payload[:1] in (b"{", b"[") else payload.decode()

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class Served:
    """`dialer serve` in its own process, on its own database, logging as it does by default."""

    def __init__(self, tmp: Path, name: str, call_seconds: float) -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.config = self.dir / "config.toml"
        self.config.write_text(
            CONFIG.format(
                open_all_day=windows.ALL_DAY_UNCAPPED_TOML,
                port=self.port,
                db=self.dir / "dialer.db",
                call_seconds=call_seconds,
                org=ORG,
                number=NUMBER,
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.key = ""

    async def __aenter__(self) -> Served:
        # The key first: the service then starts on a database already made (a second
        # process opening it while the service starts would measure that race, not the engine).
        self.key = await asyncio.to_thread(self._create_key)
        self.proc = await asyncio.to_thread(self._spawn)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                client = self.client()
                status, _ = await client.request("GET", "/healthz")
                await client.close()
                if status == 200:
                    return self
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"dialer serve did not start (see {self.dir}/service.log)")
            await asyncio.sleep(0.05)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with (self.dir / "service.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "dialer.cli", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=log,
            )

    def _create_key(self) -> str:
        command = ["keys", "create", "--org", ORG, "--config", str(self.config)]
        out = subprocess.run(
            [sys.executable, "-m", "dialer.cli", *command],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            raise RuntimeError(f"dialer keys create exited {out.returncode}: {out.stderr.strip()}")
        return out.stdout.strip().splitlines()[-1]

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
                raise RuntimeError(
                    f"dialer serve did not exit within 30 s of SIGTERM (see {self.dir}/service.log)"
                ) from None

    def client(self) -> Client:
        return Client(self.port, self.key)

    async def create(self, client: Client, n: int, limit: int, offset: int, start: float) -> str:
        contacts = [{"phone": f"+1202{2000000 + i:07d}"} for i in range(offset, offset + n)]
        status, body = await client.request(
            "POST",
            "/batch/create",
            {
                "fromPhoneNumberId": NUMBER,
                "name": "watched",
                "contacts": contacts,
                "concurrentCallLimit": limit,
                "maxAttempts": 1,
                "scheduledStartTime": datetime.fromtimestamp(start, UTC).isoformat(),
            },
        )
        if status != 201:
            raise RuntimeError(f"create answered {status}: {body}")
        job_id: str = body["batchJobId"]
        return job_id


def percentile_ms(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 2)


async def _histograms(client: Client, *names: str) -> dict[str, list[tuple[float, float]]]:
    """The engine's own histograms on `/metrics`: name -> [(bucket bound, cumulative count)]."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = await client.request("GET", "/metrics")
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    if status != 200 or not isinstance(text, str):
        return found
    for family in text_string_to_metric_families(text):
        if family.name in found:
            found[family.name] = sorted(
                (float(s.labels["le"]), s.value)
                for s in family.samples
                if s.name.endswith("_bucket")
            )
    return found


def _p99_bound_ms(buckets: list[tuple[float, float]]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile (None before any)."""
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return round(next(le for le, count in buckets if count >= 0.99 * total) * 1000, 2)


def _over(buckets: list[tuple[float, float]], seconds: float) -> int:
    """How many observations were over `seconds` (a bucket bound)."""
    if not buckets:
        return 0
    within = next((count for le, count in buckets if le >= seconds), buckets[-1][1])
    return int(buckets[-1][1] - within)


async def _poll_until_done(client: Client, job_id: str, every: float) -> float:
    """Poll a job's detail every `every` seconds; the wall time at which it was completed."""
    while True:
        status, body = await client.request("GET", f"/batch/jobs/{job_id}?contactsPageSize=50")
        if status == 200 and body["status"] == "completed":
            return time.time()
        await asyncio.sleep(every)


async def scenario_watched(tmp: Path, contacts: int) -> dict[str, Any]:
    async with Served(tmp, "watched", call_seconds=0) as served:
        setup = served.client()
        start = math.ceil(time.time()) + 3.0
        jobs = [await served.create(setup, contacts, 50, i * contacts, start) for i in range(2)]
        pollers = [served.client() for _ in jobs]
        ends = await asyncio.gather(
            *(_poll_until_done(c, j, 0.05) for c, j in zip(pollers, jobs, strict=True))
        )
        for client in [setup, *pollers]:
            await client.close()
    elapsed = max(ends) - start
    return {
        "scenario": "watched",
        "contacts": 2 * contacts,
        "seconds": round(elapsed, 3),
        "contacts_per_second": round(2 * contacts / elapsed),
        "target": ">= 10000 contacts/s while both details are polled every 50 ms",
    }


async def _hammer(
    served: Served, job_id: str, clients: int, until: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    paths = [f"/batch/jobs/{job_id}?contactsPageSize=50", f"/batch/jobs?organizationId={ORG}"]

    async def worker(i: int) -> None:
        nonlocal errors
        client = served.client()
        n = i
        try:
            while time.time() < until:
                n += 1
                began = time.perf_counter()
                status, _ = await client.request("GET", paths[n % 2])
                latencies.append(time.perf_counter() - began)
                errors += status != 200
        finally:
            await client.close()

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return latencies, errors


async def scenario_watched_pacing(
    tmp: Path, contacts: int, call_seconds: float, seconds: float
) -> dict[str, Any]:
    async with Served(tmp, "pacing", call_seconds=call_seconds) as served:
        setup = served.client()
        start = math.ceil(time.time()) + 2.0
        job_id = await served.create(setup, contacts, 50, 0, start)
        sampler = served.client()
        most_live = 0
        finished = 0.0

        async def sample() -> None:
            nonlocal most_live, finished
            while True:
                status, body = await sampler.request(
                    "GET", f"/batch/jobs/{job_id}?contactsPageSize=1"
                )
                if status == 200:
                    most_live = max(most_live, body["statusBreakdown"]["dialing"])
                    if body["status"] == "completed":
                        finished = time.time()
                        return
                await asyncio.sleep(0.02)

        await asyncio.sleep(max(0.0, start - time.time()))
        hammer = asyncio.create_task(_hammer(served, job_id, 16, time.time() + seconds))
        await sample()
        latencies, errors = await hammer
        # The engine's own view: slot refills (call ended -> next call started in its slot),
        # and its writes, whose flush a refill waits for (see `dialer bench --scenario disk`).
        seen = await _histograms(
            sampler, "dialer_slot_refill_seconds", "dialer_storage_write_seconds"
        )
        await setup.close()
        await sampler.close()
    ideal = math.ceil(contacts / 50) * call_seconds
    makespan = finished - start
    return {
        "scenario": "watched_pacing",
        "contacts": contacts,
        "makespan_seconds": round(makespan, 3),
        "ideal_seconds": round(ideal, 3),
        "efficiency": round(ideal / makespan, 3),
        "max_live_calls": most_live,
        "api_requests": len(latencies),
        "api_errors": errors,
        "api_p50_ms": percentile_ms(latencies, 0.5),
        "api_p99_ms": percentile_ms(latencies, 0.99),
        "slot_refill_p99_ms": _p99_bound_ms(seen["dialer_slot_refill_seconds"]),
        "storage_writes_over_50ms": _over(seen["dialer_storage_write_seconds"], 0.05),
        "target": "efficiency >= 0.97, max live 50, API p99 <= 25 ms, no errors, "
        "slot refill p99 <= 5 ms",
    }


async def scenario_heavy(tmp: Path, contacts: int, jobs_n: int, seconds: float) -> dict[str, Any]:
    async with Served(tmp, "heavy", call_seconds=0) as served:
        setup = served.client()
        start = math.ceil(time.time()) + 3.0 + 1.5 * jobs_n  # after every create
        jobs = [
            await served.create(setup, contacts, 50, i * contacts, start) for i in range(jobs_n)
        ]
        await asyncio.sleep(max(0.0, start - time.time()))
        latencies, errors = await _hammer(served, jobs[0], 32, time.time() + seconds)
        elapsed = time.time() - start
        await setup.close()  # idle through the hammering: the server may have closed it
        reader = served.client()
        done = 0
        for job_id in jobs:
            _, body = await reader.request("GET", f"/batch/jobs/{job_id}?contactsPageSize=1")
            done += body["statusBreakdown"]["completed"]
        await reader.close()
    return {
        "scenario": "heavy",
        "clients": 32,
        "seconds": round(elapsed, 2),
        "api_requests": len(latencies),
        "api_errors": errors,
        "api_p50_ms": percentile_ms(latencies, 0.5),
        "api_p99_ms": percentile_ms(latencies, 0.99),
        "engine_contacts_per_second": round(done / elapsed),
        "target": "API p99 <= 25 ms, engine >= 3000 contacts/s",
    }
