"""Connections to the database: aiosqlite connections, each on its own thread, and the
writer/reader split.

One writer connection takes every write, one transaction at a time (group commit: a scheduler
cycle's outcomes and claims are one transaction). Two reader connections serve the API: one for
small reads (a job, a page), one for big ones (exports, whole-job documents), so a small read
never queues behind a big one. WAL lets readers run while the writer works.

A transaction is a plain function of the sqlite3 connection, run whole on the connection's own
thread: one hop off the event loop, not one per statement. Every sqlite3 error that means the
storage itself failed (locked past the busy timeout, disk full, I/O error, read-only, not a
database) is raised as `StorageUnavailable`, which callers survive; a constraint or programming
error is a bug and is raised as it is.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

from storage.db import PRAGMA_RETRY_PAUSE, PRAGMA_RETRY_SECONDS, PRAGMAS, StorageError, retry_pragma

T = TypeVar("T")

# How long a write may wait for the database lock (SQLite's busy timeout), counted from when it
# was asked for: a write that queued behind another one gets only what is left.
BUSY_TIMEOUT_SECONDS = 5.0


class StorageUnavailable(StorageError):
    """The database cannot be written (or read) right now: locked, full, read-only, failing."""


def storage_failure(exc: sqlite3.Error) -> bool:
    """Whether a sqlite3 error means the storage failed (not a bug in a statement)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return False
    return isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError)


def make_private_dirs(directory: Path) -> None:
    """Make a directory and each missing parent readable by its owner only (0700). (`mkdir`
    with `parents=True` gives its mode to the last one only: the parents it made were 0755.)"""
    missing = []
    for part in (directory, *directory.parents):
        if part.exists():
            break
        missing.append(part)
    for part in reversed(missing):
        part.mkdir(mode=0o700, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # (the errors of a path as mkdir's)


def create_private(path: str) -> None:
    """Create the database file readable by its owner only (SQLite gives its -wal and -shm the
    same mode), or tighten an existing one."""
    if path == ":memory:" or path.startswith("file:"):
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Connection:
    """One aiosqlite connection (its own thread) that runs whole transactions."""

    def __init__(self, conn: aiosqlite.Connection, name: str, busy_timeout: float) -> None:
        self._conn = conn
        self.name = name
        self.busy_timeout = busy_timeout
        self._full_busy_ms = self._busy_ms = int(busy_timeout * 1000)

    @classmethod
    async def open(
        cls, path: str, name: str, busy_timeout: float = BUSY_TIMEOUT_SECONDS
    ) -> Connection:
        conn = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            deadline = time.monotonic() + PRAGMA_RETRY_SECONDS
            for pragma in PRAGMAS:
                while True:
                    try:
                        await conn.execute(pragma)
                        break
                    except sqlite3.Error as exc:
                        if not retry_pragma(exc, deadline):
                            raise
                        await asyncio.sleep(PRAGMA_RETRY_PAUSE)
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        except BaseException:
            await conn.close()
            raise
        return cls(conn, name, busy_timeout)

    async def close(self) -> None:
        await self._conn.close()

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(sqlite3 connection) on this connection's thread, storage errors translated."""
        try:
            # aiosqlite queues a callable for its connection thread with `_execute` (its own
            # cursor and statement methods are built on it); a whole transaction is one hop.
            result: T = await self._conn._execute(fn, self._conn._conn)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:
            if storage_failure(exc):
                raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn as one IMMEDIATE transaction. It waits for the database lock at most
        `busy_timeout` seconds from now, queueing behind other writes included."""
        deadline = time.monotonic() + self.busy_timeout
        full = self._full_busy_ms

        def tx(conn: sqlite3.Connection) -> T:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                raise sqlite3.OperationalError("database is locked (the write waited too long)")
            # Only a write that queued for a while gets a shorter wait (a pragma per write
            # would cost more than it is worth).
            wanted = left_ms if left_ms < full * 0.95 else full
            if wanted != self._busy_ms:
                conn.execute(f"PRAGMA busy_timeout = {wanted}")
                self._busy_ms = wanted
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return await self.call(tx)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn in one read transaction: a consistent snapshot."""

        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await self.call(tx)
