"""`dialer chaos`: run a job on the real service, `kill -9` it at random moments, inject storage
faults, then audit the simulated provider's dial ledger against the database.

The service runs as `python -m dialer.cli serve` in a child process with a config of its own
(simulated provider, a dial ledger, a mix of outcomes with immediate retries) in a work
directory. Events (kills, lock episodes, disk-full episodes) are placed at seeded random points
of the job's progress, so that every one of them happens while the job runs however fast the
machine is. After the last event the job runs to its end, the service is stopped with SIGTERM and
`audit` compares what was dialed with what was recorded:

  dials             ledger lines of the job (one per call the provider placed)
  double dials      dials beyond one per attempt: a (contact, attempt) dialed more than once, or
                    more dials for a contact than attempt rows that were placed
  lost outcomes     a dialed attempt whose row is missing, has no outcome or end time, or says
                    `not_placed`
  unexplained interrupted
                    an attempt recorded `interrupted` although no kill happened while it could
                    have been live or its outcome unwritten (its real outcome was dropped)
  stuck contacts    contacts not in a final status at the end
  attempts with no dial
                    attempt rows counted for a call the provider never placed (contacts
                    claimed, not yet dialed at a kill: the dial log gives them back; reported,
                    not a failure: after a reboot the log is not trusted and they are counted)
  counter errors    status counts that do not add up (API breakdown, the per-job counters, the
                    contacts' attempt counts against their attempt rows)

The exit status is 1 when any of them is found (or a fault episode did not recover), else 0.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dialer import windows

ORG = "org_chaos"
NUMBER = "num_chaos"
OPEN_STATUSES = ("pending", "queued", "dialing")
INTERRUPTED = "interrupted"
# An attempt recorded `interrupted` is explained by a kill that came at most this long after its
# longest possible call would have ended (the engine's write of an ended call's outcome can lag).
INTERRUPT_SLACK_SECONDS = 5.0
# A fault episode that has not turned /healthz healthy again this long after it ended did not
# recover (the issue asks for 10 s).
RECOVERY_TIMEOUT_SECONDS = 20.0
# A job whose count of finished contacts has not moved this long is stalled: the next event comes
# without waiting for its point of progress, and the run stops waiting for the job to finish.
STALL_SECONDS = 60.0
# Past this share of its contacts done, an event no longer waits for the service to settle.
NEAR_END = 0.9
TMPFS_SIZE = "64m"


# ====================================================================== audit


@dataclass
class Audit:
    """What the ledger and the database say about one job after a chaos run."""

    contacts: int = 0
    dials: int = 0
    attempts_placed: int = 0
    double_dials: int = 0
    double_dialed_contacts: list[int] = field(default_factory=list)
    lost: int = 0
    lost_attempts: list[tuple[int, int]] = field(default_factory=list)
    interrupted: int = 0
    unexplained_interrupted: int = 0
    unexplained_attempts: list[tuple[int, int]] = field(default_factory=list)
    stuck: int = 0
    stuck_contacts: list[int] = field(default_factory=list)
    undialed_attempts: int = 0
    unknown_dials: int = 0
    counter_errors: list[str] = field(default_factory=list)
    job_status: str | None = None

    @property
    def ok(self) -> bool:
        return not (
            self.double_dials
            or self.lost
            or self.unexplained_interrupted
            or self.stuck
            or self.unknown_dials
            or self.counter_errors
        )


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """The dial ledger's entries (a torn last line, written as the process was killed, is
    skipped: the provider writes a line whole before the call starts)."""
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def _explained(
    started_at: float,
    kills: Sequence[float],
    longest_call: float,
    faults: Sequence[tuple[float, float]],
) -> bool:
    """A kill came while the attempt's outcome could still be unwritten: from its start to the
    end of its longest call plus slack, stretched by any fault episode the service recovered from
    in that window (outcomes are held in memory while storage fails, then written)."""
    latest = started_at + longest_call + INTERRUPT_SLACK_SECONDS
    for begin, end in sorted(faults):
        if begin <= latest:
            latest = max(latest, end + INTERRUPT_SLACK_SECONDS)
    return any(started_at <= k <= latest for k in kills)


def audit(
    ledger: Iterable[dict[str, Any]],
    db_path: Path,
    job_id: str,
    *,
    kills: Sequence[float] | None = None,
    faults: Sequence[tuple[float, float]] = (),
    longest_call: float | None = None,
    breakdown: dict[str, int] | None = None,
    total_contacts: int | None = None,
) -> Audit:
    """Audit one job. `ledger`: the dial ledger's entries (other jobs' lines are ignored).
    `kills` (unix times) and `longest_call` (seconds) turn on the check of interrupted attempts;
    `faults` are the (start, healthy again) unix times of the fault episodes that recovered;
    `breakdown` and `total_contacts` are the API's final statusBreakdown and totalContacts."""
    result = Audit()
    if not db_path.is_file():
        raise FileNotFoundError(f"no database at {db_path}")
    # A plain connection (a read-only one cannot open a WAL database whose -shm is gone), kept
    # from writing by query_only.
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA query_only = ON")
        contacts = {
            cid: (status, attempt_count)
            for cid, status, attempt_count in conn.execute(
                "SELECT id, status, attempt_count FROM contacts WHERE job_id = ?", (job_id,)
            )
        }
        attempts = conn.execute(
            "SELECT contact_id, attempt_no, outcome, ended_at, reason, started_at"
            " FROM attempts WHERE job_id = ?",
            (job_id,),
        ).fetchall()
        job = conn.execute(
            "SELECT status, total_contacts FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        kept_counts = {
            status: n
            for status, n in conn.execute(
                "SELECT status, n FROM job_status_counts WHERE job_id = ?", (job_id,)
            )
        }
    finally:
        conn.close()

    result.contacts = len(contacts)
    if job is None:
        result.counter_errors.append(f"job {job_id} is not in the database")
    else:
        result.job_status = job[0]

    # Attempt rows that stand for a placed (or possibly placed) call: all but given-back claims.
    placed: dict[tuple[int, int], list[tuple[Any, ...]]] = defaultdict(list)
    for row in attempts:
        if row[2] != "not_placed":
            placed[(row[0], row[1])].append(row)
    placed_per_contact: Counter[int] = Counter()
    for (cid, _), rows in placed.items():
        placed_per_contact[cid] += len(rows)
    result.attempts_placed = sum(placed_per_contact.values())

    dials: Counter[tuple[int, int]] = Counter()
    for entry in ledger:
        if entry.get("job") != job_id:
            continue
        key = (int(entry["contact"]), int(entry["attempt"]))
        if key[0] not in contacts:
            result.unknown_dials += 1
            continue
        dials[key] += 1
    result.dials = sum(dials.values()) + result.unknown_dials

    # Double dials: per contact, every dial beyond one per distinct attempt that has a row.
    per_contact: Counter[int] = Counter()
    distinct: Counter[int] = Counter()
    for (cid, _), n in dials.items():
        per_contact[cid] += n
        distinct[cid] += 1
    for cid, n in sorted(per_contact.items()):
        extra = n - min(distinct[cid], placed_per_contact[cid])
        if extra > 0:
            result.double_dials += extra
            result.double_dialed_contacts.append(cid)

    result.undialed_attempts = sum(1 for key in placed if key not in dials)

    # Lost: a dialed attempt without exactly one placed row that has an outcome and an end time.
    for key in sorted(dials):
        rows = placed.get(key, [])
        if not any(r[2] is not None and r[3] is not None for r in rows):
            result.lost += 1
            result.lost_attempts.append(key)

    # Interrupted attempts must have been live at a kill.
    for cid, attempt_no, _, _, reason, started_at in attempts:
        if reason != INTERRUPTED:
            continue
        result.interrupted += 1
        if kills is None or longest_call is None:
            continue
        if not _explained(started_at, kills, longest_call, faults):
            result.unexplained_interrupted += 1
            result.unexplained_attempts.append((cid, attempt_no))
    result.unexplained_attempts.sort()

    for cid, (status, _) in sorted(contacts.items()):
        if status in OPEN_STATUSES:
            result.stuck += 1
            result.stuck_contacts.append(cid)

    # Counters.
    actual = Counter(status for status, _ in contacts.values())
    kept = {s: n for s, n in kept_counts.items() if n}
    if kept != dict(actual):
        result.counter_errors.append(f"per-job status counts {kept} != contacts {dict(actual)}")
    if job is not None and job[1] != len(contacts):
        result.counter_errors.append(f"total_contacts {job[1]} != {len(contacts)} contacts")
    if breakdown is not None:
        shown = {s: n for s, n in breakdown.items() if n}
        if total_contacts is not None and sum(shown.values()) != total_contacts:
            result.counter_errors.append(
                f"statusBreakdown adds up to {sum(shown.values())}, not totalContacts "
                f"{total_contacts}"
            )
        if shown != dict(actual):
            result.counter_errors.append(f"statusBreakdown {shown} != contacts {dict(actual)}")
    if total_contacts is not None and total_contacts != len(contacts):
        result.counter_errors.append(f"totalContacts {total_contacts} != {len(contacts)} contacts")
    wrong_counts = [cid for cid, (_, n) in contacts.items() if n != placed_per_contact[cid]]
    if wrong_counts:
        result.counter_errors.append(
            f"{len(wrong_counts)} contact(s) whose attempt count differs from their placed "
            f"attempt rows (e.g. contact {min(wrong_counts)})"
        )
    duplicated = sorted(key for key, rows in placed.items() if len(rows) > 1)
    if duplicated:
        result.counter_errors.append(
            f"{len(duplicated)} attempt(s) with more than one placed row (e.g. {duplicated[0]})"
        )
    return result


# ====================================================================== the run


@dataclass(frozen=True)
class Plan:
    contacts: int
    kills: int
    lock_episodes: int
    disk_full_episodes: int
    seed: int
    call_seconds: float
    ring_seconds: float
    concurrency: int
    lock_seconds: tuple[float, float]
    disk_full_seconds: tuple[float, float]
    timeout: float

    @property
    def longest_call(self) -> float:
        return self.ring_seconds + self.call_seconds


FULL = Plan(
    contacts=2000,
    kills=20,
    lock_episodes=5,
    disk_full_episodes=0,
    seed=1,
    call_seconds=0.5,
    ring_seconds=0.1,
    concurrency=20,
    lock_seconds=(6.0, 9.0),
    disk_full_seconds=(3.0, 6.0),
    timeout=1800.0,
)
QUICK = Plan(
    contacts=150,
    kills=3,
    lock_episodes=0,
    disk_full_episodes=0,
    seed=1,
    call_seconds=0.3,
    ring_seconds=0.05,
    concurrency=10,
    lock_seconds=(6.0, 6.5),
    disk_full_seconds=(2.0, 3.0),
    timeout=45.0,
)


@dataclass
class Episode:
    kind: str  # "lock" or "disk_full"
    started_at: float
    held_seconds: float = 0.0
    # /healthz was seen unhealthy (non-200, or ok false, or the engine not running) meanwhile.
    unhealthy_seen: bool = False
    # Seconds from the end of the fault to the first healthy /healthz; None: never.
    recovered_after: float | None = None
    note: str | None = None


class ChaosError(Exception):
    """The run could not be carried out (as opposed to an audit that found problems)."""


CONFIG = """\
[server]
host = "127.0.0.1"
port = {port}

[storage]
path = {db}

[engine]
max_concurrent_calls = 100
retry_delay_seconds = 0
shutdown_grace_seconds = 2
auto_pause_min_attempts = 0

[telephony]
provider = "simulated"

[telephony.simulated]
call_seconds = {call_seconds}
ring_seconds = {ring_seconds}
speed = 1.0
seed = {seed}
dial_log = {ledger}

[telephony.simulated.mix]
completed = 0.6
busy = 0.2
no_answer = 0.2

[[organizations]]
id = "{org}"
{open_all_day}
[[agents]]
id = "agent_chaos"
organization = "{org}"

[[phone_numbers]]
id = "{number}"
organization = "{org}"
number = "+12025550100"
outbound_agent = "agent_chaos"
calls_per_second = 1000
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def healthy(status: int, body: Any) -> bool:
    """/healthz says the service works: 200 with `ok` true (and, in the older shape, the engine
    running)."""
    if status != 200 or not isinstance(body, dict) or body.get("ok") is not True:
        return False
    return body.get("engineRunning", True) is not False


class Service:
    """The real `dialer serve` as a child process, with an HTTP client for its API."""

    def __init__(self, workdir: Path, config: Path, port: int) -> None:
        self.workdir = workdir
        self.config = config
        self.port = port
        self.log = workdir / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.key = ""
        self.started_at = 0.0
        self.unexpected_exits: list[int] = []

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "dialer.cli", *args]

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it answers HTTP (any status)."""
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.command("serve", "--config", str(self.config), "--log-level", "warning"),
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        self.started_at = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ChaosError(f"the service exited at start-up: {self.log_tail()}")
            status, _ = self.get("/healthz", timeout=1.0)
            if status:
                return
            time.sleep(0.05)
        raise ChaosError(f"the service did not answer within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:  # it had already exited by itself
            self.unexpected_exits.append(self.proc.returncode)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def terminate(self, timeout: float) -> int:
        """SIGTERM, wait; kill -9 if it has not exited in time. Its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def revive_if_dead(self) -> None:
        """A supervisor's job: a service that exited by itself is started again (and noted)."""
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected_exits.append(self.proc.returncode)
            self.proc = None
            self.start()

    def create_key(self) -> None:
        out = subprocess.run(
            self.command("keys", "create", "--org", ORG, "--config", str(self.config)),
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise ChaosError(f"dialer keys create failed: {out.stderr.strip()}")
        self.key = out.stdout.strip().splitlines()[-1]

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """(status, JSON body); (0, None) when the service cannot be reached."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"x-api-key": self.key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, OSError):
            return 0, None

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        return self.request("GET", path, timeout=timeout)

    def health(self) -> bool:
        status, body = self.get("/healthz", timeout=2.0)
        return healthy(status, body)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


@dataclass
class Progress:
    status: str
    total: int
    done: int
    breakdown: dict[str, int]


def job_progress(service: Service, job_id: str) -> Progress | None:
    status, body = service.get(f"/batch/jobs/{job_id}?contactsPageSize=1", timeout=5.0)
    if status != 200 or not isinstance(body, dict):
        return None
    breakdown = {k: int(v) for k, v in (body.get("statusBreakdown") or {}).items()}
    total = int(body.get("totalContacts", 0))
    left = sum(breakdown.get(s, 0) for s in OPEN_STATUSES)
    return Progress(str(body.get("status")), total, total - left, breakdown)


TERMINAL = ("completed", "failed", "cancelled")


@contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[str | None]:
    """Mount a size-limited tmpfs on `directory`; yields None when mounted, else why not."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        problem = None if out.returncode == 0 else (out.stderr.strip() or f"exit {out.returncode}")
    except (OSError, subprocess.SubprocessError) as exc:
        problem = str(exc)
    try:
        yield problem
    finally:
        if problem is None:
            subprocess.run(["umount", str(directory)], capture_output=True, timeout=30, check=False)


def fill_disk(path: Path) -> int:
    """Write `path` until its filesystem is full (unbuffered: nothing is left to flush on
    close); the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 512):
            block = b"\0" * size
            while True:
                try:
                    n = os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                written += n
                if n < size:
                    break
    finally:
        os.close(fd)
    return written


class Runner:
    """One chaos run: the plan's events at random points of the job, then the audit."""

    def __init__(
        self,
        plan: Plan,
        workdir: Path,
        say: Callable[[str], None] = lambda _: None,
        *,
        keep: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.plan = plan
        # Monotonic time and sleep for the waits (tests pass fakes).
        self.clock = clock
        self.sleep = sleep
        self.workdir = workdir
        self.keep = keep
        self.say = say
        self.rng = random.Random(plan.seed)
        self.data = workdir / "data"
        self.db = self.data / "dialer.db"
        self.ledger = workdir / "ledger.jsonl"
        self.config = workdir / "config.toml"
        self.kills: list[float] = []
        self.episodes: list[Episode] = []
        self.skipped: list[str] = []
        self.notes: list[str] = []
        self.job_id = ""
        self.stalled = False
        self.last_done = -1
        self.last_change = self.clock()

    def write_config(self, port: int) -> None:
        self.config.write_text(
            CONFIG.format(
                open_all_day=windows.ALL_DAY_UNCAPPED_TOML,
                port=port,
                db=json.dumps(str(self.db)),
                ledger=json.dumps(str(self.ledger)),
                call_seconds=self.plan.call_seconds,
                ring_seconds=self.plan.ring_seconds,
                seed=self.plan.seed,
                org=ORG,
                number=NUMBER,
            ),
            encoding="utf-8",
        )

    def run(self) -> dict[str, Any]:
        started = self.clock()
        plan = self.plan
        self.data.mkdir(parents=True, exist_ok=True)
        disk_full = plan.disk_full_episodes
        mounted = tmpfs(self.data, TMPFS_SIZE) if disk_full else _nothing()
        with mounted as problem:
            if disk_full and problem is not None:
                self.notes.append(f"disk-full episodes skipped: cannot mount ({problem})")
                disk_full = 0
            port = free_port()
            self.write_config(port)
            service = Service(self.workdir, self.config, port)
            try:
                result = self._run(service, disk_full)
            finally:
                if service.alive():
                    service.kill9()
                if disk_full and self.keep:
                    self._copy_database()
        result["wall_seconds"] = round(self.clock() - started, 1)
        return result

    def _copy_database(self) -> None:
        """The database lives on the tmpfs, which is unmounted at the end: keep a copy."""
        target = self.workdir / "database-copy"
        target.mkdir(exist_ok=True)
        for path in self.data.glob("dialer.db*"):
            shutil.copy2(path, target / path.name)

    def _run(self, service: Service, disk_full: int) -> dict[str, Any]:
        plan = self.plan
        deadline = self.clock() + plan.timeout
        service.start()
        service.create_key()
        contacts = [
            {"phone": f"+1202{2000000 + i:07d}", "name": f"Contact {i}"}
            for i in range(plan.contacts)
        ]
        status, body = service.request(
            "POST",
            "/batch/create",
            {
                "fromPhoneNumberId": NUMBER,
                "name": "chaos",
                "contacts": contacts,
                "concurrentCallLimit": plan.concurrency,
                "maxAttempts": 3,
            },
            timeout=60.0,
        )
        if status != 201 or not isinstance(body, dict):
            raise ChaosError(f"creating the job answered {status}: {body}")
        self.job_id = str(body["batchJobId"])
        self.say(f"job {self.job_id}: {plan.contacts} contacts")

        kinds = ["kill"] * plan.kills + ["lock"] * plan.lock_episodes + ["disk_full"] * disk_full
        self.rng.shuffle(kinds)
        points = sorted(self.rng.uniform(0.03, 0.9) for _ in kinds)
        for kind, point in zip(kinds, points, strict=True):
            settle = self.rng.uniform(0.2, 1.5)
            at = self._wait_for(service, point, settle, deadline)
            if at is None:
                self.skipped.append(kind)
                continue
            if kind == "kill":
                self.kills.append(time.time())
                service.kill9()
                service.start()
                self.stalled = False
                self.last_change = self.clock()
                self.say(f"kill -9 #{len(self.kills)} with {at.done}/{at.total} contacts done")
            else:
                episode = self._episode(service, kind)
                self.episodes.append(episode)
                self.stalled = episode.note is None and episode.recovered_after is None
        final = self._wait_until_done(service, deadline)
        breakdown = final.breakdown if final is not None else None
        total = final.total if final is not None else None
        code = service.terminate(timeout=30.0)
        if code != 0:
            self.notes.append(f"the service exited {code} on SIGTERM")
        if service.unexpected_exits:
            self.notes.append(
                f"the service exited by itself {len(service.unexpected_exits)} time(s) "
                f"(statuses {service.unexpected_exits}); restarted"
            )
        if self.skipped:
            self.notes.append(
                f"{len(self.skipped)} event(s) skipped: the job ended or the time ran out first"
            )
        try:
            result = audit(
                read_ledger(self.ledger),
                self.db,
                self.job_id,
                kills=self.kills,
                faults=[
                    (e.started_at, e.started_at + e.held_seconds + e.recovered_after)
                    for e in self.episodes
                    if e.note is None and e.recovered_after is not None
                ],
                longest_call=plan.longest_call,
                breakdown=breakdown,
                total_contacts=total,
            )
        except (OSError, sqlite3.Error) as exc:
            raise ChaosError(f"cannot audit the database: {exc}") from None
        return self._report(result)

    def _wait_for(
        self, service: Service, point: float, settle: float, deadline: float
    ) -> Progress | None:
        """Until the job has done `point` of its contacts and the service has run `settle`
        seconds (or less, once the job is near its end: an event waiting for the service to
        settle must not miss the job), the job's progress then; None if the job ended (or the
        time ran out) first."""
        while self.clock() < deadline:
            progress = self._poll(service)
            if progress is not None:
                if progress.status in TERMINAL:
                    return None
                # After a fault the service did not recover from, the job makes no progress:
                # the next event comes anyway (as an operator would restart it).
                stalled = self.stalled or self.clock() - self.last_change > STALL_SECONDS
                reached = progress.done >= point * progress.total or stalled
                ending = progress.done >= NEAR_END * progress.total
                if reached and (ending or self.clock() - service.started_at >= settle):
                    return progress
            self.sleep(0.05)
        return None

    def _wait_until_done(self, service: Service, deadline: float) -> Progress | None:
        last: Progress | None = None
        while self.clock() < deadline:
            progress = self._poll(service)
            if progress is not None:
                last = progress
                if progress.status in TERMINAL:
                    return progress
            if self.clock() - self.last_change > STALL_SECONDS:
                self.notes.append(f"the job made no progress for {STALL_SECONDS:.0f} s")
                return last
            self.sleep(0.1)
        self.notes.append(f"the job did not finish within {self.plan.timeout:.0f} s")
        return last

    def _poll(self, service: Service) -> Progress | None:
        """The job's progress (None while the service does not answer); notes when the count
        of finished contacts last moved. A service that exited by itself is started again."""
        service.revive_if_dead()
        progress = job_progress(service, self.job_id)
        if progress is not None and progress.done != self.last_done:
            self.last_done, self.last_change = progress.done, self.clock()
        return progress

    def _episode(self, service: Service, kind: str) -> Episode:
        low, high = self.plan.lock_seconds if kind == "lock" else self.plan.disk_full_seconds
        hold = self.rng.uniform(low, high)
        episode = Episode(kind=kind, started_at=time.time())
        begun = self.clock()
        with self._fault(kind, episode):
            if episode.note is None:
                while self.clock() - begun < hold:
                    if not service.health():
                        episode.unhealthy_seen = True
                    self.sleep(0.2)
        episode.held_seconds = round(self.clock() - begun, 2)
        if episode.note is not None:
            self.say(f"{kind} episode not injected: {episode.note}")
            return episode
        ended = self.clock()
        while self.clock() - ended < RECOVERY_TIMEOUT_SECONDS:
            if service.health():
                episode.recovered_after = round(self.clock() - ended, 2)
                break
            episode.unhealthy_seen = True
            self.sleep(0.1)
        recovered = (
            f"healthy {episode.recovered_after} s after"
            if episode.recovered_after is not None
            else f"NOT healthy {RECOVERY_TIMEOUT_SECONDS:.0f} s after"
        )
        self.say(
            f"{kind} episode of {episode.held_seconds} s "
            f"(unhealthy meanwhile: {'yes' if episode.unhealthy_seen else 'no'}; {recovered})"
        )
        return episode

    @contextmanager
    def _fault(self, kind: str, episode: Episode) -> Iterator[None]:
        if kind == "lock":
            # Another process holds the write lock: the service's writes wait out their busy
            # timeout and fail. Reads go on (WAL).
            conn = sqlite3.connect(self.db, timeout=10.0, isolation_level=None)
            try:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    episode.note = f"could not take the lock: {exc}"
                yield
                if episode.note is None:
                    conn.execute("ROLLBACK")
            finally:
                conn.close()
        else:
            filler = self.data / "filler"
            try:
                fill_disk(filler)
                yield
            finally:
                filler.unlink(missing_ok=True)

    def _report(self, result: Audit) -> dict[str, Any]:
        locks = [e for e in self.episodes if e.kind == "lock" and e.note is None]
        disks = [e for e in self.episodes if e.kind == "disk_full" and e.note is None]
        unrecovered = [e for e in locks + disks if e.recovered_after is None]
        recoveries = [e.recovered_after for e in locks + disks if e.recovered_after is not None]
        report: dict[str, Any] = {
            "ok": result.ok and not unrecovered,
            "job_id": self.job_id,
            "job_status": result.job_status,
            "contacts": result.contacts,
            "seed": self.plan.seed,
            "plan": asdict(self.plan),
            "kills": len(self.kills),
            "lock_episodes": len(locks),
            "disk_full_episodes": len(disks),
            "episodes_unhealthy_seen": sum(e.unhealthy_seen for e in locks + disks),
            "episodes_unrecovered": len(unrecovered),
            "max_recovery_seconds": max(recoveries) if recoveries else None,
            "dials": result.dials,
            "attempts_placed": result.attempts_placed,
            "double_dials": result.double_dials,
            "lost": result.lost,
            "interrupted": result.interrupted,
            "unexplained_interrupted": result.unexplained_interrupted,
            "stuck": result.stuck,
            "undialed_attempts": result.undialed_attempts,
            "unknown_dials": result.unknown_dials,
            "counter_errors": result.counter_errors,
            "notes": self.notes,
            "episodes": [asdict(e) for e in self.episodes],
        }
        if result.double_dialed_contacts:
            report["double_dialed_contacts"] = result.double_dialed_contacts[:20]
        if result.lost_attempts:
            report["lost_attempts"] = result.lost_attempts[:20]
        if result.unexplained_attempts:
            report["unexplained_attempts"] = result.unexplained_attempts[:20]
        if result.stuck_contacts:
            report["stuck_contacts"] = result.stuck_contacts[:20]
        return report


@contextmanager
def _nothing() -> Iterator[str | None]:
    yield None


# ====================================================================== command

ROWS = (
    ("kills", "kills"),
    ("lock_episodes", "lock episodes"),
    ("disk_full_episodes", "disk-full episodes"),
    ("episodes_unrecovered", "episodes not recovered"),
    ("max_recovery_seconds", "slowest recovery (s)"),
    ("dials", "dials"),
    ("double_dials", "double dials"),
    ("unknown_dials", "dials of unknown contacts"),
    ("lost", "lost outcomes"),
    ("interrupted", "interrupted attempts"),
    ("unexplained_interrupted", "interrupted, no kill"),
    ("stuck", "stuck contacts"),
    ("undialed_attempts", "attempts with no dial"),
    ("wall_seconds", "wall time (s)"),
)
LABEL_WIDTH = 26


def format_report(report: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        return "-" if value is None else str(value)

    lines = [f"{label:<{LABEL_WIDTH}} {shown(report.get(key))}" for key, label in ROWS]
    errors = report["counter_errors"]
    lines.append(f"{'counters':<{LABEL_WIDTH}} {'add up' if not errors else '; '.join(errors)}")
    lines.extend(f"note: {note}" for note in report["notes"])
    for key in ("double_dialed_contacts", "lost_attempts", "unexplained_attempts"):
        if key in report:
            lines.append(f"{key}: {report[key]}")
    if "stuck_contacts" in report:
        lines.append(f"stuck_contacts: {report['stuck_contacts']}")
    lines.append("result: " + ("PASS" if report["ok"] else "FAIL"))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--contacts", type=int, metavar="N", help=f"job size (default {FULL.contacts})"
    )
    parser.add_argument(
        "--kills", type=int, metavar="K", help=f"kill -9 and restarts (default {FULL.kills})"
    )
    parser.add_argument(
        "--lock-episodes",
        type=int,
        metavar="L",
        help=f"database write locks held by another process (default {FULL.lock_episodes})",
    )
    parser.add_argument(
        "--disk-full-episodes",
        type=int,
        metavar="D",
        help="full-disk episodes on a size-limited tmpfs (needs root to mount; default 0)",
    )
    parser.add_argument(
        "--seed", type=int, metavar="S", help="seed of the random moments (default 1)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a small run: {QUICK.contacts} contacts, {QUICK.kills} kills (the test suite's)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="work in DIR (config, database, ledger, service log) and keep it",
    )


def plan_from(args: argparse.Namespace) -> Plan:
    base = QUICK if args.quick else FULL
    given = {
        "contacts": args.contacts,
        "kills": args.kills,
        "lock_episodes": args.lock_episodes,
        "disk_full_episodes": args.disk_full_episodes,
        "seed": args.seed,
    }
    for name, value in given.items():
        if value is not None and value < 0:
            raise ChaosError(f"--{name.replace('_', '-')} must not be negative")
    if args.contacts is not None and args.contacts < 1:
        raise ChaosError("--contacts must be at least 1")
    changes = {k: v for k, v in given.items() if v is not None}
    plan = Plan(**{**asdict(base), **changes})
    # Leave time for every event: a restart costs about a second, an episode its length plus
    # its recovery.
    budget = (
        plan.contacts * plan.longest_call * 3 / plan.concurrency
        + plan.kills * 5
        + plan.lock_episodes * (plan.lock_seconds[1] + RECOVERY_TIMEOUT_SECONDS)
        + plan.disk_full_episodes * (plan.disk_full_seconds[1] + RECOVERY_TIMEOUT_SECONDS)
    )
    if not args.quick:
        plan = Plan(**{**asdict(plan), "timeout": max(plan.timeout, budget)})
    return plan


@contextmanager
def _workdir(keep: str | None) -> Iterator[Path]:
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="dialer-chaos-") as tmp:
            yield Path(tmp)
        return
    path = Path(keep).resolve()
    if path.exists() and any(path.iterdir()):
        raise ChaosError(f"--keep {keep}: the directory is not empty")
    path.mkdir(parents=True, exist_ok=True)
    yield path


def main(args: argparse.Namespace) -> int:
    try:
        plan = plan_from(args)
        with _workdir(args.keep) as workdir:

            def say(line: str) -> None:
                if not args.json:
                    print(line, flush=True)

            say(
                f"chaos: {plan.contacts} contacts, {plan.kills} kills, "
                f"{plan.lock_episodes} lock episodes, {plan.disk_full_episodes} disk-full "
                f"episodes, seed {plan.seed} (work directory {workdir})"
            )
            report = Runner(plan, workdir, say, keep=args.keep is not None).run()
    except ChaosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print(format_report(report), flush=True)
    return 0 if report["ok"] else 1
