"""The Store: one method per query, each transaction run whole on one database connection.

Writes go through a single writer connection (aiosqlite: its own thread), so every
transaction is one hop off the event loop (group commit: a batch of claims or outcomes is one
transaction); a scheduler cycle the engine judges small enough, and the engine's look at the
jobs table, are written at once on the event loop's own connection instead, when the writer has
nothing queued and the lock is free (see `_write_here`). Reads for
the API use separate connections; WAL lets them run while the writer works. See
`storage.connection`.

What the methods take and return is in `storage.rows`; the statements of the scheduler's
transactions (claims, outcomes, verdicts, activation) are in `storage.dialing`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from storage import db as dbmod
from storage import dialing
from storage.connection import (
    BUSY_TIMEOUT_SECONDS,
    Connection,
    StorageUnavailable,
    create_private,
    storage_failure,
)
from storage.db import JobExpiredError, TransitionError
from storage.latency import FAST_BUCKETS, BucketCounts
from storage.rows import (
    Activation,
    AlwaysOpen,
    ApiKeyRow,
    AppliedResult,
    AttemptRef,
    AttemptRow,
    BatchSummary,
    CallFilter,
    CallingRules,
    CallRow,
    ClaimedContact,
    ContactRow,
    CreateLimits,
    CycleResult,
    DeliveryAttempt,
    DueDelivery,
    IdempotencyRecord,
    IdempotencyReplay,
    JobClaim,
    JobDetailRow,
    JobRow,
    JobVerdict,
    LimitExceeded,
    NewContact,
    NewJob,
    NewResult,
    NoResultRules,
    Outcome,
    ResultRecorded,
    ResultRefused,
    ResultRow,
    ResultRules,
    RoomNamer,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookPick,
)

T = TypeVar("T")

Q = dbmod.queries


# How long the event loop's own connection may wait for a lock: not at all. A read that would
# wait goes to a reader's thread, a write to the writer (a WAL reader normally never
# waits; the write lock is taken only by this process's writer, or another process).
INLINE_BUSY_MS = 0

# Transactions written in a row on the event loop's connection before one goes to the writer
# (see Store._write_here): that connection never checkpoints the write-ahead log (a checkpoint
# would hold the event loop for a disk flush), so the writer's commits must come often enough
# to (about 20 pages a small cycle, about 100 for one of 256 outcomes and claims: the log stays
# within a few thousand pages before the writer's next commit checkpoints it).
INLINE_RUN = 32

# The event loop's connection commits without waiting for the disk (`synchronous = NORMAL`:
# the commit is written into the operating system's cache) and a thread of the store's own then
# flushes the write-ahead log (see Store._durable); the write returns once the log is on the
# disk, as with `synchronous = FULL`. The loop waits for that flush at most this long, and lets
# other work run meanwhile after that: a flush takes about 0.2 ms, but on a virtual disk one
# in a few thousand takes 0.1-1 s, which would have frozen every request and timer.
INLINE_FLUSH_WAIT_SECONDS = 0.002

# The answers of small reads the store keeps for repeats (see Store._read_kept): at most this
# many, of at most this many characters each and in all (a page of 500 contacts with large
# contactData can be megabytes: such an answer is not kept).
KEPT_READS = 64
KEPT_ANSWER_CHARS = 256 * 1024
KEPT_TOTAL_CHARS = 4 * 1024 * 1024

# An organization's webhook endpoints have slots 0-31 (a delivery's id is its event's id x 32 +
# its endpoint's slot), so it can have at most this many.
WEBHOOK_ENDPOINT_SLOTS = 32


class _Kept(NamedTuple):
    """An answer kept for repeats (see Store._read_kept)."""

    version: tuple[int, int]  # (data_version, commits on the loop's own connection) before it
    read_at: float  # the `now` it was read for
    fresh_until: float  # the `now` from which it may read otherwise with no write
    answer: Any
    chars: int  # its size, as counted against KEPT_TOTAL_CHARS


class Store:
    """Async facade over the SQLite database. Construct with `await Store.open(path)`.

    Writes run on one writer connection, reads on two reader connections (see
    `storage.connection`). The store also keeps the facts health is told from: whether the last
    write succeeded, and whether the files it has open are still the database at `path`.
    """

    # {organization: credits} as JSON: organizations whose running jobs pause when their spend
    # reaches their credits (see set_credit_limits).
    _credit_limits = "{}"
    # Calling windows and caps, as the engine sets them (see CallingRules).
    calling_rules: CallingRules = AlwaysOpen()
    result_rules: ResultRules = NoResultRules()

    def __init__(self, path: str, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._memory = path == ":memory:"
        self._writer: Connection | None = None
        self._reader: Connection | None = None  # big reads: exports, whole-job documents
        self._small: Connection | None = None  # small reads: a job, its counts, one page
        self._inline: sqlite3.Connection | None = None  # the event loop's own (see _read_small)
        self._counts_epoch = True  # the schema counts outcome transactions (migration 0018)
        self._kept: OrderedDict[tuple[object, ...], _Kept] = OrderedDict()  # least recent first
        self._kept_chars = 0
        self.kept_hits = 0
        self._inline_writes = 0  # committed on the loop's connection: data_version misses them
        self._queued_writes = 0  # handed to the writer's thread and not yet done
        self._inline_run = 0  # written on the loop's connection since the writer's last commit
        self.last_write_error: str | None = None  # None: the last write succeeded
        # Set once writes can no longer be trusted to reach the database: the files open are
        # no longer the database at `path`, or the disk failed to flush the log. Every write
        # is refused from then on, until the service is restarted.
        self.lost: str | None = None
        # Where the last state of a database deleted or replaced under the service was saved.
        self.saved_copy: str | None = None
        self._wal_fd: int | None = None  # the -wal file, flushed after the loop's commits
        self._flusher: concurrent.futures.ThreadPoolExecutor | None = None
        self._identity: dict[str, tuple[int, int]] = {}
        # Called when a write fails (the engine then checks storage until a write succeeds).
        self.on_write_failed: Callable[[], None] | None = None
        # For /metrics: how long writes took (queueing for the writer included), and failures.
        self.write_seconds = BucketCounts(FAST_BUCKETS)
        self.write_failures = 0
        # Per webhook endpoint: the change up to which a look found nothing for it to take (so
        # that an endpoint whose events are rare does not look through the same changes of
        # its organization, or of others, on every round).
        self._webhook_seen: dict[str, int] = {}

    @classmethod
    async def open(cls, path: str, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> Store:
        store = cls(path, busy_timeout)
        try:
            await store._start()
        except BaseException:
            await store.close()
            raise
        return store

    async def _start(self) -> None:
        def prepare(conn: sqlite3.Connection) -> None:
            dbmod.migrate(conn)
            dialing.prepare_scratch(conn)
            # Always true once migrated. (A test that writes with this code at an older schema,
            # to check what a migration carries over, has no such table.)
            self._counts_epoch = bool(
                conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'dial_epoch'").fetchone()
            )

        if not self._memory:
            try:
                create_private(self.path)
            except OSError as exc:
                raise StorageUnavailable(f"cannot open {self.path}: {exc.strerror}") from exc
        self._writer = await Connection.open(self.path, "writer", self.busy_timeout)
        await self._writer.call(prepare)
        if self._memory:
            self._reader = self._small = self._writer
        else:
            self._reader = await Connection.open(self.path, "reader", self.busy_timeout)
            self._small = await Connection.open(self.path, "small-reader", self.busy_timeout)
            self._inline = dbmod.connect(self.path)
            self._inline.execute(f"PRAGMA busy_timeout = {INLINE_BUSY_MS}")
            self._inline.execute("PRAGMA wal_autocheckpoint = 0")  # the writer's job
            dialing.prepare_scratch(self._inline)
            self._wal_fd = _open_wal(self.path)
            if self._wal_fd is not None:  # else its commits flush the log themselves (FULL)
                self._inline.execute("PRAGMA synchronous = NORMAL")
                self._flusher = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="wal-flush"
                )
            self._identity = self._file_identity()

    async def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)
            self._flusher = None
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        connections = {id(c): c for c in (self._small, self._reader, self._writer) if c}
        self._writer = self._reader = self._small = None
        for conn in connections.values():
            await conn.close()

    # ------------------------------------------------------------- health

    def _file_identity(self) -> dict[str, tuple[int, int]]:
        """(device, inode) of the database file and its -wal, as they are at `path` now."""
        found = {}
        for suffix in ("", "-wal"):
            try:
                st = os.stat(self.path + suffix)
            except FileNotFoundError:
                continue
            found[suffix] = (st.st_dev, st.st_ino)
        return found

    async def check_files(self) -> str | None:
        """Whether the files the store has open are still the database at its path; once they
        are not (deleted or replaced under the running service) every write is refused, so
        nothing is written into a file that is no longer the database. Returns the problem.

        When only the -wal went, the database file is still the one open: what the lost log
        held is copied into it first (a checkpoint from the log this process still has open),
        so that no committed outcome or claim is lost with it.
        """
        if self.lost is not None or self._memory or self._writer is None:
            return self.lost
        now = self._file_identity()
        problem = None
        for suffix, name in (("", "database file"), ("-wal", "write-ahead log")):
            if suffix not in self._identity:
                continue
            if suffix not in now:
                problem = f"the {name} {self.path}{suffix} was deleted"
            elif now[suffix] != self._identity[suffix]:
                problem = f"the {name} {self.path}{suffix} was replaced by another file"
            if problem is not None:
                break
        if problem is None:
            return None
        self.lost = problem  # refused from now on; writes queued before run before the copy
        if now.get("") == self._identity.get(""):
            try:
                await self._writer.call(
                    lambda conn: conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
                )
                self.lost += "; what it held was saved into the database file"
            except StorageUnavailable as exc:
                self.lost += f"; saving what it held failed ({exc})"
        else:
            # The database file itself is gone from its path (or another is there): what this
            # process still has open is its last state, every claim and outcome written. A
            # backup restored in its place lacks those since the backup, and calls the contacts
            # dialed since as if they never were; this copy lacks nothing.
            try:
                saved = await self._writer.call(lambda conn: _save_copy(conn, self.path))
                self.saved_copy = saved
                self.lost += f"; its last state was saved as {saved}"
            except (StorageUnavailable, OSError, sqlite3.Error) as exc:
                self.lost += f"; saving its last state failed ({exc})"
        return self.lost

    @property
    def storage_problem(self) -> str | None:
        """Why storage is not healthy (None: it is)."""
        return self.lost or self.last_write_error

    async def probe(self, now: float) -> None:
        """A small real write (raises StorageUnavailable while writes fail)."""
        await self._write(lambda conn: conn.execute(Q()["heartbeat"], (now,)))

    # ------------------------------------------------------------- transactions

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) as one IMMEDIATE transaction on the writer connection."""
        conn = self._writer
        if conn is None:
            raise dbmod.StorageError("store is closed")
        if self.lost is not None:
            raise StorageUnavailable(self.lost)
        started = time.perf_counter()
        self._queued_writes += 1
        try:
            # Shielded: once a transaction is handed to the thread it runs to its end, and the
            # caller learns its result even when the caller itself is being cancelled.
            result = await asyncio.shield(conn.write(fn))
        except StorageUnavailable as exc:
            self._write_failed(exc)
            raise
        finally:
            self._queued_writes -= 1
        self.write_seconds.observe(time.perf_counter() - started)
        self.last_write_error = None
        self._inline_run = 0
        return result

    def _write_failed(self, exc: StorageUnavailable) -> None:
        self.write_failures += 1
        self.last_write_error = str(exc)
        if self.on_write_failed is not None:
            self.on_write_failed()

    async def _write_here(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A transaction run at once on the event loop's own connection, when the writer has
        nothing queued and the lock is free; else on the writer, as usual. The caller keeps it
        small: it holds the event loop for its whole length (see scheduler.QUIET_CYCLE).

        A paced job's slot waits for its refill on every round, and the hop to the writer's
        thread and back cost a slot a few milliseconds more than the transaction itself (the
        result's wake-up waits behind a busy loop, and every statement hands the GIL to the
        thread and back). Run here, the loop is held for the transaction only, SQLite working
        without the GIL (`dialer bench --scenario watched_pacing`: mean refill 7.9 -> 4.7 ms).
        A storage failure counts as the writer's would."""
        conn = self._inline
        if (
            conn is None
            or self.lost is not None
            or self._queued_writes
            or self._inline_run >= INLINE_RUN
        ):
            return await self._write(fn)
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:  # the lock is taken (or the file fails): the writer decides
            return await self._write(fn)
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _roll_back(conn)
            if not storage_failure(exc):
                raise
            failure = StorageUnavailable(f"{type(exc).__name__}: {exc}")
            self._write_failed(failure)
            raise failure from exc
        except BaseException:
            _roll_back(conn)
            raise
        finally:
            self._inline_writes += 1
        self._inline_run += 1
        await self._durable()
        self.write_seconds.observe(time.perf_counter() - started)
        self.last_write_error = None
        return result

    async def _durable(self) -> None:
        """Return once what the event loop's connection committed is on the disk: its log is
        flushed by the store's flushing thread (see INLINE_FLUSH_WAIT_SECONDS). Until then the
        caller acts on nothing it wrote (the engine starts no call it claimed). Readers may see
        the commit a moment before it is flushed; a crash of the process loses none of it (it
        is in the system's cache), a power cut may lose that moment's transaction, as with any
        commit not yet flushed.

        A flush that fails means the disk may have dropped what was written: every write is
        refused from then on (as PostgreSQL does), and the service must be restarted; contacts
        left dialing are then reconciled, never re-dialed blindly."""
        fd, flusher = self._wal_fd, self._flusher
        if fd is None or flusher is None:
            return
        flushed = flusher.submit(flush_file, fd)
        # Most flushes end within the wait: no turn of the event loop is spent on them.
        concurrent.futures.wait([flushed], timeout=INLINE_FLUSH_WAIT_SECONDS)
        try:
            if not flushed.done():  # (awaiting a finished one would still cost a turn)
                await asyncio.wrap_future(flushed)
            flushed.result()
        except OSError as exc:
            problem = (
                f"the disk failed to flush the write-ahead log ({exc.strerror or exc}): what "
                "was last written may not be on it; restart the service once the disk is healthy"
            )
            self.lost = self.lost or problem
            failure = StorageUnavailable(problem)
            self._write_failed(failure)
            raise failure from exc

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) in one read transaction (a consistent snapshot) on the reader."""
        conn = self._reader
        if conn is None:
            raise dbmod.StorageError("store is closed")
        return await conn.read(fn)

    async def _read_small(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A small read (a job, its counts, one page): at once on the event loop's own
        connection. In WAL mode a reader never waits for the writer, and a hop to a
        connection's thread and back costs more than the read itself: under engine load it
        doubled the API's p99 (`dialer bench --scenario api`: 94 ms against 45 ms). If that
        connection ever has to wait (a lock taken by something other than a writer), or fails,
        the read goes to the small reader's thread instead, so the loop never waits."""
        inline = self._inline
        if inline is not None:
            try:
                inline.execute("BEGIN")
                try:
                    return fn(inline)
                finally:
                    inline.execute("COMMIT")
            except sqlite3.Error:
                if inline.in_transaction:
                    inline.rollback()
        conn = self._small
        if conn is None:
            raise dbmod.StorageError("store is closed")
        return await conn.read(fn)

    async def _read_kept(
        self,
        key: tuple[object, ...],
        fn: Callable[[sqlite3.Connection], T],
        now: float = 0.0,
        fresh_until: Callable[[T], float] = lambda _: math.inf,
        size: Callable[[T], int] = lambda _: 0,
    ) -> T:
        """A small read whose answer is kept for as long as the database does not change: a
        dashboard, or many, polling the same job between two engine cycles reads it once.

        SQLite's `data_version` of the event loop's connection changes whenever another
        connection commits, and the store counts that connection's own commits (small cycles,
        see _write_here): together they change with every write, so a kept answer is exactly
        what the read would return now. They are read before the read itself: a commit in
        between only makes the answer newer than its label, never older. An answer that
        changes with time alone (a contact's nextCallAt passing) says until when it holds.
        Without that connection (an in-memory database), nothing is kept."""
        inline = self._inline
        if inline is None:
            return await self._read_small(fn)
        try:
            # Commits of other connections, and this connection's own (see _write_here).
            others = int(inline.execute("PRAGMA data_version").fetchone()[0])
            version = (others, self._inline_writes)
        except sqlite3.Error:
            return await self._read_small(fn)
        kept = self._kept.pop(key, None)
        if kept is not None:
            self._kept_chars -= kept.chars
            if kept.version == version and kept.read_at <= now < kept.fresh_until:
                self._kept[key] = kept  # the most recently used again
                self._kept_chars += kept.chars
                self.kept_hits += 1
                found: T = kept.answer
                return found
        answer = await self._read_small(fn)
        chars = size(answer)
        if chars <= KEPT_ANSWER_CHARS:
            self._kept[key] = _Kept(version, now, fresh_until(answer), answer, chars)
            self._kept_chars += chars
            while len(self._kept) > KEPT_READS or self._kept_chars > KEPT_TOTAL_CHARS:
                self._kept_chars -= self._kept.popitem(last=False)[1].chars
        return answer

    async def _read_aside(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read on the small reader's thread: for work that must not take the event loop's
        time even briefly (the webhook sender's, done beside the engine)."""
        conn = self._small
        if conn is None:
            raise dbmod.StorageError("store is closed")
        return await conn.read(fn)

    # ----------------------------------------------------------------- jobs

    async def create_job(
        self,
        job: NewJob,
        contacts: Sequence[NewContact],
        limits: CreateLimits | None = None,
        idempotency: IdempotencyRecord | None = None,
    ) -> int:
        """Insert a job and its contacts; return how many were suppressed by the organization's
        do-not-call list (stored cancelled, do_not_call); numbers at their cap wait. With
        `limits`, first check in the same transaction (so that racing creates cannot both
        pass) that the organization stays within them; raise LimitExceeded if not. With
        `idempotency`, a key the organization already used raises IdempotencyReplay (nothing is
        created), else the answer is kept with the job."""
        params = {
            "id": job.id,
            "organization_id": job.organization_id,
            "name": job.name,
            "description": job.description,
            "status": job.status,
            "agent_id": job.agent_id,
            "phone_number_id": job.phone_number_id,
            "concurrent_call_limit": job.concurrent_call_limit,
            "max_attempts": job.max_attempts,
            "retry_statuses": json.dumps(list(job.retry_statuses)),
            "retry_delay_seconds": job.retry_delay_seconds,
            "retry_backoff": job.retry_backoff,
            "timezone": job.timezone,
            "scheduled_start_time": job.scheduled_start_time,
            "created_at": job.created_at,
            "total_contacts": len(contacts),
            "estimated_cost_usd": job.estimated_cost_usd,
            "ringing_timeout_seconds": job.ringing_timeout_seconds,
            "calling_windows": job.calling_windows,
            "window_timezone": job.window_timezone,
            "expires_at": job.expires_at,
            "from_number": job.from_number,
            "retry_on_voicemail": int(job.retry_on_voicemail),
        }
        statuses_json = json.dumps(CONTACT_STATUSES)
        phones_json = json.dumps([c.phone for c in contacts if c.status == "pending"])
        org = job.organization_id
        rules = self.calling_rules
        cap = rules.daily_cap(org)

        def tx(conn: sqlite3.Connection) -> int:
            listed = int(
                conn.execute(Q()["count_listed"], {"org": org, "numbers": phones_json}).fetchone()[
                    0
                ]
            )
            if idempotency is not None:  # a replay answers before any limit is checked
                _keep_idempotency(conn, job, idempotency, idempotency.response(listed))
            if limits is not None:
                _check_limits(conn, job, len(contacts), limits)
            conn.execute(Q()["insert_job"], params)
            # The count rows exist before the contacts, whose insert trigger counts them.
            conn.execute(Q()["insert_status_counts"], (job.id, statuses_json))
            # A few statements of INSERT_CHUNK contacts each: a statement per contact would
            # hand the GIL back and forth with the event loop once per row, one statement for
            # a whole wide list would hold it all as JSON text and as SQLite's parse of it.
            # Encoded here, on the writer's thread: a big list takes a while.
            for start in range(0, len(contacts), INSERT_CHUNK):
                chunk = contacts[start : start + INSERT_CHUNK]
                conn.execute(
                    Q()["insert_contacts"],
                    {
                        "job_id": job.id,
                        "contacts": "[" + ",".join(_contact_json(c) for c in chunk) + "]",
                        "first_seq": start + 1,
                        "max_attempts": job.max_attempts,
                        "now": job.created_at,
                        "org": org,
                    },
                )
            if cap:
                dialing.defer_capped(conn, org, cap, phones_json, job.created_at, rules)
            return listed

        return await self._write(tx)

    async def get_job(self, organization_id: str, job_id: str) -> JobRow | None:
        def q(conn: sqlite3.Connection) -> JobRow | None:
            row = conn.execute(Q()["get_job"], (job_id, organization_id)).fetchone()
            return JobRow.from_row(row) if row else None

        return await self._read_small(q)

    async def get_job_by_id(self, job_id: str) -> JobRow | None:
        """For the engine only: a job regardless of organization."""

        def q(conn: sqlite3.Connection) -> JobRow | None:
            row = conn.execute(Q()["get_job_any_org"], (job_id,)).fetchone()
            return JobRow.from_row(row) if row else None

        return await self._read(q)

    async def list_jobs_json(
        self, organization_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[str, int]:
        """A page of jobs (newest first) as a JSON array in the API's job shape, and the total
        matching."""

        def q(conn: sqlite3.Connection) -> tuple[str, int]:
            params = {"org": organization_id, "status": status, "limit": limit, "offset": offset}
            page: str = conn.execute(Q()["list_jobs_api"], params).fetchone()[0]
            return page, int(conn.execute(Q()["count_jobs"], params).fetchone()[0])

        key = ("jobs", organization_id, status, limit, offset)
        return await self._read_kept(key, q, size=lambda answer: len(answer[0]))

    async def job_detail(
        self,
        organization_id: str,
        job_id: str,
        contact_status: str | None,
        limit: int,
        offset: int,
        now: float = 0.0,
    ) -> JobDetailRow | None:
        """Job, status counts, a page of contacts, the filtered total, timing facts. A contact
        shows nextCallAt when it waits past `now`."""

        def q(conn: sqlite3.Connection) -> JobDetailRow | None:
            row = conn.execute(Q()["get_job"], (job_id, organization_id)).fetchone()
            if row is None:
                return None
            job = JobRow.from_row(row)
            counts = _counts(conn, job_id)
            params = {
                "job_id": job_id,
                "status": contact_status,
                "limit": limit,
                "offset": offset,
                "now": now,
            }
            query = "contacts_page_api" if contact_status is None else "contacts_page_api_in_status"
            contacts_json, first_wait = conn.execute(Q()[query], params).fetchone()
            total = counts.get(contact_status, 0) if contact_status else job.total_contacts
            return JobDetailRow(
                job=job,
                counts=counts,
                contacts_json=contacts_json,
                contacts_total=total,
                last_retry_due=conn.execute(Q()["last_retry_due"], (job_id,)).fetchone()[0],
                last_call_due=conn.execute(Q()["last_call_due"], (job_id,)).fetchone()[0],
                fresh_until=math.inf if first_wait is None else first_wait,
            )

        key = ("detail", organization_id, job_id, contact_status, limit, offset)
        return await self._read_kept(key, q, now, _fresh_until, _detail_size)

    async def job_with_counts(
        self, organization_id: str, job_id: str
    ) -> tuple[JobRow, dict[str, int]] | None:
        """A job and its status counts, read together."""

        def q(conn: sqlite3.Connection) -> tuple[JobRow, dict[str, int]] | None:
            row = conn.execute(Q()["get_job"], (job_id, organization_id)).fetchone()
            return (JobRow.from_row(row), _counts(conn, job_id)) if row else None

        return await self._read_small(q)

    async def list_calls(
        self, job_id: str, where: CallFilter, limit: int, offset: int = 0, *, count: bool = False
    ) -> tuple[list[CallRow], int | None]:
        """A page of contacts with their latest attempt; the filtered total when `count`."""
        params = {
            "job_id": job_id,
            "statuses": None if where.statuses is None else json.dumps(list(where.statuses)),
            "external_id": where.external_id,
            "after_seq": where.after_seq,
            "limit": limit,
            "offset": offset,
        }

        def q(conn: sqlite3.Connection) -> tuple[list[CallRow], int | None]:
            rows = [CallRow.from_values(v) for v in _json_rows(conn, "list_calls", params)]
            total = int(conn.execute(Q()["count_calls"], params).fetchone()[0]) if count else None
            return rows, total

        return await self._read(q)

    async def contact_field_names(self, job_id: str) -> list[str]:
        """Every field name in the job's contact data, in order of first appearance."""
        return await self._read(
            lambda conn: [r[0] for r in conn.execute(Q()["contact_field_names"], (job_id,))]
        )

    async def batch_summary(self, organization_id: str, job_id: str) -> BatchSummary | None:
        """A job with its batch figures."""

        def q(conn: sqlite3.Connection) -> BatchSummary | None:
            row = conn.execute(Q()["get_job"], (job_id, organization_id)).fetchone()
            return _batch_summaries(conn, [JobRow.from_row(row)])[0] if row else None

        return await self._read(q)

    async def list_batches(
        self, organization_id: str, agent_id: str | None, after_id: str | None, limit: int
    ) -> list[BatchSummary] | None:
        """Up to `limit` jobs newest first, after the job `after_id` (None: from the newest),
        with their batch figures. None when `after_id` is not a job of the organization."""
        params = {"org": organization_id, "agent_id": agent_id, "after_id": after_id}

        def q(conn: sqlite3.Connection) -> list[BatchSummary] | None:
            if (
                after_id is not None
                and not conn.execute(
                    Q()["job_exists_any_state"], (after_id, organization_id)
                ).fetchone()
            ):
                return None
            rows = conn.execute(Q()["list_batches"], {**params, "limit": limit}).fetchall()
            return _batch_summaries(conn, [JobRow.from_row(r) for r in rows])

        return await self._read(q)

    async def delete_job(self, organization_id: str, job_id: str, now: float) -> bool:
        """Hide a finished job with no live call from every route; its rows stay. False when
        the job is not (or no longer) in a state for it."""
        params = {"id": job_id, "org": organization_id, "now": now}
        return await self._write(lambda conn: conn.execute(Q()["delete_job"], params).rowcount == 1)

    async def status_counts(self, job_id: str) -> dict[str, int]:
        return await self._read(lambda conn: _counts(conn, job_id))

    async def main_zones(self, job_id: str) -> str | None:
        """The zones (as stored: comma-separated) most of the job's contacts are in."""

        def q(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(Q()["main_zones"], (job_id,)).fetchone()
            return None if row is None or row[0] is None else str(row[0])

        return await self._read(q)

    async def list_contacts(
        self, job_id: str, status: str | None, limit: int, offset: int
    ) -> list[ContactRow]:
        def q(conn: sqlite3.Connection) -> list[ContactRow]:
            params = {"job_id": job_id, "status": status, "limit": limit, "offset": offset}
            return _contact_page(conn, params)

        return await self._read(q)

    async def list_attempts(self, contact_id: int) -> list[AttemptRow]:
        def q(conn: sqlite3.Connection) -> list[AttemptRow]:
            rows = conn.execute(Q()["list_attempts"], (contact_id,))
            return [AttemptRow(**dict(r)) for r in rows]

        return await self._read(q)

    async def count_jobs_in_status(self, job_ids: Iterable[str], statuses: Iterable[str]) -> int:
        """How many of these jobs are in one of these statuses."""
        params = {"ids": json.dumps(list(job_ids)), "statuses": json.dumps(list(statuses))}
        return await self._read(
            lambda conn: int(conn.execute(Q()["count_jobs_in_status"], params).fetchone()[0])
        )

    async def start_jobs(
        self, job_ids: Sequence[str], from_statuses: Sequence[str], now: float
    ) -> list[str]:
        """Move jobs to running; return those that moved."""
        from_json = json.dumps(list(from_statuses))
        return await self._write(lambda conn: dialing.start_jobs(conn, job_ids, from_json, now))

    async def activate(self, now: float) -> Activation:
        """The engine's look at the jobs table, in one small transaction (on the event loop's
        own connection when it can be, see _write_here): expire the jobs past their
        `expiresAt`, start the pending ones and the scheduled ones that are due, and read the
        running jobs and when the next scheduled start and expiry are due."""

        return await self._write_here(lambda conn: dialing.activate(conn, now))

    async def cancel_job(self, organization_id: str, job_id: str, now: float) -> int:
        """Cancel a job and its pending/queued contacts; return how many contacts were cancelled.

        Raises TransitionError when the job exists but is already finished.
        """

        def tx(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                Q()["cancel_job"], {"id": job_id, "org": organization_id, "now": now}
            )
            if cur.rowcount == 0:
                raise TransitionError(f"job {job_id} cannot be cancelled")
            return conn.execute(Q()["cancel_contacts"], {"id": job_id, "now": now}).rowcount

        return await self._write(tx)

    async def reschedule_job(
        self, organization_id: str, job_id: str, when: float, timezone: str, now: float
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            params = {
                "id": job_id,
                "org": organization_id,
                "when": when,
                "tz": timezone,
                "now": now,
            }
            if conn.execute(Q()["reschedule_job"], params).rowcount == 0:
                raise TransitionError(f"job {job_id} cannot be rescheduled")

        await self._write(tx)

    async def pause_job(
        self,
        job_id: str,
        reason: str,
        now: float,
        from_statuses: Iterable[str],
        organization_id: str | None = None,
    ) -> tuple[bool, str | None]:
        """Pause a job in one of `from_statuses` (of that organization, when given). Return
        whether it was paused, and its status then, in the same transaction (None: no such
        job): a request racing another judges the status its own write saw."""
        params = {
            "id": job_id,
            "org": organization_id,
            "reason": reason,
            "now": now,
            "from_statuses": json.dumps(list(from_statuses)),
        }
        return await self._write(lambda conn: _changed_and_status(conn, "pause_job", params))

    async def resume_job(
        self, organization_id: str, job_id: str, now: float
    ) -> tuple[bool, str | None]:
        """Resume a paused job. Return whether it was resumed, and its status then (as
        pause_job)."""
        params = {"id": job_id, "org": organization_id, "now": now}
        return await self._write(lambda conn: _changed_and_status(conn, "resume_job", params))

    async def retry_contacts(
        self,
        organization_id: str,
        job_id: str,
        statuses: Sequence[str],
        attempts: int,
        now: float,
        job_statuses: Iterable[str],
    ) -> tuple[int, int]:
        """Re-queue the job's contacts in `statuses` for another round; return how many, and
        how many were left as they ended because their number is on the do-not-call list.

        Raises TransitionError when the job is not in one of `job_statuses`, JobExpiredError
        when its expiresAt has passed (a contact re-queued then would only be cancelled as
        expired, losing the outcome it ended with). When any contact was re-queued the job
        counts one more retry round and runs again (a paused job stays paused). A contact whose
        number is at its cap of dials in 24 h waits until it lifts, as the engine's do: the
        engine wakes for it then.
        """
        allowed = json.dumps(list(job_statuses))
        rules = self.calling_rules
        cap = rules.daily_cap(organization_id)

        def tx(conn: sqlite3.Connection) -> tuple[int, int]:
            row = conn.execute(Q()["get_job"], (job_id, organization_id)).fetchone()
            if row is None or row["status"] not in json.loads(allowed):
                raise TransitionError(f"job {job_id} cannot be retried")
            if row["expires_at"] is not None and row["expires_at"] <= now:
                raise JobExpiredError(f"job {job_id} expired")
            params = {
                "job_id": job_id,
                "org": organization_id,
                "statuses": json.dumps(list(statuses)),
                "attempts": attempts,
                "now": now,
            }
            phones = [row[0] for row in conn.execute(Q()["retry_contacts"], params)]
            requeued = len(phones)
            if cap and phones:
                numbers = json.dumps(sorted(set(phones)))
                dialing.defer_capped(conn, organization_id, cap, numbers, now, rules)
            listed = int(conn.execute(Q()["count_listed_in_statuses"], params).fetchone()[0])
            if requeued:
                restart = {"id": job_id, "now": now, "from_statuses": allowed}
                if conn.execute(Q()["restart_job_for_retry"], restart).rowcount != 1:
                    raise TransitionError(f"job {job_id} cannot be retried")
            return requeued, listed

        return await self._write(tx)

    # ------------------------------------------------------------- dialing

    async def cycle(
        self,
        outcomes: Sequence[Outcome],
        verdicts: Sequence[JobVerdict],
        wanted: Mapping[str, int],
        now: float,
        room_namer: RoomNamer,
        *,
        here: bool = False,
    ) -> CycleResult:
        """One scheduler cycle in one transaction (group commit): record the finished attempts,
        fail or pause the jobs the engine judged, then claim contacts for the free slots.

        Claims are committed before anyone dials: after a crash they are found in `dialing`.
        With `here`, on the event loop's own connection when it can be (see _write_here).
        """

        credit_limits = self._credit_limits

        def tx(conn: sqlite3.Connection) -> CycleResult:
            resulted: list[AppliedResult] = []
            completed, refused = dialing.record(
                conn, outcomes, now, self.calling_rules, self.result_rules, resulted
            )
            epoch = (
                conn.execute(Q()["bump_dial_epoch"]).fetchone()[0]
                if outcomes and self._counts_epoch
                else None
            )
            applied = [v for v in verdicts if dialing.apply_verdict(conn, v, now)]
            if credit_limits != "{}":
                applied += dialing.pause_out_of_credits(conn, credit_limits, now)
            claims = dialing.claim(conn, wanted, now, room_namer, self.calling_rules)
            completed += [j for j, c in claims.items() if c.completed and j not in completed]
            return CycleResult(completed, refused, claims, applied, resulted, epoch)

        return await (self._write_here(tx) if here else self._write(tx))

    async def claim(
        self, wanted: Mapping[str, int], now: float, room_namer: RoomNamer
    ) -> dict[str, JobClaim]:
        """For each job, move up to `wanted[job]` ready contacts to `dialing` (see `cycle`)."""
        return (await self.cycle((), (), wanted, now, room_namer)).claims

    async def record_outcomes(
        self, outcomes: Sequence[Outcome], now: float
    ) -> tuple[list[str], list[Outcome]]:
        """Record finished attempts (see `cycle`); return the jobs that became completed and
        the outcomes refused because their contact was not in `dialing` for that attempt."""
        result = await self.cycle(outcomes, (), {}, now, dialing.no_rooms)
        return result.completed, result.refused

    async def dialing_contacts(self) -> list[ClaimedContact]:
        """Contacts left in `dialing` (by a crash or a shutdown), with their open attempt."""

        def q(conn: sqlite3.Connection) -> list[ClaimedContact]:
            return [
                ClaimedContact(
                    id=r["id"],
                    job_id=r["job_id"],
                    seq=r["seq"],
                    phone=r["phone"],
                    contact_data=json.loads(r["contact_data"]),
                    attempt_no=r["attempt_count"],
                    max_attempts=r["max_attempts"],
                    room_name=r["room_name"],
                    started_at=r["started_at"],
                    zones=r["timezone"],
                    call_until=r["call_until"],
                    # Where it goes back to if it was never dialed (a retry: due at once).
                    was="pending" if r["attempt_count"] == 1 else "queued",
                )
                for r in conn.execute(Q()["dialing_contacts"])
            ]

        return await self._write(q)

    async def find_idempotency_key(
        self, organization_id: str, key: str, since: float
    ) -> tuple[str, str] | None:
        """(fingerprint, response) kept for this key since `since`, if any."""

        def q(conn: sqlite3.Connection) -> tuple[str, str] | None:
            params = {"org": organization_id, "key": key, "since": since}
            row = conn.execute(Q()["find_idempotency_key"], params).fetchone()
            return (row[0], row[1]) if row else None

        return await self._read_small(q)

    def set_credit_limits(self, limits: Mapping[str, float]) -> None:
        """From now on, each scheduler cycle pauses the running jobs of an organization whose
        spend reached its credits (`limits`: {organization: credits}), with CREDITS_EXHAUSTED
        as their reason; they claim no one until resumed."""
        self._credit_limits = json.dumps(dict(limits))

    async def organization_spend(self, organization_id: str) -> float:
        return await self._read(
            lambda conn: float(conn.execute(Q()["get_spend"], (organization_id,)).fetchone()[0])
        )

    # ------------------------------------------------------------- expiry

    # ------------------------------------------------------------- agents' results

    async def dial_epoch(self) -> int:
        """How many transactions have recorded outcomes on this database (migration 0018)."""

        def q(conn: sqlite3.Connection) -> int:
            if not self._counts_epoch:
                return 0
            return int(conn.execute(Q()["dial_epoch"]).fetchone()[0])

        return await self._read_small(q)

    async def latest_listing(self) -> float | None:
        """When the latest do-not-call listing was made (any organization; None: none)."""

        def q(conn: sqlite3.Connection) -> float | None:
            found: float | None = conn.execute(Q()["dnc_latest"]).fetchone()[0]
            return found

        return await self._read_small(q)

    async def callback_secret(self) -> bytes:
        """The secret callback tokens are signed with (made once per database)."""

        def q(conn: sqlite3.Connection) -> bytes:
            row = conn.execute(Q()["callback_secret"]).fetchone()
            return bytes.fromhex(row[0])

        return await self._read_small(q)

    async def attempt_for_room(
        self, room_name: str, contact_id: int, attempt_no: int
    ) -> AttemptRef | None:
        """The attempt that room belongs to, if it exists (in a job not deleted)."""
        params = {"room": room_name, "contact_id": contact_id, "attempt_no": attempt_no}

        def q(conn: sqlite3.Connection) -> AttemptRef | None:
            row = conn.execute(Q()["attempt_for_room"], params).fetchone()
            return AttemptRef(*row) if row else None

        return await self._read_small(q)

    async def record_result(
        self,
        new: NewResult,
        organization_id: str | None,
        now: float,
        *,
        window_seconds: float,
        most_per_attempt: int,
    ) -> ResultRecorded | None:
        """Keep an agent's result for its attempt and show it on the contact; once the call has
        ended, make its effect at once (while it is live, the engine makes it when it writes
        the call's outcome). None: no such attempt (for `organization_id`, when given).
        Raises ResultRefused when the call ended more than `window_seconds` ago or the attempt
        has `most_per_attempt` results already."""
        where = {"room": new.room_name, "contact_id": new.contact_id, "attempt_no": new.attempt_no}
        rules = self.result_rules

        def tx(conn: sqlite3.Connection) -> ResultRecorded | None:
            row = conn.execute(Q()["attempt_for_room"], where).fetchone()
            if row is None:
                return None
            ref = AttemptRef(*row)
            if organization_id is not None and ref.organization_id != organization_id:
                return None
            ended = ref.outcome is not None
            if ended and (ref.ended_at or 0.0) + window_seconds < now:
                raise ResultRefused(
                    "result_window_closed",
                    f"The call ended more than {window_seconds / 60:g} minutes ago; its result "
                    "can no longer be taken",
                )
            count = conn.execute(Q()["count_results_for_attempt"], where).fetchone()[0]
            if count >= most_per_attempt:
                raise ResultRefused(
                    "too_many_results", f"This call has {count} results already (at most)"
                )
            values = {
                **where,
                "org": ref.organization_id,
                "job_id": ref.job_id,
                "disposition": new.disposition,
                "callback_at": new.callback_at,
                "summary": new.summary,
                "data": new.data_json,
                "source": new.source,
                "now": now,
            }
            result_id = conn.execute(Q()["insert_result"], values).lastrowid
            assert result_id is not None
            conn.execute(Q()["show_result_on_contact"], values)
            if ended:
                dialing.apply_result(conn, new.contact_id, new.attempt_no, result_id, now, rules)
            history = _results(conn, "results_for_attempt", where)
            status = conn.execute(Q()["contact_status"], where).fetchone()[0]
            return ResultRecorded(history[-1], status, ended)

        return await self._write(tx)

    async def results_for_attempt(self, contact_id: int, attempt_no: int) -> list[ResultRow]:
        """Every result posted for one attempt, oldest first."""
        params = {"contact_id": contact_id, "attempt_no": attempt_no}
        return await self._read_small(lambda conn: _results(conn, "results_for_attempt", params))

    async def results_since(self, job_id: str, after_id: int, limit: int) -> list[ResultRow]:
        """A job's results after result `after_id`, oldest first (the live events)."""
        params = {"job_id": job_id, "after_id": after_id, "limit": limit}
        return await self._read_small(lambda conn: _results(conn, "results_since", params))

    async def last_result_id(self, job_id: str) -> int:
        params = {"job_id": job_id}
        return await self._read_small(
            lambda conn: int(conn.execute(Q()["last_result_id"], params).fetchone()[0])
        )

    # ------------------------------------------------------------- do-not-call

    async def canonical_phones(self, canonical: Callable[[str], str | None]) -> tuple[int, int]:
        """The chore of migration 0016, once: contacts still to be dialed take the spelling
        `canonical` gives their number, and listed numbers are listed under it too (the old
        spelling stays listed). Returns (contacts respelled, listings added); (0, 0) once done."""

        def tx(conn: sqlite3.Connection) -> tuple[int, int]:
            name = {"name": "canonical_phones"}
            if conn.execute(Q()["chore_pending"], name).fetchone() is None:
                return 0, 0
            respelled = listed = 0
            for contact_id, phone in conn.execute(Q()["open_phones_outside_nanp"]).fetchall():
                new = canonical(phone)
                if new is not None and new != phone:
                    conn.execute(Q()["set_contact_phone"], {"id": contact_id, "phone": new})
                    respelled += 1
            for org, number, reason, source, added_at in conn.execute(
                Q()["listed_outside_nanp"]
            ).fetchall():
                new = canonical(number)
                if new is not None and new != number:
                    also = {"org": org, "number": new, "reason": reason}
                    also |= {"source": source, "added_at": added_at}
                    listed += conn.execute(Q()["list_also_as"], also).rowcount
            conn.execute(Q()["chore_done"], name)
            return respelled, listed

        return await self._write(tx)

    async def dnc_add(
        self,
        organization_id: str,
        numbers: Sequence[str],
        reason: str | None,
        source: str,
        now: float,
    ) -> tuple[int, list[str]]:
        """List numbers (E.164) for the organization; their open contacts in every job of it are
        cancelled (do_not_call) in the same transaction. Returns (newly listed, jobs touched)."""
        params = {
            "org": organization_id,
            "numbers": json.dumps(list(dict.fromkeys(numbers))),
            "reason": reason,
            "source": source,
            "now": now,
        }

        def tx(conn: sqlite3.Connection) -> tuple[int, list[str]]:
            added = len(conn.execute(Q()["dnc_add"], params).fetchall())
            jobs = {r[0] for r in conn.execute(Q()["dnc_cancel_contacts"], params)}
            return added, sorted(jobs)

        return await self._write(tx)

    async def dnc_remove(self, organization_id: str, number: str) -> bool:
        params = {"org": organization_id, "number": number}
        return await self._write(lambda conn: conn.execute(Q()["dnc_remove"], params).rowcount == 1)

    async def dnc_page(
        self, organization_id: str, number: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the organization's list (by number) and the total matching."""
        params = {"org": organization_id, "number": number, "limit": limit, "offset": offset}

        def q(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int]:
            rows: list[dict[str, Any]] = json.loads(
                conn.execute(Q()["dnc_page"], params).fetchone()[0] or "[]"
            )
            return rows, int(conn.execute(Q()["dnc_count"], params).fetchone()[0])

        return await self._read(q)

    # ------------------------------------------------------------- call records

    async def call_records(
        self,
        organization_id: str,
        start: float,
        end: float,
        after: tuple[float, int],
        limit: int,
    ) -> list[list[Any]]:
        """Attempts of the organization started in [start, end), in start order, after the
        keyset `after` (started_at, id): rows in dialer.export.CALL_COLUMNS order."""
        params = {
            "org": organization_id,
            "from": start,
            "to": end,
            "after_started": after[0],
            "after_id": after[1],
            "limit": limit,
        }
        return await self._read(lambda conn: _json_rows(conn, "call_records_page", params))

    async def contacts_ready(self, now: float, most_per_job: int) -> dict[str, int]:
        """Organization -> contacts ready to dial in its running jobs (pending, or queued
        with their retry due), the due retries counted up to `most_per_job` per job."""
        params = {"now": now, "most": most_per_job}
        return await self._read_small(
            lambda conn: {
                org: int(n) for org, n in conn.execute(Q()["contacts_ready"], params).fetchall()
            }
        )

    # ------------------------------------------------------------- api keys

    async def insert_api_key(self, key: ApiKeyRow) -> None:
        await self._write(
            lambda conn: conn.execute(
                Q()["insert_api_key"],
                (key.id, key.organization_id, key.key_hash, key.prefix, key.name, key.created_at),
            )
        )

    async def find_api_key(self, key_hash: str) -> ApiKeyRow | None:
        def q(conn: sqlite3.Connection) -> ApiKeyRow | None:
            row = conn.execute(Q()["find_api_key"], (key_hash,)).fetchone()
            return ApiKeyRow(**dict(row)) if row else None

        return await self._read_small(q)

    async def list_api_keys(self, organization_id: str | None) -> list[ApiKeyRow]:
        return await self._read(
            lambda conn: [
                ApiKeyRow(**dict(r))
                for r in conn.execute(Q()["list_api_keys"], {"org": organization_id})
            ]
        )

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        return await self._write(
            lambda conn: conn.execute(Q()["revoke_api_key"], (now, key_id)).rowcount == 1
        )

    # ------------------------------------------------------------- webhooks

    async def insert_webhook_endpoint(
        self, endpoint: WebhookEndpointRow, limit: int = WEBHOOK_ENDPOINT_SLOTS
    ) -> bool:
        """Add the endpoint unless its organization has `limit` endpoints already (False: not
        added). Counted and inserted in one statement of one write transaction, so requests at
        once never pass the limit; `limit` is at most WEBHOOK_ENDPOINT_SLOTS."""
        if not 0 <= limit <= WEBHOOK_ENDPOINT_SLOTS:
            raise ValueError(f"at most {WEBHOOK_ENDPOINT_SLOTS} endpoints per organization")
        params = {
            "id": endpoint.id,
            "org": endpoint.organization_id,
            "url": endpoint.url,
            "events": None if endpoint.events is None else json.dumps(list(endpoint.events)),
            "description": endpoint.description,
            "secret": endpoint.secret,
            "now": endpoint.created_at,
            "limit": limit,
        }
        return await self._write(
            lambda conn: conn.execute(Q()["insert_webhook_endpoint"], params).rowcount == 1
        )

    async def list_webhook_endpoints(self, organization_id: str) -> list[WebhookEndpointRow]:
        return await self._read_small(
            lambda conn: [
                WebhookEndpointRow.from_row(r)
                for r in conn.execute(Q()["list_webhook_endpoints"], (organization_id,))
            ]
        )

    async def delete_webhook_endpoint(self, organization_id: str, endpoint_id: str) -> bool:
        """Remove an endpoint and its deliveries; False when the organization has no such one."""

        def tx(conn: sqlite3.Connection) -> bool:
            params = (endpoint_id, organization_id)
            conn.execute(Q()["delete_webhook_endpoint_deliveries"], params)
            return bool(conn.execute(Q()["delete_webhook_endpoint"], params).rowcount == 1)

        deleted = await self._write(tx)
        if deleted:
            self._webhook_seen.pop(endpoint_id, None)
        return deleted

    async def take_webhook_deliveries(
        self, free: Mapping[str, int], busy: Mapping[str, Sequence[int]], now: float
    ) -> tuple[list[DueDelivery], float | None]:
        """For each endpoint, up to `free[endpoint]` deliveries to send now (oldest due first,
        not in flight: `busy`), with what they send; and when the earliest other one is due
        (None: none is waiting on time).

        Deliveries not taken before are taken in one write, an endpoint's next
        WEBHOOK_TAKE_AHEAD at a time (so that a busy endpoint does not cost a write per send):
        their organizations' events up to them get their sequence, they get their rows, and the
        endpoints' taken_through moves past them. The reads run on a reader's thread, never on
        the event loop.
        """
        wanted = {e: n for e, n in free.items() if n > 0}
        if not wanted:  # every slot taken: a send ending wakes the sender anyway
            return [], None

        seen = dict(self._webhook_seen)

        def pick(
            conn: sqlite3.Connection,
        ) -> tuple[list[WebhookPick], list[WebhookPick], dict[int, list[Any]], float | None]:
            picks: list[WebhookPick] = []
            ahead: list[WebhookPick] = []  # to take: each endpoint's next ones, in order
            earliest: float | None = None
            last_change = conn.execute(Q()["last_webhook_change"]).fetchone()[0]
            for endpoint_id, limit in wanted.items():
                taken = list(busy.get(endpoint_id, ()))
                params = {"endpoint_id": endpoint_id, "now": now, "limit": limit}
                params["busy"] = json.dumps(taken)
                params["seen"] = seen.get(endpoint_id, 0)
                due = [
                    WebhookPick(v[0], v[1], endpoint_id, v[2], v[3], taken=True)
                    for v in _json_rows(conn, "webhook_due_deliveries", params)
                ]
                params["limit"] = max(limit, WEBHOOK_TAKE_AHEAD)
                new = [
                    WebhookPick(v[0], v[1], endpoint_id, v[2], v[3], taken=False)
                    for v in _json_rows(conn, "webhook_next_untaken", params)
                ]
                if not new:
                    seen[endpoint_id] = last_change  # none to take up to there
                mine = _oldest_due_first(list(due), list(new), limit)
                picks.extend(mine)
                if not all(p.taken for p in mine):
                    ahead.extend(new)
                params["busy"] = json.dumps(taken + [p.id for p in mine if p.taken])
                at = conn.execute(Q()["webhook_next_due"], params).fetchone()[0]
                if at is not None and (earliest is None or at < earliest):
                    earliest = at
            return picks, ahead, _payloads(conn, [p for p in picks if p.taken]), earliest

        picks, ahead, sent, earliest = await self._read_aside(pick)
        self._webhook_seen.update((e, seen[e]) for e in wanted if e in seen)
        if ahead:
            await self._write(lambda conn: _take(conn, ahead))
            new = [p for p in picks if not p.taken]
            sent.update(await self._read_aside(lambda conn: _payloads(conn, new)))
        due = [
            DueDelivery(p.id, p.endpoint_id, p.attempts, *sent[p.event_id][1:])
            for p in picks
            if p.event_id in sent
        ]
        return due, earliest

    async def webhook_sender_endpoints(self) -> dict[str, tuple[str, str]]:
        """{endpoint id: (url, secret)} of every organization's endpoints."""
        return await self._read_small(
            lambda conn: {
                r["id"]: (r["url"], r["secret"])
                for r in conn.execute(Q()["webhook_sender_endpoints"])
            }
        )

    async def record_webhook_attempts(self, attempts: Sequence[DeliveryAttempt]) -> int:
        """Write the sends of a round in one transaction; return the deliveries updated."""
        results = json.dumps(
            [
                [
                    a.delivery_id,
                    a.attempts_before,
                    a.status,
                    a.next_attempt_at,
                    a.http_status,
                    a.error,
                    a.attempted_at,
                ]
                for a in attempts
            ]
        )
        return await self._write(
            lambda conn: conn.execute(Q()["record_webhook_attempts"], {"results": results}).rowcount
        )

    async def prune_webhooks(self, before: float, limit: int = 1000) -> int:
        """Forget up to `limit` of the oldest webhook events made before `before` that no
        delivery needs any more (every endpoint took them; each delivery was delivered or failed
        for good), with their deliveries; return how many changes went (each makes one or two
        events). A pending delivery, taken or not, is never removed. They are looked for on a
        reader (the look may read many old changes an endpoint has not taken); the write checks
        those again and deletes them."""

        def prunable(conn: sqlite3.Connection, among: list[int] | None) -> list[int]:
            params = {
                "before": before,
                "limit": limit,
                "ids": None if among is None else json.dumps(among),
            }
            found: list[int] = json.loads(
                conn.execute(Q()["prunable_webhook_changes"], params).fetchone()[0]
            )
            return found

        picked = await self._read_aside(lambda conn: prunable(conn, None))
        if not picked:
            return 0

        def tx(conn: sqlite3.Connection) -> int:
            ids = prunable(conn, picked)
            if not ids:
                return 0
            text = json.dumps(ids)
            span = {"ids": text, "lo": ids[0] * 64, "hi": ids[-1] * 64 + 63}
            conn.execute(Q()["prune_webhook_deliveries"], span)
            conn.execute(Q()["prune_webhook_changes"], {"ids": text})
            return len(ids)

        return await self._write(tx)

    async def list_webhook_deliveries(
        self,
        organization_id: str,
        endpoint_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[WebhookDeliveryRow], int]:
        params = {
            "org": organization_id,
            "endpoint_id": endpoint_id,
            "status": status,
            "limit": limit,
            "offset": offset,
        }

        def q(conn: sqlite3.Connection) -> tuple[list[WebhookDeliveryRow], int]:
            rows = [
                WebhookDeliveryRow(**dict(r))
                for r in conn.execute(Q()["list_webhook_deliveries"], params)
            ]
            return rows, int(conn.execute(Q()["count_webhook_deliveries"], params).fetchone()[0])

        return await self._read(q)  # O(pending) for the untaken ones: off the loop

    async def get_webhook_delivery(
        self, organization_id: str, delivery_id: int
    ) -> WebhookDeliveryRow | None:
        def q(conn: sqlite3.Connection) -> WebhookDeliveryRow | None:
            params = {"id": delivery_id, "org": organization_id}
            row = conn.execute(Q()["get_webhook_delivery"], params).fetchone()
            return WebhookDeliveryRow(**dict(row)) if row else None

        return await self._read_small(q)

    async def replay_webhook_delivery(
        self, organization_id: str, delivery_id: int, now: float
    ) -> bool:
        """Make a failed delivery due now; False when it is not the organization's or not
        failed."""
        params = {"id": delivery_id, "org": organization_id, "now": now}
        return await self._write(
            lambda conn: conn.execute(Q()["replay_webhook_delivery"], params).rowcount == 1
        )


# Contacts inserted by one statement of a create.
INSERT_CHUNK = 1000

# Deliveries not taken yet that the webhook sender takes for an endpoint at once (see
# Store.take_webhook_deliveries).
WEBHOOK_TAKE_AHEAD = 32

CONTACT_STATUSES = (
    "pending",
    "queued",
    "dialing",
    "completed",
    "no_answer",
    "busy",
    "timeout",
    "blocked",
    "invalid_number",
    "carrier_error",
    "failed",
    "cancelled",
)


def _contact_json(contact: NewContact) -> str:
    """[phone, data, zones, next_call_at, call_until, status, failure reason] as JSON text
    (data encoded once: intake hands it over as text)."""
    data = contact.data
    encoded = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    rest = json.dumps(
        [
            contact.zones,
            contact.next_call_at,
            contact.call_until,
            contact.status,
            contact.failure_reason,
        ]
    )
    return f"[{json.dumps(contact.phone)},{encoded},{rest[1:]}"


def _payloads(conn: sqlite3.Connection, picks: Sequence[WebhookPick]) -> dict[int, list[Any]]:
    """{event id: [event id, webhook id, type, sequence, created_at, data]} of these picks."""
    if not picks:
        return {}
    events = json.dumps(sorted({p.event_id for p in picks}))
    return {v[0]: v for v in _json_rows(conn, "webhook_payloads", {"events": events})}


def _oldest_due_first(
    due: list[WebhookPick], new: list[WebhookPick], limit: int
) -> list[WebhookPick]:
    """Up to `limit` of an endpoint's due taken deliveries and its next ones not taken, oldest
    due first; of the latter always the first ones (an endpoint takes its events in order)."""
    picked: list[WebhookPick] = []
    while len(picked) < limit and (due or new):
        if not new or (due and (due[0].due, due[0].id) <= (new[0].due, new[0].id)):
            picked.append(due.pop(0))
        else:
            picked.append(new.pop(0))
    return picked


def _take(conn: sqlite3.Connection, picks: Sequence[WebhookPick]) -> None:
    """Take deliveries not taken yet (each its endpoint's next ones, in event order): number the
    events of their organizations up to them, write their rows, move the endpoints past them."""
    upto: dict[str, int] = {}
    for row in conn.execute(
        Q()["webhook_changes_organizations"], (json.dumps([p.event_id >> 1 for p in picks]),)
    ):
        upto[row[0]] = max(upto.get(row[0], 0), row[1])
    for org, change in upto.items():
        state = conn.execute(Q()["webhook_sequence_state"], (org,)).fetchone()
        last, through = (state[0], state[1]) if state is not None else (0, 0)
        if change <= through:
            continue
        params = {"org": org, "last": last, "through": through, "upto": change}
        conn.execute(Q()["number_webhook_changes"], params)
        conn.execute(Q()["save_webhook_sequence_state"], params)
    taken = [[p.id, p.event_id, p.endpoint_id, p.due] for p in picks]
    conn.execute(Q()["take_webhook_deliveries"], {"taken": json.dumps(taken)})
    taken_through: dict[str, int] = {}
    for p in picks:
        taken_through[p.endpoint_id] = max(taken_through.get(p.endpoint_id, 0), p.event_id)
    conn.execute(Q()["advance_webhook_taken"], {"through": json.dumps(list(taken_through.items()))})


def _json_rows(conn: sqlite3.Connection, query: str, params: Any) -> list[list[Any]]:
    """The rows of a query that answers one JSON array of arrays (one step, one GIL handoff)."""
    text = conn.execute(Q()[query], params).fetchone()[0]
    rows: list[list[Any]] = json.loads(text) if text else []
    return rows


def _results(conn: sqlite3.Connection, query: str, params: Any) -> list[ResultRow]:
    return [ResultRow.from_values(v) for v in _json_rows(conn, query, params)]


def _contact_page(conn: sqlite3.Connection, params: dict[str, Any]) -> list[ContactRow]:
    """A page of a job's contacts in upload order, of one status when params["status"]."""
    query = "list_contacts" if params["status"] is None else "list_contacts_in_status"
    return [ContactRow.from_values(v) for v in _json_rows(conn, query, params)]


def _batch_summaries(conn: sqlite3.Connection, jobs: list[JobRow]) -> list[BatchSummary]:
    """Each job with its counts, contacts dialed and retries, in the order given."""
    ids = json.dumps([j.id for j in jobs])
    stats = {
        job_id: (int(dispatched), int(retries), float(last or 0))
        for job_id, dispatched, retries, last in _json_rows(conn, "batch_call_stats", {"ids": ids})
    }
    return [
        BatchSummary(job, _counts(conn, job.id), *stats.get(job.id, (0, 0, 0.0))) for job in jobs
    ]


def _save_copy(conn: sqlite3.Connection, path: str) -> str:
    """Copy the database `conn` has open (its write-ahead log included) to a new file beside
    `path`, `<path>.saved-<UTC time>` (owner-only); return its path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = f"{path}.saved-{stamp}"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    copy = sqlite3.connect(target)
    try:
        conn.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")  # one file, whole, to put in its place
    except BaseException:
        copy.close()
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    copy.close()
    return target


def _open_wal(path: str) -> int | None:
    """A descriptor of the database's -wal file to flush, or None when it cannot be opened."""
    try:
        return os.open(path + "-wal", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def flush_file(fd: int) -> None:
    """Flush the file's data (and the size needed to read it) to the disk."""
    getattr(os, "fdatasync", os.fsync)(fd)


def _roll_back(conn: sqlite3.Connection) -> None:
    """End a failed transaction; the failure that ended it is what the caller reports."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _fresh_until(found: JobDetailRow | None) -> float:
    return math.inf if found is None else found.fresh_until


def _detail_size(found: JobDetailRow | None) -> int:
    return 0 if found is None else len(found.contacts_json)


def _counts(conn: sqlite3.Connection, job_id: str) -> dict[str, int]:
    """A job's contact status counts."""
    text = conn.execute(Q()["job_status_counts"], (job_id,)).fetchone()[0]
    counts: dict[str, int] = json.loads(text) if text else {}
    return counts


def _keep_idempotency(
    conn: sqlite3.Connection, job: NewJob, record: IdempotencyRecord, response: str
) -> None:
    params = {"org": job.organization_id, "key": record.key, "since": record.since}
    row = conn.execute(Q()["find_idempotency_key"], params).fetchone()
    if row is not None:
        raise IdempotencyReplay(row[0], row[1])
    conn.execute(Q()["forget_old_idempotency_keys"], params)
    conn.execute(
        Q()["insert_idempotency_key"],
        {
            **params,
            "fingerprint": record.fingerprint,
            "job_id": job.id,
            "response": response,
            "now": job.created_at,
        },
    )


def _check_limits(
    conn: sqlite3.Connection, job: NewJob, contacts: int, limits: CreateLimits
) -> None:
    committed, active, stored = conn.execute(
        Q()["organization_commitments"], {"org": job.organization_id}
    ).fetchone()
    if limits.max_active_jobs is not None and active + 1 > limits.max_active_jobs:
        raise LimitExceeded("max_active_jobs", max(0, limits.max_active_jobs - active))
    if limits.max_stored_contacts is not None and stored + contacts > limits.max_stored_contacts:
        raise LimitExceeded("max_stored_contacts", max(0, limits.max_stored_contacts - stored))
    # A cent of tolerance: estimates are rounded to cents, spend is not.
    if limits.credits_usd is not None and committed + job.estimated_cost_usd > (
        limits.credits_usd + 0.005
    ):
        raise LimitExceeded("credits_usd", max(0.0, limits.credits_usd - committed))


def _changed_and_status(
    conn: sqlite3.Connection, query: str, params: dict[str, Any]
) -> tuple[bool, str | None]:
    """Run a job's status change; return whether it changed the job, and the job's status
    after it, read in the same transaction."""
    changed = conn.execute(Q()[query], params).rowcount == 1
    row = conn.execute(Q()["job_status"], {"id": params["id"], "org": params["org"]}).fetchone()
    return changed, None if row is None else str(row[0])
