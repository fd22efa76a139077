"""The dial log: the attempts this process dialed, in a file beside the database.

A contact is moved to `dialing` (its attempt row written) before its call is placed, and a
contact claimed ahead may wait there a second or two for a slot. After a crash, the database
alone cannot tell such a contact from one whose call was placed: both were recorded
`interrupted`, an attempt counted without a call (with `maxAttempts` 1 the contact was never
called at all). The engine therefore appends each attempt to this file before it is dialed, and
the next start gives back, without counting the attempt, a contact left `dialing` whose attempt
the file does not list. Every other one is asked about as before, never dialed again.

The file is trusted only when the crash cannot have lost its tail and no other process ran on the
database since: its first line names the boot of the machine, the database file it was written
for and the process that wrote it, which must be the last `dialer serve` that held the database's
instance lock (see dialer.instance). A `dialer serve` takes the file over as soon as it holds the
lock (`adopt`), so that a start that fails before it dials leaves the file as it found it.

A write is in the operating system's cache once `os.write` returns, so a process crash
(`kill -9`, out of memory) loses nothing of it; a power cut or a kernel crash may, and the
machine then booted again: the file is not trusted and every contact left `dialing` is asked
about, as without the file. A file that cannot be written is removed (the next start then trusts
nothing); if it cannot be removed either, no call is placed until the service is restarted.
Created readable by its owner only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import structlog

from dialer import instance

log = structlog.get_logger("dialer.dialed")

HEADER = "dialer dial log 1"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# The file is written again with only the attempts whose outcome is not yet written after this
# many lines (about 12 bytes each).
ROTATE_LINES = 100_000
# The room the file keeps on the disk beyond its content (taken again whenever less than half
# of it is left): its lines go into room it already has, and a disk that fills up cannot refuse
# them (about 20,000 lines, a few seconds of the fastest dialing: room is taken again long before
# a full disk could use the rest).
ROOM_AHEAD = 256 * 1024

Attempt = tuple[int, int]  # (contact id, attempt number)


def _keep_room(fd: int, size: int) -> int:
    """Allocate `size` bytes of disk for the file without changing its length (Linux
    `fallocate` with FALLOC_FL_KEEP_SIZE); return the room it has: `size`, 0 when there was
    none to be had (tried again at the next flush), or sys.maxsize where the file system
    cannot allocate ahead (the file does without, and no flush tries again)."""
    fallocate = getattr(_libc, "fallocate", None)
    if fallocate is None:
        return sys.maxsize
    if fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(size)) == 0:
        return size
    return sys.maxsize if ctypes.get_errno() in _UNSUPPORTED else 0


_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV})


_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - every Linux has a C library
    _libc = None


def boot_id() -> str | None:
    """This boot of the machine (Linux), or None where it cannot be told."""
    try:
        return BOOT_ID.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


# The databases whose dial log this process took over (see adopt).
_adopted: set[str] = set()


def adopt(database: str) -> None:
    """Take over the last `dialer serve`'s dial log, right after taking the database's instance
    lock: a file that can be trusted is written again as this process's, with the same
    attempts; one that cannot is removed. Either way a start that fails before its engine runs
    (storage unavailable, the port taken) leaves it as trustworthy as it found it, and the next
    start reads it as the last serve's."""
    taken = DialLog(database + ".dialed", database)
    found = taken.load()
    if found is None:
        try:
            os.unlink(taken.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # it names another process: never trusted by a later start
            log.warning("dial_log_not_removed", path=taken.path, error=str(exc))
        return
    taken.start(found)
    taken.close()
    if taken.blocked:  # neither written nor removed: it still names the last serve
        return
    _adopted.add(database)


class DialLog:
    def __init__(self, path: str, database: str, rotate_lines: int = ROTATE_LINES) -> None:
        self.path = path
        self._database = database
        self._rotate_lines = rotate_lines
        self._fd: int | None = None
        self._pending: list[str] = []  # lines of attempts added, not yet written
        self._added = 0  # attempts added so far (an attempt's ticket: see add)
        self._written_upto = 0  # the tickets up to this one are written (or need no write)
        self._open: set[Attempt] = set()  # logged (or about to be), outcome not yet written
        self._lines = 0
        self._size = 0  # the file's length
        self._room = 0  # the bytes of disk it has (see _keep_room)
        # The database's count of transactions that recorded outcomes (storage migration
        # 0018) as of the outcomes `written` was told of: named in the file at each rewrite.
        self.epoch = 0
        # The file can be neither written nor removed: no call may be placed (see flush).
        self.blocked = False

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def _identity(self) -> str | None:
        """The first line's start: this boot and this database file."""
        boot = boot_id()
        try:
            found = os.stat(self._database)
        except OSError:
            return None
        if boot is None:
            return None
        return f"{HEADER} boot={boot} db={found.st_dev}:{found.st_ino} pid="

    def load(self) -> set[Attempt] | None:
        """The attempts the previous process logged, or None when its file cannot be trusted:
        there is none, or it was written in another boot of the machine (a power cut may have
        lost its tail), for another database file (a restored copy), or by a process other than
        the last `dialer serve` on the database (one of a version that keeps no file ran since).
        Sets `epoch` to the database's count of outcome transactions the file was written at
        (0 in a file of a version that wrote none): see `older_database`."""
        identity = self._identity()
        last = instance.previous_holder(self._database)
        if self._database in _adopted:
            last = str(os.getpid())  # taken over by this process (see adopt)
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                first = f.readline().rstrip("\n")
                if identity is None or not first.startswith(identity):
                    return None
                pid, _, rest = first.removeprefix(identity).partition(" ")
                if last is not None and pid != last:
                    return None
                counted = rest.removeprefix("epoch=")
                if rest and not (rest.startswith("epoch=") and counted.isdigit()):
                    return None
                epoch = int(counted) if rest else 0
                body = f.read()
        except OSError:
            return None
        found: set[Attempt] = set()
        for line in body.splitlines():
            parts = line.split(" ")
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                found.add((int(parts[0]), int(parts[1])))
        self.epoch = epoch
        return found

    def older_database(self, database_epoch: int) -> bool:
        """Whether the database has recorded outcomes in fewer transactions than the file
        loaded was written at: it is older than the file (a backup restored onto the same file
        keeps its inode), and lacks outcomes of attempts the file no longer lists (a rewrite
        keeps only those still open). Such a file must not be trusted: the contacts the
        database shows `dialing` may have been dialed all the same."""
        return database_epoch < self.epoch

    def start(self, live: Iterable[Attempt]) -> None:
        """Begin this process's file, listing the attempts already live (calls resumed)."""
        self._open = set(live)
        self._pending.clear()
        self._written_upto = self._added
        self._rewrite()

    def add(self, contact_id: int, attempt_no: int) -> int:
        """An attempt about to be dialed: written by the next `flush`. Returns its ticket, for
        `flush`."""
        self._added += 1
        if self._fd is not None:
            self._pending.append(f"{contact_id} {attempt_no}\n")
            self._open.add((contact_id, attempt_no))
        return self._added

    def flush(self, ticket: int | None = None) -> bool:
        """Write the attempts added since the last flush (one write for all); with the ticket
        of an attempt (see add), only if that one is not written yet: the calls started in one
        turn of the event loop cost one write, not one each for those that others start as
        they end. False when no call may be placed: the file could be neither written nor
        removed."""
        if self.blocked:
            return False
        if ticket is not None and ticket <= self._written_upto:
            return True
        pending = self._pending
        if not pending or self._fd is None:
            self._written_upto = self._added
            return True
        data = "".join(pending).encode("ascii")
        try:
            if os.write(self._fd, data) != len(data):
                raise OSError("short write (the disk may be full)")
        except OSError as exc:
            self._give_up(exc)
            return not self.blocked
        self._lines += len(pending)
        self._size += len(data)
        if self._size + ROOM_AHEAD // 2 > self._room:
            self._room = _keep_room(self._fd, self._size + ROOM_AHEAD)
        pending.clear()
        self._written_upto = self._added
        if self._lines >= self._rotate_lines:
            self._rewrite()
        return True

    def written(self, attempts: Iterable[Attempt], epoch: int | None = None) -> None:
        """These attempts' outcomes are in the database (whose count of outcome transactions
        is now `epoch`): a later rewrite leaves them out, and names that count."""
        if epoch is not None and epoch > self.epoch:
            self.epoch = epoch
        if self._open:
            self._open.difference_update(attempts)

    def remove(self) -> None:
        """The process stops as asked: this process's file goes (a file it did not start, the
        previous process's, stays for the next start)."""
        if self._fd is None:
            return
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("dial_log_not_removed", path=self.path, error=str(exc))

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _rewrite(self) -> None:
        """The file holds this boot's identity and the attempts still open, and nothing else
        (written beside it, then renamed over it: a crash leaves one or the other whole). On a
        disk with no room for a second file (full), the file is written over in place instead,
        in the room it has (see `_keep_room`): a kill between that write and the cut of the
        longer old content after it leaves old lines, which only make the next start ask about
        more contacts, never give back one that was dialed."""
        self.close()
        identity = self._identity()
        if identity is None:
            self._give_up(OSError("this machine's boot cannot be told (no boot id)"), "warning")
            return
        head = f"{identity}{os.getpid()} epoch={self.epoch}\n"
        data = "".join([head, *(f"{c} {a}\n" for c, a in sorted(self._open))]).encode("ascii")
        tmp = self.path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError("short write (the disk may be full)")
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            try:
                self._write_over(data)
            except OSError:
                self._give_up(exc)
                return
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            self._give_up(exc)
            return
        self._size = len(data)
        self._room = _keep_room(self._fd, self._size + ROOM_AHEAD)
        self._lines = 0

    def _write_over(self, data: bytes) -> None:
        """Write the file's new content over its old one, in place (raises OSError)."""
        fd = os.open(self.path, os.O_WRONLY)  # (none: nothing to write over)
        try:
            if os.pwrite(fd, data, 0) != len(data):
                raise OSError("short write (the disk is full)")
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def _give_up(self, exc: OSError, level: str = "error") -> None:
        """The file cannot be kept: remove it, so that the next start trusts nothing; if it
        cannot be removed, it would wrongly say what was not dialed: block every dial."""
        self.close()
        self._pending.clear()
        self._open.clear()
        for path in (self.path + ".tmp", self.path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as gone:
                if path == self.path:
                    self.blocked = True
                    log.error("dial_log_stuck", path=path, error=str(gone), write_error=str(exc))
                    return
        log.log(getattr(logging, level.upper()), "dial_log_dropped", path=self.path, error=str(exc))
