"""SQLite connections, pragmas, named queries and migrations."""

from __future__ import annotations

import re
import sqlite3
import time
from functools import cache
from importlib import resources

PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",  # connection.Connection sets its own
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -65536",
)

_BLOCK = re.compile(r"^-- ([a-z0-9_]+) --$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class StorageError(Exception):
    """A storage operation failed."""


class TransitionError(StorageError):
    """A state transition was asked from a state that does not allow it."""


class JobExpiredError(TransitionError):
    """The job's expiresAt has passed: its contacts keep the outcomes they ended with."""


# Two processes opening a new database at once (`dialer serve` and `dialer keys create`): while
# one switches the file to WAL, SQLite answers the other's switch SQLITE_BUSY at once, without
# its busy handler (seen in 7 of 300 such opens). The pragmas are tried again for this long.
PRAGMA_RETRY_SECONDS = 5.0
PRAGMA_RETRY_PAUSE = 0.01


def retry_pragma(exc: sqlite3.Error, deadline: float) -> bool:
    """Whether a pragma that failed with `exc` is worth trying again (the database is locked
    and the deadline, a `time.monotonic()` time, has not passed)."""
    return (
        isinstance(exc, sqlite3.OperationalError)
        and "locked" in str(exc)
        and time.monotonic() < deadline
    )


def connect(path: str) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit) with the pragmas set."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    deadline = time.monotonic() + PRAGMA_RETRY_SECONDS
    for pragma in PRAGMAS:
        while True:
            try:
                db.execute(pragma)
                break
            except sqlite3.Error as exc:
                if not retry_pragma(exc, deadline):
                    db.close()
                    raise
                time.sleep(PRAGMA_RETRY_PAUSE)
    return db


def parse_queries(text: str) -> dict[str, str]:
    """Split a `.sql` file of `-- name --` blocks into {name: statement}."""
    parts = _BLOCK.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        statement = "\n".join(
            line for line in body.strip().splitlines() if not line.lstrip().startswith("--")
        ).strip()
        if name in queries:
            raise StorageError(f"query {name!r} is defined twice")
        queries[name] = statement
    return queries


@cache
def queries() -> dict[str, str]:
    """The named queries of storage/queries.sql."""
    return parse_queries(resources.files("storage").joinpath("queries.sql").read_text("utf-8"))


def migrations() -> list[tuple[int, str]]:
    """Numbered migrations in order: [(version, sql)]."""
    found: list[tuple[int, str]] = []
    for entry in resources.files("storage").joinpath("migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text("utf-8")))
    return sorted(found)


def migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations the database has not seen yet; return the schema version. A database
    at a version this code does not know is refused unless it says this code may run on it
    (see _check_newer).

    Each one is applied under the write lock, after reading the version again under it: two
    processes starting on a new database at once (`dialer serve` and `dialer keys create`,
    say) apply each migration once between them, never twice."""
    known = migrations()
    current = int(db.execute("PRAGMA user_version").fetchone()[0])
    newest = known[-1][0] if known else 0
    if current > newest:
        _check_newer(db, current, newest)
    for version, sql in known:
        if version <= current:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            current = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version <= current:  # applied meanwhile by another connection
                db.execute("COMMIT")
                continue
            for statement in _split_script(sql):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        current = version
    return current


def _check_newer(db: sqlite3.Connection, current: int, newest: int) -> None:
    """A database at a version this code does not know (a newer version wrote it): go on only
    if that version says code knowing `newest` migrations may still run on it (the
    schema_compat row, see migration 0015); else refuse, naming what to do."""
    try:
        row = db.execute("SELECT oldest_code FROM schema_compat WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # no such table: not written by this project's code
        row = None
    if row is None or int(row[0]) > newest:
        raise StorageError(
            f"the database is at schema version {current}, written by a newer version of the "
            f"dialer that this one (schema {newest}) cannot run on; run the newer version, or "
            "a copy of the database made before the upgrade"
        )


def _split_script(sql: str) -> list[str]:
    """Split a migration into statements (triggers contain `;` so use sqlite's own completeness)."""
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()
    ):
        raise StorageError("migration ends with an incomplete statement")
    return statements
