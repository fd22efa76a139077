"""SQLite plumbing: named queries, numbered migrations, pragmas."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage import connection
from storage import db as dbmod
from storage.rows import ContactRow
from storage.store import Store

TABLES = {"jobs", "contacts", "attempts", "job_status_counts", "organization_spend", "api_keys"}
TRIGGERS = {"contacts_count_insert", "contacts_count_update"}
STORE_SOURCE = Path(dbmod.__file__).with_name("store.py")


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    """A fresh in-memory database with the pragmas set and no schema."""
    connection = dbmod.connect(":memory:")
    yield connection
    connection.close()


def schema(connection: sqlite3.Connection) -> list[tuple[str, str, str | None]]:
    """Every schema object: (type, name, sql), sorted."""
    rows = connection.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
    return [tuple(r) for r in rows]


def names(connection: sqlite3.Connection, kind: str) -> set[str]:
    """Names of the schema objects of one kind (table, trigger, index)."""
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))
    return {r[0] for r in rows}


# ------------------------------------------------------------------ parse_queries


def test_parse_queries_splits_named_blocks() -> None:
    """Each `-- name --` line starts a statement that runs until the next block."""
    text = "-- a file comment\n\n-- first --\nSELECT 1\n\n-- second_q --\nUPDATE t\nSET x = 1\n"
    assert dbmod.parse_queries(text) == {"first": "SELECT 1", "second_q": "UPDATE t\nSET x = 1"}


def test_parse_queries_drops_comment_lines_inside_blocks() -> None:
    """Comment lines in a block are documentation, not part of the statement."""
    text = "-- q --\n-- explains the query\nSELECT 1\n  -- indented note\nFROM t\n"
    assert dbmod.parse_queries(text) == {"q": "SELECT 1\nFROM t"}


def test_parse_queries_rejects_a_name_defined_twice() -> None:
    """Two blocks with one name are an error, not a silent override."""
    with pytest.raises(dbmod.StorageError, match="'q' is defined twice"):
        dbmod.parse_queries("-- q --\nSELECT 1\n-- q --\nSELECT 2\n")


def test_parse_queries_of_text_without_blocks_is_empty() -> None:
    """A file of only comments defines no query."""
    assert dbmod.parse_queries("-- just a comment\n") == {}


def test_every_named_query_compiles_against_the_schema(conn: sqlite3.Connection) -> None:
    """Each query in queries.sql is valid SQL for the migrated schema (tables, columns exist)."""
    dbmod.migrate(conn)
    queries = dbmod.queries()
    assert queries
    conn.execute(queries["create_outcome_batch"])  # the writer's temp tables
    conn.execute(queries["create_claim_batch"])
    for name, sql in queries.items():
        assert sql, name
        named = set(re.findall(r"(?<!:):([a-z_]+)", sql))
        params: dict[str, None] | tuple[None, ...] = (
            dict.fromkeys(named) if named else (None,) * sql.count("?")
        )
        try:
            conn.execute("EXPLAIN " + sql, params)
        except sqlite3.Error as exc:
            pytest.fail(f"query {name!r} does not compile: {exc}")


def test_every_query_the_store_uses_exists() -> None:
    """store.py only asks for query names that queries.sql defines."""
    used = set(re.findall(r'Q\(\)\["([a-z0-9_]+)"\]', STORE_SOURCE.read_text("utf-8")))
    assert used
    assert used - set(dbmod.queries()) == set()


# ------------------------------------------------------------------ migrations


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    """Migration files are numbered 0001, 0002, ... with no gap and no number twice: a database
    at version N has every migration up to N."""
    versions = [v for v, _ in dbmod.migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_migrate_fresh_db_creates_tables_and_triggers(conn: sqlite3.Connection) -> None:
    """A fresh database gets every table and the status-count triggers, at the latest version."""
    version = dbmod.migrate(conn)
    assert version == dbmod.migrations()[-1][0]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    assert names(conn, "table") >= TABLES
    assert names(conn, "trigger") >= TRIGGERS


def test_migrate_twice_is_a_no_op(conn: sqlite3.Connection) -> None:
    """Running migrate again changes nothing and reports the same version."""
    first = dbmod.migrate(conn)
    before = schema(conn)
    assert dbmod.migrate(conn) == first
    assert schema(conn) == before


def test_a_migration_applied_meanwhile_by_another_process_is_not_applied_again(
    tmp_path: Path,
) -> None:
    """Two processes starting on a new database at once both read version 0 before either
    applies anything: the one that gets the write lock second reads the version again under it
    and applies nothing twice (it failed with "duplicate column name" before)."""
    path = str(tmp_path / "race.db")
    first, second = dbmod.connect(path), dbmod.connect(path)

    class StaleFirstRead:
        """The second process's connection, whose first version read happened before the
        first process migrated."""

        def __init__(self) -> None:
            self.stale = True

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if self.stale and sql == "PRAGMA user_version":
                self.stale = False
                return second.execute("SELECT 0")
            return second.execute(sql, *args)

    latest = dbmod.migrate(first)
    before = schema(first)
    assert dbmod.migrate(StaleFirstRead()) == latest  # type: ignore[arg-type]
    assert schema(second) == before
    first.close()
    second.close()


def _written_by_a_newer_version(conn: sqlite3.Connection, oldest_code: int | None) -> int:
    """The database as a later version leaves it: its schema version one past this code's,
    and its schema_compat row saying which code may still run on it (None: the row is gone)."""
    newest = dbmod.migrate(conn)
    conn.execute(f"PRAGMA user_version = {newest + 1}")
    if oldest_code is None:
        conn.execute("DELETE FROM schema_compat")
    else:
        conn.execute("UPDATE schema_compat SET oldest_code = ?", (oldest_code,))
    return newest


@pytest.mark.parametrize("offset", [0, -1])
def test_a_newer_schema_that_allows_this_code_runs(conn: sqlite3.Connection, offset: int) -> None:
    """A newer version whose migrations this code can still run on (it says so) is let be:
    nothing is applied, its version is kept."""
    newest = _written_by_a_newer_version(conn, dbmod.migrations()[-1][0] + offset)
    before = schema(conn)
    assert dbmod.migrate(conn) == newest + 1
    assert schema(conn) == before


@pytest.mark.parametrize("offset", [1, None])
def test_a_newer_schema_this_code_would_misread_is_refused(
    conn: sqlite3.Connection, offset: int | None
) -> None:
    """A database a newer version changed in a way older code would misread (its schema_compat
    asks for newer code, or says nothing) is refused with what to do, and left as it was."""
    newest = dbmod.migrations()[-1][0]
    _written_by_a_newer_version(conn, None if offset is None else newest + offset)
    before = schema(conn)
    with pytest.raises(dbmod.StorageError, match="written by a newer version of the dialer"):
        dbmod.migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == newest + 1
    assert schema(conn) == before


def test_failed_migration_rolls_back_whole(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails half way leaves no trace and the version where it was."""
    steps = [
        (1, "CREATE TABLE a (x INTEGER);"),
        (2, "CREATE TABLE b (x INTEGER);\nCREATE TABLE oops (;\n"),
    ]
    monkeypatch.setattr(dbmod, "migrations", lambda: steps)
    with pytest.raises(sqlite3.OperationalError):
        dbmod.migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert names(conn, "table") == {"a"}


def test_migration_with_incomplete_statement_is_refused(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration whose last statement has no terminating ';' is an error, not half-applied."""
    monkeypatch.setattr(dbmod, "migrations", lambda: [(1, "CREATE TABLE a (x INTEGER)\n")])
    with pytest.raises(dbmod.StorageError, match="incomplete statement"):
        dbmod.migrate(conn)
    assert names(conn, "table") == set()


def test_status_count_triggers_follow_contact_changes(conn: sqlite3.Connection) -> None:
    """Inserting and updating contacts keeps job_status_counts exact, per job and status."""
    dbmod.migrate(conn)
    conn.execute(
        "INSERT INTO jobs (id, organization_id, name, status, agent_id, phone_number_id,"
        " concurrent_call_limit, max_attempts, retry_statuses, retry_delay_seconds, retry_backoff,"
        " created_at, updated_at, total_contacts) VALUES"
        " ('j', 'o', 'n', 'running', 'a', 'p', 1, 3, '[]', 300, 2, 0, 0, 2)"
    )
    insert = (
        "INSERT INTO contacts (job_id, seq, phone, contact_data, status, max_attempts, updated_at)"
    )
    conn.execute(insert + " VALUES ('j', 1, '+1', '{}', 'pending', 3, 0)")
    conn.execute(insert + " VALUES ('j', 2, '+2', '{}', 'pending', 3, 0)")
    conn.execute("UPDATE contacts SET status = 'dialing' WHERE seq = 1")
    conn.execute("UPDATE contacts SET status = 'dialing' WHERE seq = 1")  # no change: no count
    conn.execute("UPDATE contacts SET attempt_count = 1 WHERE seq = 1")  # not a status change
    counts = dict(
        conn.execute("SELECT status, n FROM job_status_counts WHERE job_id = 'j'").fetchall()
    )
    assert counts == {"pending": 1, "dialing": 1}


def test_connect_sets_wal_and_foreign_keys(tmp_path: Path) -> None:
    """A file database is opened in WAL mode with foreign keys enforced, in autocommit."""
    connection = dbmod.connect(str(tmp_path / "p.db"))
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert connection.isolation_level is None
        dbmod.migrate(connection)
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute(
                "INSERT INTO contacts (job_id, seq, phone, contact_data, status, max_attempts,"
                " updated_at) VALUES ('no_such_job', 1, '+1', '{}', 'pending', 3, 0)"
            )
    finally:
        connection.close()


def _json_array_columns(sql: str) -> list[str]:
    """The column names inside the first `json_array(...)` of a query, wrappers removed."""
    start = sql.index("json_array(") + len("json_array(")
    depth, end = 1, start
    while depth:
        depth += {"(": 1, ")": -1}.get(sql[end], 0)
        end += 1
    inner = re.sub(r"json\(([^()]*)\)", r"\1", sql[start : end - 1])
    return [part.strip().split(".")[-1] for part in inner.split(",")]


@pytest.mark.parametrize(
    ("query", "row_class", "extra"),
    [
        ("list_contacts", ContactRow, []),
        ("list_contacts_in_status", ContactRow, []),
        ("list_calls", ContactRow, ["started_at", "answered_at", "ended_at"]),
    ],
)
def test_json_rows_list_the_columns_of_their_row_class(
    query: str, row_class: type, extra: list[str]
) -> None:
    """Queries that answer JSON arrays list columns in the order their row class reads them."""
    fields = [f.name for f in dataclasses.fields(row_class)]
    assert _json_array_columns(dbmod.queries()[query]) == fields + extra


class _SwitchedMeanwhile(sqlite3.Connection):
    """A connection whose first switches to WAL find the file being switched by another process
    (SQLite answers SQLITE_BUSY at once then, without waiting for its busy timeout)."""

    refusals = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("PRAGMA journal_mode") and _SwitchedMeanwhile.refusals > 0:
            _SwitchedMeanwhile.refusals -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().execute(sql, *args)


@pytest.fixture
def switched_meanwhile(monkeypatch: pytest.MonkeyPatch) -> type[_SwitchedMeanwhile]:
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return real(*args, **kwargs, factory=_SwitchedMeanwhile)

    monkeypatch.setattr(sqlite3, "connect", connect)
    return _SwitchedMeanwhile


async def test_opening_a_database_another_process_switches_to_wal_waits_for_it(
    tmp_path: Path, switched_meanwhile: type[_SwitchedMeanwhile]
) -> None:
    """`dialer keys create` beside a starting `dialer serve` on a new database exited 2 with
    'database is locked' (the switch to WAL is not retried by SQLite's busy handler): each
    connection tries the pragmas again for a while."""
    path = str(tmp_path / "dialer.db")
    switched_meanwhile.refusals = 3
    db = dbmod.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    switched_meanwhile.refusals = 3
    store = await Store.open(path)
    await store.close()
    assert switched_meanwhile.refusals == 0


async def test_a_database_that_stays_locked_is_refused_after_the_retries(
    tmp_path: Path, switched_meanwhile: type[_SwitchedMeanwhile], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbmod, "PRAGMA_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(connection, "PRAGMA_RETRY_SECONDS", 0.05)
    switched_meanwhile.refusals = 1_000_000
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        dbmod.connect(str(tmp_path / "a.db"))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await connection.Connection.open(str(tmp_path / "b.db"), "writer")
