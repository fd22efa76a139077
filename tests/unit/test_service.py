"""dialer.service helpers: times written as ISO 8601."""

from __future__ import annotations

import sqlite3

import pytest

from dialer.service import iso

YEAR_1 = -62135596800.0  # 0001-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (YEAR_1, "0001-01-01T00:00:00Z"),
        (-30610224000.0, "1000-01-01T00:00:00Z"),
        (-30610224001.0, "0999-12-31T23:59:59Z"),
        (0.0, "1970-01-01T00:00:00Z"),
        (1_767_225_600.4, "2026-01-01T00:00:00Z"),
        (253402300799.0, "9999-12-31T23:59:59Z"),
    ],
)
def test_iso_always_writes_four_digit_years(ts: float, text: str) -> None:
    """Year 1 is 0001, as ISO 8601 and the webhooks' SQL write it, not 1."""
    assert iso(ts) == text


def test_iso_agrees_with_sqlite_strftime() -> None:
    """Python's and SQLite's renderings of the same times are the same text."""
    times = [YEAR_1, YEAR_1 + 86399.9996, -1.0005, 0.0, 1_767_225_599.9995, 253402300799.0]
    conn = sqlite3.connect(":memory:")
    try:
        for ts in times:
            (sql,) = conn.execute(
                "SELECT strftime('%Y-%m-%dT%H:%M:%SZ', ?, 'unixepoch')", (ts,)
            ).fetchone()
            assert iso(ts) == sql, ts
    finally:
        conn.close()
