"""The held-outcomes file (dialer.held): what it holds is read back exactly, a record torn by a
crash mid-write costs only itself, and a file of JSON lines from an earlier version is read."""

from __future__ import annotations

import dataclasses
import errno
import json
import marshal
import os
import struct
from pathlib import Path

from pytest import MonkeyPatch

from dialer.held import HeldOutcomes
from storage.rows import Outcome


def outcome(contact_id: int, **changes: object) -> Outcome:
    base = Outcome(
        contact_id=contact_id,
        job_id="batch_1",
        organization_id="org_a",
        attempt_no=2,
        outcome="completed",
        next_status="completed",
        next_retry_at=None,
        sip_code=None,
        reason='said "no", then hung up',
        answered_at=1_767_225_600.125,
        ended_at=1_767_225_660.5,
        duration=60,
        charged_usd=0.1,
        started_at=1_767_225_599.0,
        give_back=False,
        next_call_at=None,
        call_until=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_outcomes_read_back_exactly_and_the_file_holds_only_what_is_left(tmp_path: Path) -> None:
    held = HeldOutcomes(str(tmp_path / "d.db.held"))
    first = [outcome(1), outcome(2, outcome="busy", next_status="queued", sip_code=486)]
    held.append(first)
    held.append([outcome(3, give_back=True, reason=None)])
    assert held.load() == [*first, outcome(3, give_back=True, reason=None)]
    assert os.stat(held.path).st_mode & 0o777 == 0o600
    held.written([outcome(3, give_back=True, reason=None)])  # 1 and 2 were written
    assert held.load() == [outcome(3, give_back=True, reason=None)]
    held.written([])
    assert held.load() == []
    held.append([outcome(4)])
    assert held.load() == [outcome(4)]
    held.clear()
    assert not os.path.exists(held.path)


def test_a_record_torn_by_a_crash_costs_only_itself(tmp_path: Path) -> None:
    held = HeldOutcomes(str(tmp_path / "d.db.held"))
    held.append([outcome(1)])
    held.append([outcome(2), outcome(3)])
    data = Path(held.path).read_bytes()[: held.size]
    Path(held.path).write_bytes(data[:-5])  # the second write cut short, at the file's end
    assert HeldOutcomes(held.path).load() == [outcome(1)]
    # or in the room kept after it (zeros)
    Path(held.path).write_bytes(data[:-5] + bytes(4096))
    assert HeldOutcomes(held.path).load() == [outcome(1)]


def test_json_lines_of_an_earlier_version_are_read(tmp_path: Path) -> None:
    path = tmp_path / "d.db.held"
    lines = [json.dumps(dataclasses.asdict(outcome(i))) for i in (1, 2)]
    path.write_text("\n".join(lines) + "\n")
    assert HeldOutcomes(str(path)).load() == [outcome(1), outcome(2)]


def test_an_outcome_that_does_not_fit_costs_only_itself(tmp_path: Path) -> None:
    """A row another version wrote without a field this one needs is skipped; the rows and the
    records after it are read."""
    held = HeldOutcomes(str(tmp_path / "d.db.held"))
    names = tuple(f.name for f in dataclasses.fields(Outcome))
    good = tuple(getattr(outcome(1), n) for n in names)
    payload = marshal.dumps((names[1:], [good[1:]]), 4)  # contact_id missing
    Path(held.path).write_bytes(struct.pack("<I", len(payload)) + payload)
    held.append([outcome(2)])
    assert held.load() == [outcome(2)]


def test_a_held_outcome_the_database_cannot_store_does_not_stop_the_start(
    tmp_path: Path,
) -> None:
    """A SIP code that cannot be one, kept by an earlier version, is dropped from its outcome;
    an integer SQLite cannot store makes only its own outcome unreadable."""
    held = HeldOutcomes(str(tmp_path / "d.db.held"))
    held.append([outcome(1, sip_code=10**20), outcome(2, duration=2**70), outcome(3)])
    assert held.load() == [outcome(1, sip_code=None), outcome(3)]


def test_the_file_keeps_its_room_on_the_disk(tmp_path: Path) -> None:
    """Allocated its reserve when opened and never truncated: the outcomes of calls that end
    while the disk is full go into room it already has. Emptied (records written over), it
    reads as empty, and an earlier, longer content is never read back after a shorter one."""
    held = HeldOutcomes(str(tmp_path / "d.db.held"), reserve=256 * 1024)
    held.append([outcome(i) for i in range(1, 50)])
    assert held.reserved

    def allocated() -> int:
        return os.stat(held.path).st_blocks * 512

    assert allocated() >= 256 * 1024
    held.written([outcome(7)])
    assert held.load() == [outcome(7)]
    assert allocated() >= 256 * 1024
    held.written([])
    assert held.load() == [] and HeldOutcomes(held.path).load() == []
    assert allocated() >= 256 * 1024
    held.append([outcome(8)])
    assert HeldOutcomes(held.path).load() == [outcome(8)]  # (the next start reads this)


def test_reopened_it_appends_after_what_it_holds(tmp_path: Path) -> None:
    first = HeldOutcomes(str(tmp_path / "d.db.held"))
    first.append([outcome(1), outcome(2)])
    again = HeldOutcomes(first.path)
    again.append([outcome(3)])
    assert again.load() == [outcome(1), outcome(2), outcome(3)]


def test_json_lines_of_an_earlier_version_are_kept_when_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "d.db.held"
    path.write_text(json.dumps(dataclasses.asdict(outcome(1))) + "\n")
    held = HeldOutcomes(str(path))
    held.append([outcome(2)])
    assert held.load() == [outcome(1), outcome(2)]


def test_a_record_whose_length_looks_like_json_is_read_as_a_record(tmp_path: Path) -> None:
    """A file of records is told from JSON lines by more than its first byte: a record of 123
    bytes (or 379, ...) starts with `{`."""
    held = HeldOutcomes(str(tmp_path / "d.db.held"))
    for n in range(1, 400):  # reasons of every length: one makes the first byte `{`
        held.written([outcome(1, reason="x" * n)])
        if Path(held.path).read_bytes()[:1] == b"{":
            break
    assert Path(held.path).read_bytes()[:1] == b"{"
    assert HeldOutcomes(held.path).load() == [outcome(1, reason="x" * n)]


def test_no_room_is_told_and_tried_again(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    held = HeldOutcomes(str(tmp_path / "d.db.held"))

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    assert not held.reserved
    monkeypatch.undo()
    assert held.reserved


def test_a_file_system_that_cannot_allocate_ahead_does_without(
    tmp_path: Path, monkeypatch: MonkeyPatch
) -> None:
    """Not supported (not a full disk): the file is kept without room, and calls go on."""
    held = HeldOutcomes(str(tmp_path / "d.db.held"))

    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    assert held.reserved
    held.append([outcome(1)])
    assert HeldOutcomes(held.path).load() == [outcome(1)]
