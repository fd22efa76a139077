"""Outcomes of ended calls not yet written, kept in a file beside the database.

The engine writes the outcome of every call here when it ends (one write, into the system's
cache: a process crash keeps it), and after each transaction the file holds exactly the
outcomes still to be written. Between a call's end and that commit, a few milliseconds normally
and as long as storage fails, only this file knows how the call ended: the next start writes
what it finds before it reconciles anything, so a call that ended (answered, say) is never
recorded `interrupted` and dialed again. The file is created readable by its owner only.

Its records are `marshal`ed (version 4: tuples, strings, numbers), each a batch of outcomes with
their field names and a 4-byte length before it: encoding one costs about 1 us here, against
about 10 us as a JSON line, and the engine writes every call's. A zero length (or the file's
end) ends them. A file of JSON lines (one outcome per line, as versions before wrote it) is read
too.

The file keeps its room on the disk (`reserve`): it is allocated that size when opened, and
written in place, never truncated, so that a disk that fills up (the very fault it is there
for) cannot refuse it the outcomes of the calls that end while storage fails. The engine starts
no call while the room cannot be had (see `reserved`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import marshal
import os
import struct
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import structlog

from dialer.providers.base import sip_code
from storage.rows import Outcome

log = structlog.get_logger("dialer.held")

_FIELDS = {f.name for f in dataclasses.fields(Outcome)}
_NAMES = tuple(f.name for f in dataclasses.fields(Outcome))
_VALUES = attrgetter(*_NAMES)
_LENGTH = struct.Struct("<I")
_END = _LENGTH.pack(0)
_JSON_LINES = b'{"contact_id"'  # how a file of an earlier version's JSON lines starts
MARSHAL_VERSION = 4
# What posix_fallocate answers where the file system cannot allocate ahead at all.
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.ENODEV})
# The room kept: at least this (about 750 outcomes written one at a time, ~330 bytes each), and
# RESERVE_BYTES_PER_OUTCOME for each outcome the engine may hold at once (see Engine).
RESERVE_BYTES = 256 * 1024
RESERVE_BYTES_PER_OUTCOME = 1024


class HeldOutcomes:
    def __init__(self, path: str, reserve: int = RESERVE_BYTES) -> None:
        self.path = path
        self.reserve = reserve
        self._exists = os.path.exists(path)
        self._failed = False
        self.room_error: str | None = None  # why the last try to keep the room failed
        self.size = 0  # bytes of the records it holds (where the next one goes)
        self._fd: int | None = None  # kept open between writes (one write each)

    @property
    def reserved(self) -> bool:
        """Whether the file has its room on the disk (it is tried again when it has not): while
        it has not, a call that ends during a storage fault might find no room for its outcome,
        and the engine starts none."""
        if self._fd is not None:
            return True
        try:
            self._open()
        except OSError as exc:
            if self.room_error is None:
                log.error(
                    "held_outcomes_not_reserved",
                    path=self.path,
                    bytes=self.reserve,
                    error=str(exc),
                    action="no call is started until the disk has room for this file",
                )
            self.room_error = f"no room for {self.path} ({self.reserve} bytes): {exc}"
            return False
        if self.room_error is not None:
            log.warning("held_outcomes_reserved", path=self.path, bytes=self.reserve)
        self.room_error = None
        return True

    def _open(self) -> int:
        """Open the file (made if need be) with its room allocated; find where its records end."""
        if self._fd is not None:
            return self._fd
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            if data.startswith(_JSON_LINES):  # an earlier version's: kept, as records
                lines = self._load_lines(data)
                data = _record(lines) if lines else b""
                os.pwrite(fd, data + _END, 0)
            size = _records_end(data)
            try:
                os.posix_fallocate(fd, 0, max(self.reserve, size + len(_END)))
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                # A file system that cannot allocate ahead (rare: the C library writes zeros
                # where the system cannot): the file does without, as before it kept any room.
                log.warning("held_outcomes_room_unsupported", path=self.path, error=str(exc))
            if size == 0:
                os.pwrite(fd, _END, 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self.size, self._exists = fd, size, True
        return fd

    def append(self, outcomes: Sequence[Outcome]) -> None:
        """Add outcomes to the file (flushed to the OS at once: a process crash keeps them)."""
        if outcomes:
            self._write(None, _record(outcomes))

    def _write(self, at: int | None, data: bytes) -> None:
        """Write records at `at` (None: after those it holds), the end mark after them: one
        write (a process killed keeps all of it or none), into the room kept unless they
        outgrow it."""
        try:
            fd = self._open()
            if at is None:
                at = self.size
            if os.pwrite(fd, data + _END, at) < len(data) + len(_END):
                # A full disk took part of it (past the room kept): end the records before it.
                os.pwrite(fd, _END, at)
                raise OSError(f"only part of {len(data)} bytes written")
        except OSError as exc:
            if not self._failed:  # once per episode: the disk may be what is failing
                log.error("held_outcomes_not_saved", path=self.path, error=str(exc))
            self._failed = True
            return
        self._failed = False
        self.size = at + len(data)

    def written(self, left: Sequence[Outcome]) -> None:
        """A transaction committed outcomes: the file holds exactly `left`, those still to be
        written (written over the first records in one write, not truncated: it keeps its
        room). Never a record of one already written: a given-back attempt's number is claimed
        again, and an old record of it would be taken for the new call's outcome."""
        if self._fd is None and not self._exists and not left:
            return
        self._write(0, _record(left) if left else b"")

    def replace(self, outcomes: Sequence[Outcome]) -> None:
        """The file holds exactly these outcomes."""
        self.written(outcomes)

    def clear(self) -> None:
        """Everything is written and the engine stops: the file goes (and its room)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._exists:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._exists = False
        self._failed = False
        self.size = 0

    def load(self) -> list[Outcome]:
        """The outcomes in the file, in order. A torn last record (only a crash of the machine
        tears a write; a killed process does not) is skipped: its calls are reconciled as if it
        had never been written, as before this file kept every call."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        if data.startswith(_JSON_LINES):
            return self._load_lines(data)
        found: list[Outcome] = []
        at = 0
        while at + _LENGTH.size <= len(data):
            (size,) = _LENGTH.unpack_from(data, at)
            if size == 0:  # the end mark (the room kept lies after it)
                break
            record = data[at + _LENGTH.size : at + _LENGTH.size + size]
            at += _LENGTH.size + size
            try:
                if len(record) < size:
                    raise ValueError("torn record")
                names, rows = marshal.loads(record)
            except (ValueError, TypeError, EOFError):
                log.warning("held_outcome_unreadable", path=self.path, at=at)
                break  # (a torn last record: a crash mid-write, the rest unknowable)
            for row in rows:  # one that does not fit (another version's) costs only itself
                try:
                    found.append(_outcome(dict(zip(names, row, strict=True))))
                except (ValueError, TypeError):
                    log.warning("held_outcome_unreadable", path=self.path, row=repr(row)[:200])
        return found

    def _load_lines(self, data: bytes) -> list[Outcome]:
        found: list[Outcome] = []
        for line in data.decode("utf-8", "replace").splitlines():
            try:
                found.append(_outcome(json.loads(line)))
            except (ValueError, TypeError, AttributeError):
                log.warning("held_outcome_unreadable", path=self.path, line=line[:200])
        return found


def _record(outcomes: Sequence[Outcome]) -> bytes:
    payload = marshal.dumps((_NAMES, [_VALUES(o) for o in outcomes]), MARSHAL_VERSION)
    return _LENGTH.pack(len(payload)) + payload


def _records_end(data: bytes) -> int:
    """Where the records of a file's content end."""
    at = 0
    while at + _LENGTH.size <= len(data):
        (size,) = _LENGTH.unpack_from(data, at)
        if size == 0 or at + _LENGTH.size + size > len(data):
            break
        at += _LENGTH.size + size
    return at


def _outcome(values: dict[str, Any]) -> Outcome:
    """A held outcome, if it fits the database: an integer SQLite cannot store makes it
    unreadable (ValueError), except a SIP code that cannot be one, which is dropped (a file
    from a version that kept any code the provider gave would stop every start)."""
    found = {k: v for k, v in values.items() if k in _FIELDS}
    if found.get("sip_code") is not None:
        found["sip_code"] = sip_code(found["sip_code"])
    for value in found.values():
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise ValueError("an integer too large for the database")
    return Outcome(**found)
