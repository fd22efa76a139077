"""The dial log: what a restart may trust about which attempts the last process dialed."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

import pytest

from dialer import dialed, instance
from dialer.dialed import DialLog


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "dialer.db"
    path.write_bytes(b"a database")
    return path


@pytest.fixture
def boot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This machine's boot id, as a file the test can change (a reboot)."""
    path = tmp_path / "boot_id"
    path.write_text("boot-1\n")
    monkeypatch.setattr(dialed, "BOOT_ID", path)
    return path


def dial_log(database: Path, rotate_lines: int = 1000) -> DialLog:
    return DialLog(str(database) + ".dialed", str(database), rotate_lines)


def test_attempts_flushed_are_what_the_next_start_loads(database: Path, boot: Path) -> None:
    log = dial_log(database)
    assert log.load() is None  # no file: nothing can be told apart
    log.start([(7, 2)])  # a call resumed at the start
    log.add(1, 1)
    log.add(2, 3)
    assert dial_log(database).load() == {(7, 2)}  # added, not yet written
    assert log.flush()
    log.add(3, 1)  # never flushed: never dialed
    assert dial_log(database).load() == {(7, 2), (1, 1), (2, 3)}
    mode = stat.S_IMODE(os.stat(log.path).st_mode)
    assert mode == 0o600


def test_a_ticket_already_written_costs_no_write(
    database: Path, boot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calls started in one turn of the event loop are written by the first one's flush;
    one that another starts as it ends is written by its own, and each line is written before
    its call's flush returns."""
    log = dial_log(database)
    log.start([])
    writes: list[bytes] = []
    real_write = os.write

    def counted(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(dialed.os, "write", counted)
    first, second = log.add(1, 1), log.add(2, 1)
    assert log.flush(first)
    assert writes == [b"1 1\n2 1\n"]
    third = log.add(3, 1)  # started by the first call as it ended
    assert log.flush(second)  # already written: no write, and the third waits for its own
    assert writes == [b"1 1\n2 1\n"]
    assert dial_log(database).load() == {(1, 1), (2, 1)}
    assert log.flush(third)
    assert writes == [b"1 1\n2 1\n", b"3 1\n"]
    assert dial_log(database).load() == {(1, 1), (2, 1), (3, 1)}
    assert log.flush(third)  # nothing more to write
    assert len(writes) == 2


def test_another_boot_or_another_database_is_not_trusted(database: Path, boot: Path) -> None:
    log = dial_log(database)
    log.start([])
    log.add(1, 1)
    assert log.flush()
    assert dial_log(database).load() == {(1, 1)}
    boot.write_text("boot-2\n")  # a power cut may have lost what the cache held
    assert dial_log(database).load() is None
    boot.write_text("boot-1\n")
    copy = database.with_suffix(".copy")
    copy.write_bytes(database.read_bytes())
    os.replace(copy, database)  # a restored copy of the database: another file
    assert dial_log(database).load() is None


def test_a_machine_without_a_boot_id_keeps_no_log(
    database: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dialed, "BOOT_ID", tmp_path / "missing")
    log = dial_log(database)
    Path(log.path).write_text("left by an older start\n")
    log.start([])
    assert not os.path.exists(log.path)
    log.add(1, 1)
    assert log.flush()  # calls go on; a restart trusts nothing, as without the log
    assert log.load() is None


def test_rewritten_with_only_the_attempts_not_yet_written(database: Path, boot: Path) -> None:
    log = dial_log(database, rotate_lines=4)
    log.start([])
    for contact in range(1, 4):
        log.add(contact, 1)
    assert log.flush()
    log.written([(1, 1), (2, 1)])  # their outcomes are in the database
    log.add(4, 1)
    assert log.flush()  # the fourth line: the file is rewritten
    assert dial_log(database).load() == {(3, 1), (4, 1)}
    log.add(5, 2)
    assert log.flush()
    assert dial_log(database).load() == {(3, 1), (4, 1), (5, 2)}
    assert not os.path.exists(log.path + ".tmp")


@pytest.fixture
def one_dial(database: Path, boot: Path) -> DialLog:
    """A log started, with one attempt written."""
    log = dial_log(database)
    log.start([])
    log.add(1, 1)
    assert log.flush()
    return log


def failing(*args: object) -> int:
    raise OSError(5, "Input/output error")


def test_a_file_that_cannot_be_written_is_removed(
    one_dial: DialLog, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dialed.os, "write", failing)  # a full disk, an I/O error
    one_dial.add(2, 1)
    assert one_dial.flush()  # the call may go on: the next start trusts nothing
    assert not os.path.exists(one_dial.path)
    assert dial_log(database).load() is None
    assert not one_dial.enabled and not one_dial.blocked


def test_a_file_that_can_be_neither_written_nor_removed_blocks_every_dial(
    one_dial: DialLog, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as failing_disk:
        failing_disk.setattr(dialed.os, "write", failing)
        failing_disk.setattr(dialed.os, "unlink", failing)
        one_dial.add(2, 1)
        assert not one_dial.flush()  # it would say (2, 1) was never dialed: no dial at all
        assert one_dial.blocked
        one_dial.add(3, 1)
        assert not one_dial.flush()
    assert dial_log(database).load() == {(1, 1)}


def test_a_stop_as_asked_removes_only_its_own_file(database: Path, boot: Path) -> None:
    """The previous process's file stays until this one starts its own; a stop as asked removes
    this one's (the next start then asks the provider about every call left live)."""
    previous = dial_log(database)
    previous.start([])
    previous.add(1, 1)
    assert previous.flush()
    previous.close()  # a crash
    log = dial_log(database)
    log.remove()  # stopped before it started its own: the crash's file is still needed
    assert log.load() == {(1, 1)}
    log.start([(1, 1)])
    log.remove()
    assert not os.path.exists(log.path)


def test_only_the_last_serve_on_the_database_is_trusted(
    database: Path, boot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file is read only if the process that wrote it was the last to hold the database's
    instance lock: a run of a version that keeps no file in between leaves it out of date."""
    monkeypatch.setattr(instance, "_previous", {})
    lock = Path(instance.lock_path(str(database)))
    with monkeypatch.context() as writer:
        writer.setattr(dialed.os, "getpid", lambda: 4242)
        log = dial_log(database)
        log.start([])
        log.add(1, 1)
        assert log.flush()
        log.close()  # pid 4242 crashed
    assert dial_log(database).load() == {(1, 1)}  # no lock taken here: not asked

    for last, trusted in (("4242", True), ("5151", False)):
        lock.write_text(f"{last}\n")  # the last serve before this one
        fd = instance.acquire(str(database))
        try:
            assert instance.previous_holder(str(database)) == last
            assert (dial_log(database).load() == {(1, 1)}) is trusted
        finally:
            instance.release(fd)


def test_a_serve_takes_the_last_ones_file_over_so_a_failed_start_changes_nothing(
    database: Path, boot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after taking the lock, a serve writes the last serve's file again as its own (the
    same attempts): if it then fails to start, the next serve still trusts it. A file the last
    serve did not write is removed at once."""
    monkeypatch.setattr(instance, "_previous", {})
    monkeypatch.setattr(dialed, "_adopted", set())
    lock = Path(instance.lock_path(str(database)))
    with monkeypatch.context() as writer:
        writer.setattr(dialed.os, "getpid", lambda: 4242)
        crashed = dial_log(database)
        crashed.start([(5, 2)])
        crashed.add(1, 1)
        assert crashed.flush()
        crashed.close()
    lock.write_text("4242\n")
    fd = instance.acquire(str(database))
    try:
        dialed.adopt(str(database))
        header = Path(crashed.path).read_text().splitlines()[0]
        assert header.endswith(f"pid={os.getpid()} epoch=0")
        assert dial_log(database).load() == {(5, 2), (1, 1)}  # this serve's engine reads it
    finally:
        instance.release(fd)
    # This serve failed before its engine ran; the next one finds it named in the lock file.
    monkeypatch.setattr(dialed, "_adopted", set())
    monkeypatch.setattr(instance, "_previous", {str(database): str(os.getpid())})
    assert dial_log(database).load() == {(5, 2), (1, 1)}

    monkeypatch.setattr(instance, "_previous", {str(database): "6161"})  # someone else ran
    dialed.adopt(str(database))
    assert not os.path.exists(crashed.path)
    assert str(database) not in dialed._adopted


def test_the_file_names_the_databases_outcome_count_and_an_older_database_is_told(
    database: Path, boot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each rewrite names how many transactions had recorded outcomes (the count as of the
    outcomes it was told were written); a database counting fewer is older than the file (a
    backup restored in place). A file of the version before, with no count, reads as 0; a
    serve taking a file over keeps its count."""
    log = dial_log(database)
    log.start([])
    log.add(1, 1)
    assert log.flush()
    log.written([(1, 1)], 7)
    log.written([], 5)  # (never back)
    log.start([(2, 1)])  # a rewrite
    loaded = dial_log(database)
    assert loaded.load() == {(2, 1)} and loaded.epoch == 7
    assert loaded.older_database(6) and not loaded.older_database(7)
    path = Path(log.path)
    header, *rest = path.read_text().splitlines()
    path.write_text("\n".join([header.removesuffix(" epoch=7"), *rest]) + "\n")
    before = dial_log(database)
    assert before.load() == {(2, 1)} and before.epoch == 0
    path.write_text("\n".join([header.replace("epoch=7", "epoch=x"), *rest]) + "\n")
    assert dial_log(database).load() is None  # not a file this code wrote
    path.write_text("\n".join([header, *rest]) + "\n")
    monkeypatch.setattr(instance, "_previous", {})
    monkeypatch.setattr(dialed, "_adopted", set())
    Path(instance.lock_path(str(database))).write_text(f"{os.getpid()}\n")  # the last serve
    fd = instance.acquire(str(database))
    try:
        dialed.adopt(str(database))
        taken = dial_log(database)
        assert taken.load() == {(2, 1)} and taken.epoch == 7
    finally:
        instance.release(fd)


def no_second_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: no new file can be made (writes into room a file has still go in)."""
    real_open = os.open

    def full_open(path: str, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode)

    monkeypatch.setattr(dialed.os, "open", full_open)


def test_a_serve_started_on_a_full_disk_keeps_the_last_ones_file(
    database: Path, boot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking the last serve's file over on a disk with no room for a second file writes it
    over in place: the next start still trusts it, and gives back the contacts it does not
    list (it was removed, and every contact left `dialing` counted an attempt)."""
    monkeypatch.setattr(instance, "_previous", {})
    monkeypatch.setattr(dialed, "_adopted", set())
    with monkeypatch.context() as writer:
        writer.setattr(dialed.os, "getpid", lambda: 4242)
        crashed = dial_log(database)
        crashed.start([(5, 2)])
        for contact in range(1, 40):
            crashed.add(contact, 1)
        assert crashed.flush()
        crashed.close()
    Path(instance.lock_path(str(database))).write_text("4242\n")
    fd = instance.acquire(str(database))
    try:
        with monkeypatch.context() as full:
            no_second_file(full)
            dialed.adopt(str(database))
        header = Path(crashed.path).read_text().splitlines()[0]
        assert header.endswith(f"pid={os.getpid()} epoch=0")
        assert not os.path.exists(crashed.path + ".tmp")
        assert dial_log(database).load() == {(5, 2), *((c, 1) for c in range(1, 40))}
    finally:
        instance.release(fd)


def test_the_file_keeps_room_for_its_lines(database: Path, boot: Path) -> None:
    """Its lines until the next rewrite go into room it already has on the disk, so a disk
    that fills up does not make it drop (and the next start trust nothing)."""
    log = dial_log(database, rotate_lines=200_000)

    def room() -> int:
        return os.stat(log.path).st_blocks * 512 - os.stat(log.path).st_size

    log.start([(1, 1)])
    assert room() >= dialed.ROOM_AHEAD
    assert os.stat(log.path).st_size < 200  # (its length is its content)
    for contact in range(2, 30_000):  # more lines than the first room held
        log.add(contact, 1)
        if contact % 1000 == 0:
            assert log.flush()
            assert room() >= dialed.ROOM_AHEAD // 2
    with pytest.MonkeyPatch.context() as full:
        no_second_file(full)
        log._rewrite()  # (as at a rotation on a full disk)
    assert dial_log(database).load() == {(c, 1) for c in range(1, 30_000)}
    assert room() >= dialed.ROOM_AHEAD


def test_a_file_system_that_cannot_allocate_ahead_is_not_asked_at_every_flush(
    database: Path, boot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Room that cannot be had for want of space is asked for again at the next flush; where
    the file system cannot allocate ahead at all, never again (a call per flush for nothing)."""
    asked: list[int] = []

    class Libc:
        errno_now = errno.ENOSPC

        def fallocate(self, fd: int, mode: int, offset: object, length: object) -> int:
            asked.append(fd)
            ctypes.set_errno(self.errno_now)
            return -1

    libc = Libc()
    monkeypatch.setattr(dialed, "_libc", libc)
    log = dial_log(database)
    log.start([])
    for contact in (1, 2):
        log.add(contact, 1)
        assert log.flush()
    assert len(asked) == 3  # the start's, then each flush's: the disk may have room again
    libc.errno_now = errno.EOPNOTSUPP
    log.add(3, 1)
    assert log.flush()
    log.add(4, 1)
    assert log.flush()
    assert len(asked) == 4  # told once that it cannot: asked no more
    assert dial_log(database).load() == {(1, 1), (2, 1), (3, 1), (4, 1)}
