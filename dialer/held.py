"""Outcomes held while storage fails, kept in a file beside the database until they are written.

While writes fail the engine keeps the outcomes of calls that ended in memory; this file keeps
them across a crash too (`kill -9` during a storage outage), and the next start writes them
before it reconciles anything, so a call that ended is never recorded `interrupted` and dialed
again. One JSON object per line; the file is created readable by its owner only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Sequence

import structlog

from storage.rows import Outcome

log = structlog.get_logger("dialer.held")

_FIELDS = {f.name for f in dataclasses.fields(Outcome)}


class HeldOutcomes:
    def __init__(self, path: str) -> None:
        self.path = path
        self._exists = os.path.exists(path)
        self._failed = False

    def append(self, outcomes: Sequence[Outcome]) -> None:
        """Add outcomes to the file (flushed to the OS at once: a process crash keeps them)."""
        if not outcomes:
            return
        data = "".join(json.dumps(dataclasses.asdict(o)) + "\n" for o in outcomes).encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._failed:  # once per episode: the disk may be what is failing
                log.error("held_outcomes_not_saved", path=self.path, error=str(exc))
            self._failed = True
            return
        self._exists = True

    def replace(self, outcomes: Sequence[Outcome]) -> None:
        """The file holds exactly these outcomes."""
        self.clear()
        self.append(outcomes)

    def clear(self) -> None:
        if self._exists:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._exists = False
        self._failed = False

    def load(self) -> list[Outcome]:
        """The outcomes in the file, in order (a torn last line, from a crash mid-write, is
        skipped: the outcome it was writing is still in the line before, or was never held)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        found: list[Outcome] = []
        for line in lines:
            try:
                values = json.loads(line)
                found.append(Outcome(**{k: v for k, v in values.items() if k in _FIELDS}))
            except (ValueError, TypeError):
                log.warning("held_outcome_unreadable", path=self.path, line=line[:200])
        return found
