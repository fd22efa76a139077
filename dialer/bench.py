"""`dialer bench`: measure the engine on the simulated provider with a file database.

Every figure is measured in the run. Scenarios (see README, Performance):
  engine  one big job of instant answered calls, limits high; plus the plain-sqlite3 ceiling
  pacing  concurrentCallLimit 50 with 0.2 s calls: makespan vs ceil(N/50) x 0.2 s
  api     32 concurrent HTTP clients on detail and list while the engine works
  ingest  POST /batch/create with a 10,000-row CSV, 5 times
  scale   100 jobs x 10,000 contacts running at once: throughput and peak RSS
  webhooks  a 10,000-contact job without a webhook endpoint, then with one that never answers
            (every request times out): instant calls (median of 5 pairs), then 0.1 s calls at
            concurrentCallLimit 50
  disk    the disk the database is on: a commit-sized write and its flush, for 10 s (a claim
          is flushed before its call starts, so the slowest flushes bound the slot refills)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialer import config as configmod
from dialer import intake, logs, watched, windows
from dialer.clock import SystemClock
from dialer.providers.simulated import SimulatedProvider
from dialer.scheduler import Engine
from dialer.service import CreateJob, JobService
from dialer.states import ACTIVE_JOB_STATUSES
from storage import db as dbmod
from storage.store import Store, flush_file

ORG = "org_bench"
NUMBER = "num_bench"


@dataclass(frozen=True)
class Sizes:
    engine_contacts: int = 20_000
    engine_runs: int = 3
    pacing_contacts: int = 5_000
    pacing_call_seconds: float = 0.2
    api_seconds: float = 10.0
    api_clients: int = 32
    ingest_rows: int = 10_000
    ingest_runs: int = 5
    scale_jobs: int = 100
    scale_contacts: int = 10_000
    watched_contacts: int = 10_000  # per job (the API's limit)
    watched_pacing_contacts: int = 2_000
    watched_seconds: float = 5.0
    heavy_jobs: int = 10
    webhooks_contacts: int = 10_000
    webhooks_call_seconds: float = 0.1
    webhooks_runs: int = 5
    disk_seconds: float = 10.0


QUICK = Sizes(
    engine_contacts=500,
    engine_runs=1,
    pacing_contacts=100,
    pacing_call_seconds=0.05,
    api_seconds=1.0,
    api_clients=4,
    ingest_rows=500,
    ingest_runs=2,
    scale_jobs=4,
    scale_contacts=200,
    watched_contacts=300,
    watched_pacing_contacts=100,
    watched_seconds=1.0,
    heavy_jobs=2,
    webhooks_contacts=500,
    webhooks_call_seconds=0.02,
    webhooks_runs=1,
    disk_seconds=0.3,
)


def bench_config(
    path: str, *, call_seconds: float = 0.0, max_calls: int = 1000
) -> configmod.Config:
    return configmod.parse(
        {
            # One key makes every request of the bench: no rate limit gets in the way.
            "server": {"requests_per_second": 1_000_000_000.0, "burst": 1_000_000_000},
            "storage": {"path": path},
            "engine": {"max_concurrent_calls": max_calls, "shutdown_grace_seconds": 5},
            "telephony": {
                "simulated": {
                    "call_seconds": call_seconds,
                    "ring_seconds": 0,
                    "default_outcome": "completed",
                }
            },
            "webhooks": {"allow_private_urls": True},  # the webhooks scenario's local receiver
            # The bench creates more jobs and contacts than the default quotas allow. Windows
            # open all day: the figures must not depend on the time of day the bench runs at.
            # The per-number cap stays on (each number is dialed once).
            "organizations": [
                {
                    "id": ORG,
                    "max_active_jobs": 100_000,
                    "max_stored_contacts": 1_000_000_000,
                    "calling_windows": windows.windows_json(windows.ALL_DAY),
                }
            ],
            "agents": [{"id": "agent_bench", "organization": ORG}],
            "phone_numbers": [
                {
                    "id": NUMBER,
                    "organization": ORG,
                    "number": "+12025550100",
                    "outbound_agent": "agent_bench",
                    "calls_per_second": 1_000_000,
                }
            ],
        }
    )


def numbers(n: int, offset: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """n distinct valid US numbers (+1 202 2xx xxxx ...)."""
    out = []
    for i in range(offset, offset + n):
        phone = f"+1202{2000000 + i:07d}"
        out.append((phone, {"phone": phone, "name": f"Contact {i}"}))
    return out


class Harness:
    """Store + simulated provider + engine + service, in this process."""

    def __init__(self, config: configmod.Config, *, autostart: bool = True) -> None:
        self.config = config
        self.clock = SystemClock()
        self.autostart = autostart
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        self.store = await Store.open(self.config.storage.path)
        self.provider = SimulatedProvider(self.config.telephony.simulated, self.clock)
        await self.provider.start()
        self.engine = Engine(self.config, self.store, self.provider, self.clock)
        self.service = JobService(self.config, self.store, self.engine, self.clock)
        if self.autostart:
            self.start()
        return self

    def start(self) -> None:
        self.task = asyncio.create_task(self.engine.run())

    async def __aexit__(self, *exc: object) -> None:
        self.engine.stop()
        if self.task is not None:
            await self.task
        await self.provider.close()
        await self.store.close()

    async def create(self, contacts: int, limit: int, offset: int = 0) -> str:
        parsed = intake.ParsedContacts(
            contacts=[(phone, intake.encode(data)) for phone, data in numbers(contacts, offset)]
        )
        created = await self.service.create(
            ORG,
            CreateJob(
                name="bench",
                description=None,
                from_phone_number_id=NUMBER,
                concurrent_call_limit=limit,
                max_attempts=1,
                scheduled_start_time=None,
                timezone="UTC",
            ),
            parsed,
        )
        return created.job.id

    async def wait_done(self, job_ids: list[str]) -> None:
        """Until every job is completed, failed or cancelled: one small query per 5 ms."""
        while await self.store.count_jobs_in_status(  # noqa: ASYNC110 - a fixed, cheap pace
            job_ids, ACTIVE_JOB_STATUSES
        ):
            await asyncio.sleep(0.005)


# ------------------------------------------------------------------ scenarios


async def scenario_engine(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """The median of `engine_runs` runs (each on a fresh database), against the median of as
    many runs of the storage ceiling: one run of a second or two is at the mercy of the disk."""
    n = sizes.engine_contacts
    rates: list[float] = []
    ceilings: list[float] = []
    for run in range(sizes.engine_runs):
        config = bench_config(str(tmp / f"engine{run}.db"))
        async with Harness(config) as h:
            started = time.perf_counter()
            job_id = await h.create(n, limit=1000)
            await h.wait_done([job_id])
            elapsed = time.perf_counter() - started
            counts = await h.store.status_counts(job_id)
        assert counts.get("completed") == n, counts
        rates.append(n / elapsed)
        ceilings.append(storage_ceiling(tmp / f"ceiling{run}.db", n))
    rate, ceiling = statistics.median(rates), statistics.median(ceilings)
    return {
        "scenario": "engine",
        "contacts": n,
        "runs": len(rates),
        "contacts_per_second": round(rate),
        "runs_per_second": [round(r) for r in rates],
        "sqlite_ceiling_per_second": round(ceiling),
        "ratio_to_ceiling": round(rate / ceiling, 3),
        "target": ">= 10000 contacts/s",
    }


# The storage ceiling's statements: the plain way to write the same transitions, one statement
# per row, as a single-threaded program that does nothing else can afford to.
_CEILING_CLAIM = """
UPDATE contacts
SET status = 'dialing', attempt_count = attempt_count + 1, last_attempt_at = :now,
    updated_at = :now
WHERE id IN (SELECT id FROM contacts WHERE job_id = :job_id AND status = 'pending'
             ORDER BY seq LIMIT :limit)
RETURNING id
"""
_CEILING_ATTEMPT = """
INSERT INTO attempts (contact_id, job_id, attempt_no, room_name, started_at)
VALUES (?, ?, ?, ?, ?)
"""
_CEILING_FINISH_ATTEMPT = """
UPDATE attempts SET outcome = 'completed', answered_at = :now, ended_at = :now, duration = 0
WHERE contact_id = :contact_id AND attempt_no = 1 AND outcome IS NULL
"""


def storage_ceiling(path: Path, n: int, batch: int = 50) -> float:
    """The same claim + finish transitions with plain sqlite3, in batches of 50."""
    conn = dbmod.connect(str(path))
    dbmod.migrate(conn)
    q = dbmod.queries()
    conn.execute(
        "INSERT INTO jobs (id, organization_id, name, status, agent_id, phone_number_id,"
        " concurrent_call_limit, max_attempts, retry_statuses, retry_delay_seconds,"
        " retry_backoff, created_at, updated_at, total_contacts)"
        " VALUES ('j', 'o', 'n', 'running', 'a', 'p', 50, 1, '[]', 0, 1, 0, 0, ?)",
        (n,),
    )
    conn.execute("BEGIN")
    conn.executemany(
        q["insert_contact"],
        [("j", i, phone, json.dumps(data), 1, 0.0) for i, (phone, data) in enumerate(numbers(n))],
    )
    conn.execute("COMMIT")
    started = time.perf_counter()
    done = 0
    while done < n:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(_CEILING_CLAIM, {"job_id": "j", "now": now, "limit": batch})
        ids = [r[0] for r in rows.fetchall()]
        conn.executemany(_CEILING_ATTEMPT, [(cid, "j", 1, f"room{cid}", now) for cid in ids])
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        for cid in ids:
            conn.execute(
                q["finish_contact"],
                {
                    "contact_id": cid,
                    "attempt_no": 1,
                    "status": "completed",
                    "next_retry_at": None,
                    "completed_at": now,
                    "error_code": None,
                    "failure_reason": None,
                    "duration": 0,
                    "next_call_at": None,
                    "call_until": None,
                    "started_at": now,
                    "now": now,
                },
            )
            conn.execute(_CEILING_FINISH_ATTEMPT, {"contact_id": cid, "now": now})
        conn.execute("COMMIT")
        done += len(ids)
        if not ids:
            break
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


async def scenario_pacing(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    n, limit, call = sizes.pacing_contacts, 50, sizes.pacing_call_seconds
    config = bench_config(str(tmp / "pacing.db"), call_seconds=call)
    async with Harness(config) as h:
        job_id = await h.create(n, limit=limit)
        started = time.perf_counter()
        await h.wait_done([job_id])
        makespan = time.perf_counter() - started
        max_live = h.engine.max_live_observed
    ideal = math.ceil(n / limit) * call
    return {
        "scenario": "pacing",
        "contacts": n,
        "concurrent_call_limit": limit,
        "call_seconds": call,
        "makespan_seconds": round(makespan, 3),
        "ideal_seconds": round(ideal, 3),
        "efficiency": round(ideal / makespan, 4),
        "max_concurrency": max_live,
        "target": "efficiency >= 0.97; max concurrency exactly 50",
    }


async def scenario_ingest(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    from aiohttp import ClientSession, FormData

    rows = "phone,name,account\n" + "".join(
        f"{phone},{data['name']},A{i}\n"
        for i, (phone, data) in enumerate(numbers(sizes.ingest_rows))
    )
    async with served(bench_config(str(tmp / "ingest.db"))) as (base, key, _):
        timings = []
        async with ClientSession() as session:
            for _ in range(sizes.ingest_runs):
                form = FormData()
                form.add_field("file", rows.encode(), filename="c.csv", content_type="text/csv")
                form.add_field("fromPhoneNumberId", NUMBER)
                form.add_field("name", "ingest")
                form.add_field("scheduledStartTime", "2100-01-01T00:00:00Z")
                started = time.perf_counter()
                async with session.post(
                    f"{base}/batch/create", data=form, headers={"x-api-key": key}
                ) as resp:
                    body = await resp.json()
                timings.append(time.perf_counter() - started)
                assert resp.status == 201, body
    return {
        "scenario": "ingest",
        "rows": sizes.ingest_rows,
        "runs": sizes.ingest_runs,
        "median_seconds": round(statistics.median(timings), 4),
        "max_seconds": round(max(timings), 4),
        "target": "median <= 0.5 s",
    }


async def scenario_api(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    config = bench_config(str(tmp / "api.db"))
    async with served(config) as (base, key, service):
        # Enough instant calls to keep the engine busy for the whole measurement.
        busy_contacts = max(sizes.engine_contacts, 20_000)
        jobs = []
        for i in range(12):
            jobs.append(await service.create_raw(busy_contacts // 2, offset=i * busy_contacts))
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            pending = pool.apply_async(
                _api_client, (base, key, jobs[0], sizes.api_clients, sizes.api_seconds)
            )
            result: dict[str, Any] = await asyncio.to_thread(pending.get)
        processed = 0
        for job_id in jobs:
            processed += (await service.harness.store.status_counts(job_id)).get("completed", 0)
    result.update(
        {
            "scenario": "api",
            "engine_contacts_done_meanwhile": processed,
            "target": "p99 <= 25 ms",
        }
    )
    return result


def _api_client(base: str, key: str, job_id: str, clients: int, seconds: float) -> dict[str, Any]:
    """Runs in a separate process: `clients` concurrent keep-alive connections alternating
    detail and list. A minimal HTTP/1.1 client on asyncio streams, so that the client's own
    CPU (the machine has few cores) takes as little as possible from the server measured."""
    host, port = base.removeprefix("http://").split(":")
    paths = [f"/batch/jobs/{job_id}?contactsPageSize=50", f"/batch/jobs?organizationId={ORG}"]
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {key}\r\n\r\n".encode()
        for path in paths
    ]

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def worker(i: int) -> None:
            nonlocal errors
            reader, writer = await asyncio.open_connection(host, int(port))
            n = i
            try:
                while time.perf_counter() < deadline:
                    n += 1
                    started = time.perf_counter()
                    writer.write(requests[n % 2])
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                    await reader.readexactly(length)
                    latencies.append(time.perf_counter() - started)
                    if status != 200:
                        errors += 1
            finally:
                writer.close()

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
        return {
            "clients": clients,
            "seconds": round(elapsed, 2),
            "requests": len(latencies),
            "errors": errors,
            "requests_per_second": round(len(latencies) / elapsed),
            "p50_ms": watched.percentile_ms(latencies, 0.5),
            "p99_ms": watched.percentile_ms(latencies, 0.99),
        }

    return asyncio.run(run())


def _scale_child(tmp: str, sizes: Sizes, queue: Any) -> None:
    from dialer.cli import GIL_SWITCH_SECONDS

    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    logs.configure("warning", json=True)
    queue.put(asyncio.run(_scale(Path(tmp), sizes)))


async def _scale(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    config = bench_config(str(tmp / "scale.db"))
    total = sizes.scale_jobs * sizes.scale_contacts
    async with Harness(config, autostart=False) as h:
        jobs = []
        for i in range(sizes.scale_jobs):
            jobs.append(
                await h.create(sizes.scale_contacts, limit=50, offset=i * sizes.scale_contacts)
            )
        started = time.perf_counter()
        h.start()
        await h.wait_done(jobs)
        elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "scenario": "scale",
        "jobs": sizes.scale_jobs,
        "contacts": total,
        "seconds": round(elapsed, 2),
        "contacts_per_second": round(total / elapsed),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "target": ">= 80% of engine throughput; peak RSS <= 300 MB",
    }


async def scenario_scale(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    # A child process, so that its peak RSS is the scenario's alone.
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_scale_child, args=(str(tmp), sizes, queue))
    proc.start()
    result: dict[str, Any] = await asyncio.to_thread(queue.get)
    proc.join()
    return result


async def scenario_webhooks(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """The same job without a webhook endpoint, then with one on 127.0.0.1 that never answers
    (every delivery times out), `webhooks_runs` times in turn: the medians' ratio is what a dead
    endpoint costs the engine (the outbox rows written with every outcome included)."""
    from aiohttp import web

    hang = asyncio.Event()
    requests = 0

    async def never_answer(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        await hang.wait()
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", never_answer)
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    n = sizes.webhooks_contacts
    result: dict[str, Any] = {"scenario": "webhooks", "contacts": n, "runs": sizes.webhooks_runs}
    try:
        # Instant calls at 1,000 at a time: the job is nothing but storage work, the outbox
        # rows included. Then a job as calls make it: concurrentCallLimit 50 (the most a job
        # may have), calls of `webhooks_call_seconds`, once each way.
        shapes = (
            ("instant", 0.0, 1000, sizes.webhooks_runs),
            ("paced", sizes.webhooks_call_seconds, 50, 1),
        )
        for label, call_seconds, limit, runs in shapes:
            seconds: dict[bool, list[float]] = {False: [], True: []}
            for run in range(runs):
                for with_endpoint in (False, True):
                    path = tmp / f"webhooks-{label}{run}{int(with_endpoint)}.db"
                    config = bench_config(str(path), call_seconds=call_seconds)
                    requests = 0
                    elapsed, deliveries = await _webhooks_run(
                        config, n, limit, url if with_endpoint else None
                    )
                    seconds[with_endpoint].append(elapsed)
            plain, dead = statistics.median(seconds[False]), statistics.median(seconds[True])
            result[f"{label}_seconds_without_endpoint"] = round(plain, 3)
            result[f"{label}_seconds_with_dead_endpoint"] = round(dead, 3)
            result[f"{label}_ratio"] = round(dead / plain, 3)
            # Requests the dead endpoint got while the (last) job ran: 4 in flight, then one
            # after each pause (5 s, doubling; see dialer.webhooks).
            result[f"{label}_requests_to_dead_endpoint"] = requests
        result["deliveries_written"] = deliveries
    finally:
        hang.set()
        await runner.cleanup()
    result["target"] = "instant_ratio and paced_ratio <= 1.10"
    return result


async def _webhooks_run(
    config: configmod.Config, n: int, limit: int, url: str | None
) -> tuple[float, int]:
    """One job with the webhook sender running (and an endpoint at `url`): its seconds and the
    deliveries written."""
    from dialer.webhooks import WebhookSender, new_endpoint_id, new_secret
    from storage.rows import WebhookEndpointRow

    async with Harness(config) as h:
        sender = WebhookSender(h.store, h.clock, config.webhooks, changes=h.engine.progress_event)
        sending = asyncio.create_task(sender.run())
        if url is not None:
            endpoint = WebhookEndpointRow(
                new_endpoint_id(), ORG, url, None, None, new_secret(), time.time()
            )
            await h.store.insert_webhook_endpoint(endpoint)
            sender.endpoints_changed()
        started = time.perf_counter()
        job_id = await h.create(n, limit=limit)
        await h.wait_done([job_id])
        elapsed = time.perf_counter() - started
        _, deliveries = await h.store.list_webhook_deliveries(ORG, None, None, 1, 0)
        sender.stop()
        await sending
    return elapsed, deliveries


# ------------------------------------------------------------------ serving


class _Served:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    async def create_raw(self, contacts: int, offset: int) -> str:
        return await self.harness.create(contacts, limit=1000, offset=offset)


class served:
    """The real app on 127.0.0.1 with an API key; yields (base_url, key, helper)."""

    def __init__(self, config: configmod.Config) -> None:
        self.config = config

    async def __aenter__(self) -> tuple[str, str, _Served]:
        from aiohttp import web

        from api import keys as appkeys
        from api.app import create_app
        from dialer import keys

        app = create_app(self.config)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        store = app[appkeys.STORE]
        _, key = await keys.create_key(store, SystemClock(), ORG)
        harness = Harness(self.config)
        harness.store = store
        harness.engine = app[appkeys.ENGINE]
        harness.service = app[appkeys.SERVICE]
        return f"http://127.0.0.1:{port}", key, _Served(harness)

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def scenario_disk(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """Flushes of the disk the database is on, timed: 14 pages written in place (about what a
    paced job's cycle adds to the write-ahead log) and flushed as the store does
    (storage.store.flush_file), over and over for `disk_seconds`. The engine waits for one
    such flush before it starts the calls a cycle claimed, so the slow ones are the slot
    refills' tail: a virtual disk that stalls a flush for 0.1-1 s now and then takes that
    from every paced job, whatever the code does."""
    page = os.urandom(4096 * 14)
    path = tmp / "disk-probe"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    took: list[float] = []
    started = time.perf_counter()
    try:
        end = started + sizes.disk_seconds
        while time.perf_counter() < end:
            os.pwrite(fd, page, (len(took) % 64) * len(page))
            began = time.perf_counter()
            flush_file(fd)
            took.append(time.perf_counter() - began)
    finally:
        os.close(fd)
        path.unlink()
    minutes = (time.perf_counter() - started) / 60
    return {
        "scenario": "disk",
        "flushes": len(took),
        "p50_ms": watched.percentile_ms(took, 0.5),
        "p99_ms": watched.percentile_ms(took, 0.99),
        "p999_ms": watched.percentile_ms(took, 0.999),
        "max_ms": round(max(took) * 1000, 2),
        "over_20ms_per_minute": round(sum(t > 0.02 for t in took) / minutes, 1),
        "over_100ms_per_minute": round(sum(t > 0.1 for t in took) / minutes, 1),
        "target": "none (a fact of the machine): flushes over 100 ms are slot refills lost",
    }


async def _disk(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    return await asyncio.to_thread(scenario_disk, tmp, sizes)


# ------------------------------------------------------------------ command

SCENARIOS: dict[str, Callable[[Path, Sizes], Awaitable[dict[str, Any]]]] = {
    "engine": scenario_engine,
    "pacing": scenario_pacing,
    "api": scenario_api,
    "ingest": scenario_ingest,
    "scale": scenario_scale,
    "watched": lambda tmp, sizes: watched.scenario_watched(tmp, sizes.watched_contacts),
    "watched_pacing": lambda tmp, sizes: watched.scenario_watched_pacing(
        tmp, sizes.watched_pacing_contacts, sizes.pacing_call_seconds, sizes.watched_seconds
    ),
    "heavy": lambda tmp, sizes: watched.scenario_heavy(
        tmp, sizes.watched_contacts, sizes.heavy_jobs, 2 * sizes.watched_seconds
    ),
    "webhooks": scenario_webhooks,
    "disk": _disk,
}


def cpu_probe(loops: int = 2_000_000) -> float:
    """Millions of plain Python loop steps per second on this machine now: the figures above
    move with it (a shared machine here ran from 6 to 15 on the same day), so a run can be
    compared with another at its own speed."""
    started = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i
    return round(loops / (time.perf_counter() - started) / 1e6, 2)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "platform": sys.platform,
        "python_mloops_per_second": cpu_probe(),
    }


def format_row(result: dict[str, Any]) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in result.items() if k not in ("scenario", "target"))
    return f"{result['scenario']:<8} {fields}\n{'':<8} target: {result['target']}"


async def run(names: list[str], sizes: Sizes, as_json: bool) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dialer-bench-") as tmp:
        for name in names:
            result = await SCENARIOS[name](Path(tmp), sizes)
            engine = next((r for r in results if r["scenario"] == "engine"), None)
            if name == "scale" and engine is not None:
                ratio = result["contacts_per_second"] / engine["contacts_per_second"]
                result["ratio_to_engine"] = round(ratio, 3)
            results.append(result)
            print(json.dumps(result) if as_json else format_row(result), flush=True)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only these (repeatable); default: all",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")


def main(args: argparse.Namespace) -> int:
    from dialer.cli import GIL_SWITCH_SECONDS

    sys.setswitchinterval(GIL_SWITCH_SECONDS)  # as `dialer serve` runs
    logs.configure("warning", json=True)
    names = args.scenario or list(SCENARIOS)
    sizes = QUICK if args.quick else Sizes()
    if not args.json:
        print(f"machine: {json.dumps(machine())}", flush=True)
    asyncio.run(run(names, sizes, args.json))
    if not args.json:  # the machine's speed may have moved during the run
        print(f"machine after: python_mloops_per_second={cpu_probe()}", flush=True)
    return 0
