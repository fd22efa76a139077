"""Outcomes of ended calls not yet written, kept in a file beside the database.

The engine writes the outcome of every call here when it ends (one write, into the system's
cache: a process crash keeps it), and after each transaction the file holds exactly the
outcomes still to be written. Between a call's end and that commit, a few milliseconds normally
and as long as storage fails, only this file knows how the call ended: the next start writes
what it finds before it reconciles anything, so a call that ended (answered, say) is never
recorded `interrupted` and dialed again. The file is created readable by its owner only.

Its records are `marshal`ed (version 4: tuples, strings, numbers), each a batch of outcomes with
their field names and a 4-byte length before it: encoding one costs about 1 us here, against
about 10 us as a JSON line, and the engine writes every call's. A file of JSON lines (one
outcome per line, as versions before wrote it) is read too.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
MARSHAL_VERSION = 4


class HeldOutcomes:
    def __init__(self, path: str) -> None:
        self.path = path
        self._exists = os.path.exists(path)
        self._failed = False
        self.size = 0  # bytes appended since the file was last emptied
        self._fd: int | None = None  # kept open between appends (one write each)

    def append(self, outcomes: Sequence[Outcome]) -> None:
        """Add outcomes to the file (flushed to the OS at once: a process crash keeps them)."""
        if not outcomes:
            return
        payload = marshal.dumps((_NAMES, [_VALUES(o) for o in outcomes]), MARSHAL_VERSION)
        data = _LENGTH.pack(len(payload)) + payload
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if os.write(self._fd, data) < len(data):
                # A full disk took part of it: cut it off, or every record after it would be
                # unreadable (they are framed by their lengths).
                os.ftruncate(self._fd, self.size)
                raise OSError(f"only part of {len(data)} bytes written")
        except OSError as exc:
            if not self._failed:  # once per episode: the disk may be what is failing
                log.error("held_outcomes_not_saved", path=self.path, error=str(exc))
            self._failed = True
            return
        self._exists = True
        self.size += len(data)

    def written(self, left: Sequence[Outcome]) -> None:
        """A transaction committed outcomes: the file holds exactly `left`, those still to be
        written (it is emptied in place, not removed: cheaper, once per transaction). Never a
        line of one already written: a given-back attempt's number is claimed again, and an
        old line for it would be taken for the new call's outcome."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                self.clear()
            self.size = 0
        elif self._exists:
            self.clear()
        self.append(left)

    def replace(self, outcomes: Sequence[Outcome]) -> None:
        """The file holds exactly these outcomes."""
        self.clear()
        self.append(outcomes)

    def clear(self) -> None:
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
        if data.startswith(b"{"):
            return self._load_lines(data)
        found: list[Outcome] = []
        at = 0
        while at + _LENGTH.size <= len(data):
            (size,) = _LENGTH.unpack_from(data, at)
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
