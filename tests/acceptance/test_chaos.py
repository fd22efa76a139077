"""`dialer chaos --quick`: the real service killed with kill -9 at random points of a job, then
the dial ledger audited against the attempts table (by the command, and again here)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from dialer import chaos
from tests.acceptance.conftest import dialer_cmd

pytestmark = pytest.mark.slow

# Fault episodes in the quick run: 0 until the engine survives storage faults (issue 8); then 1.
# Lock: another connection holds the write lock for longer than the 5 s busy timeout. Disk full:
# the database on a small tmpfs filled to the last byte (skipped, with a note, where no mount).
QUICK_LOCK_EPISODES = 1
QUICK_DISK_FULL_EPISODES = 1


def test_chaos_quick_kills_the_service_and_finds_nothing_lost(tmp_path: Path) -> None:
    """Three kill -9s mid-job: no double dial, no lost outcome, no stuck contact, within 60 s."""
    keep = tmp_path / "run"
    started = time.monotonic()
    result = subprocess.run(
        dialer_cmd(
            "chaos",
            "--quick",
            "--json",
            "--lock-episodes",
            str(QUICK_LOCK_EPISODES),
            "--disk-full-episodes",
            str(QUICK_DISK_FULL_EPISODES),
            "--keep",
            str(keep),
        ),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    log = (keep / "service.log").read_text() if (keep / "service.log").exists() else ""
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{log[-3000:]}"
    assert elapsed < 60
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["ok"] is True
    assert report["kills"] == chaos.QUICK.kills
    assert report["lock_episodes"] == QUICK_LOCK_EPISODES
    assert report["disk_full_episodes"] in (0, QUICK_DISK_FULL_EPISODES)
    assert report["episodes_unrecovered"] == 0
    assert (report["double_dials"], report["lost"], report["stuck"]) == (0, 0, 0)
    assert report["unexplained_interrupted"] == 0 and report["counter_errors"] == []
    assert report["job_status"] == "completed" and report["contacts"] == chaos.QUICK.contacts
    # The kills cut calls short and the outcome mix retries: the audit had work to do.
    assert report["interrupted"] > 0
    assert report["dials"] > report["contacts"]

    # The same audit, independently, from the kept ledger and database.
    ledger = [json.loads(line) for line in (keep / "ledger.jsonl").read_text().splitlines()]
    assert len(ledger) == report["dials"]
    dials = Counter((e["contact"], e["attempt"]) for e in ledger)
    assert max(dials.values()) == 1
    # With disk-full episodes the database lived on the tmpfs; the command kept a copy.
    copied = keep / "database-copy" / "dialer.db"
    conn = sqlite3.connect(copied if copied.exists() else keep / "data" / "dialer.db")
    try:
        finished = {
            (cid, no)
            for cid, no in conn.execute(
                "SELECT contact_id, attempt_no FROM attempts"
                " WHERE outcome IS NOT NULL AND outcome <> 'not_placed' AND ended_at IS NOT NULL"
            )
        }
        open_contacts = conn.execute(
            "SELECT count(*) FROM contacts WHERE status IN ('pending', 'queued', 'dialing')"
        ).fetchone()[0]
    finally:
        conn.close()
    assert set(dials) <= finished
    assert open_contacts == 0


def test_tmpfs_and_fill_disk(tmp_path: Path) -> None:
    """The disk-full episode's tools: a size-limited tmpfs, filled to the last byte, unmounted."""
    target = tmp_path / "small"
    with chaos.tmpfs(target, "1m") as problem:
        if problem is not None:
            pytest.skip(f"cannot mount a tmpfs here: {problem}")
        written = chaos.fill_disk(target / "filler")
        assert 1_000_000 <= written <= 1 << 20
        with pytest.raises(OSError, match="No space left"):
            (target / "more").write_bytes(b"x" * 4096)
        (target / "filler").unlink()
        (target / "more").write_bytes(b"x" * 4096)
    assert not (target / "more").exists()  # unmounted: the directory below is empty again


def test_tmpfs_that_cannot_be_mounted_says_why(tmp_path: Path) -> None:
    """When mounting fails (here: a size the kernel refuses) the reason is given, not raised."""
    with chaos.tmpfs(tmp_path / "small", "not-a-size") as problem:
        assert problem
        assert not (tmp_path / "small").is_mount()
