"""Logging, configured once: console lines on a TTY, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from dialer import jsontext

# Set by `configure` when it writes JSON lines at info level or below: the stream, and the
# processors it configured (a test that captures logs changes them; `info_many` then logs one
# by one, as everything else does).
_json_lines: tuple[TextIO, tuple[structlog.types.Processor, ...]] | None = None
# Whether `configure` chose JSON lines (any level).
_writes_json = False


def configure(level: str = "info", *, json: bool | None = None) -> None:
    global _json_lines, _writes_json
    use_json = not sys.stderr.isatty() if json is None else json
    _writes_json = use_json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=jsontext.dumps)
        if use_json
        else structlog.dev.ConsoleRenderer()
    )
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    level_no = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    _json_lines = (sys.stderr, tuple(processors)) if use_json and level_no <= logging.INFO else None
    # Libraries' own log records (aiohttp's, livekit's) and Python warnings (a library's
    # DeprecationWarning, jwt's InsecureKeyLengthWarning) come out as the same lines, not as
    # stray text among the JSON.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, ToStructlog)]:
        root.removeHandler(handler)
    root.addHandler(ToStructlog())
    # Libraries' info records were never shown (Python's last-resort handler): still not.
    root.setLevel(level_no if level_no <= logging.DEBUG else max(level_no, logging.WARNING))
    logging.captureWarnings(True)


class ToStructlog(logging.Handler):
    """A standard-library log record as a structlog line: its message as the event, with the
    logger's name and, for an error, its traceback.

    Except aiohttp's records of requests it could not even parse (a header too long, a control
    character...): anyone can send those, and their text quotes the offending bytes, which can
    be a key (`x-api-key: dk_...` with a stray byte). They are counted and logged at most once
    a second as `http_requests_malformed`, with the kinds seen, never their text.
    """

    def __init__(self) -> None:
        super().__init__()
        self._malformed: dict[str, int] = {}
        self._malformed_logged = 0.0

    def _count_malformed(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not record.name.startswith("aiohttp"):
            return False
        kind = type(exc).__name__
        self._malformed[kind] = self._malformed.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._malformed_logged >= 1.0:
            counts, self._malformed = self._malformed, {}
            self._malformed_logged = now
            structlog.get_logger("aiohttp.server").warning(
                "http_requests_malformed", count=sum(counts.values()), kinds=counts
            )
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._count_malformed(record):
                return
            logger = structlog.get_logger(record.name)
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            method = getattr(logger, record.levelname.lower(), logger.warning)
            method(record.getMessage().strip(), **fields)
        except Exception:
            self.handleError(record)


def writes_json() -> bool:
    """Whether the lines are JSON (stderr is not a terminal): then whatever is
    written for people is written as a JSON line too, so a log collector reads every line."""
    return _writes_json


def info_many(logger: Any, event: str, rows: Iterable[dict[str, Any]]) -> None:
    """One info line of `event` per row, as `logger.info(event, **row)` writes them, but as JSON
    lines: one timestamp and one write for all of them. Structlog renders a line in ~40 us,
    and the engine logs every attempt: at thousands a second that was a sixth of the event
    loop. With any other configuration, each row is logged as usual."""
    found = _json_lines
    if found is None or tuple(structlog.get_config()["processors"]) != found[1]:
        for row in rows:
            logger.info(event, **row)
        return
    stream = found[0]
    context = structlog.contextvars.get_contextvars()
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    lines = "".join(
        # In structlog's order: the fields, the event, the context (never over a field), the
        # level and the time.
        jsontext.dumps(
            {**row, "event": event, **{k: v for k, v in context.items() if k not in row}}
            | {"level": "info", "timestamp": stamp},
            repr,  # what JSON cannot hold, as its repr (as structlog's renderer does)
        )
        + "\n"
        for row in rows
    )
    if lines:
        stream.write(lines)
        stream.flush()
