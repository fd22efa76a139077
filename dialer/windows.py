"""Calling windows: when a contact may be dialed, as UTC instants. Pure functions, no clock.

A window is wall-clock time on the listed days (`{"days": ["mon", ...], "start": "08:00",
"end": "21:00"}`), read in each of the contact's time zones; the zone database handles
daylight-saving changes (a window is the local time on that very day). A contact with several
zones may be called only while its windows are open in all of them.

The scheduler never evaluates windows per contact and cycle: each contact stores the interval it
may be dialed in (`next_callable`), recomputed on the events that change it (create, an outcome,
the interval ending).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How far ahead an opening is looked for. Windows repeat weekly; two weeks also cover a
# daylight-saving change moving a narrow overlap of several zones by an hour.
HORIZON_DAYS = 15
RECIPIENT = "recipient"  # windowTimezone: read the windows in each recipient's own zones

_HHMM = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])|24:00")
_DAY_SECONDS = 86_400


class WindowError(ValueError):
    """A calling window is malformed; the message names the problem."""


@dataclass(frozen=True, slots=True)
class Window:
    days: tuple[int, ...]  # 0 = Monday
    start: int  # minutes after local midnight
    end: int  # minutes after local midnight, > start (1440 = midnight at the day's end)

    def to_json(self) -> dict[str, Any]:
        return {
            "days": [DAYS[d] for d in self.days],
            "start": _hhmm(self.start),
            "end": _hhmm(self.end),
        }


Windows = tuple[Window, ...]

DEFAULT_WINDOWS: Windows = (Window(days=tuple(range(7)), start=8 * 60, end=21 * 60),)
ALL_DAY: Windows = (Window(days=tuple(range(7)), start=0, end=24 * 60),)
# An [[organizations]] entry's keys (TOML) for runs that must not depend on the time of day they
# run at (benchmarks, chaos runs, process tests): windows open all day, no per-number cap.
ALL_DAY_UNCAPPED_TOML = """calling_windows = [
  { days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start = "00:00", end = "24:00" },
]
max_attempts_per_number_per_day = 0
"""


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(value: Any, where: str) -> int:
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        raise WindowError(f"{where} must be a time HH:MM on the 24 h clock (00:00 to 24:00)")
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def parse_windows(value: Any) -> Windows:
    """Validate a `callingWindows` value (a non-empty list of window objects)."""
    if not isinstance(value, list) or not value:
        raise WindowError("callingWindows must be a non-empty list of windows")
    if len(value) > 50:
        raise WindowError("callingWindows has more than 50 windows")
    parsed: list[Window] = []
    for index, item in enumerate(value):
        where = f"callingWindows[{index}]"
        if not isinstance(item, dict):
            raise WindowError(f"{where} must be an object with days, start and end")
        unknown = sorted(set(item) - {"days", "start", "end"})
        if unknown:
            raise WindowError(f"{where} has unknown field(s): {', '.join(unknown)}")
        for key in ("days", "start", "end"):
            if key not in item:
                raise WindowError(f"{where}.{key} is required")
        days = item["days"]
        if not isinstance(days, list) or not days:
            raise WindowError(f"{where}.days must be a non-empty list of mon..sun")
        numbers: set[int] = set()
        for day in days:
            if not isinstance(day, str) or day.strip().lower() not in DAYS:
                raise WindowError(f"{where}.days: {str(day)[:20]!r} is not one of mon..sun")
            numbers.add(DAYS.index(day.strip().lower()))
        start = _minutes(item["start"], f"{where}.start")
        end = _minutes(item["end"], f"{where}.end")
        if start == 24 * 60:
            raise WindowError(f"{where}.start must be before 24:00")
        if start >= end:
            raise WindowError(f"{where}: start {item['start']} must be before end {item['end']}")
        parsed.append(Window(days=tuple(sorted(numbers)), start=start, end=end))
    return tuple(parsed)


def windows_json(windows: Windows) -> list[dict[str, Any]]:
    return [w.to_json() for w in windows]


def always_open(windows: Windows) -> bool:
    """True when the windows cover every minute of every day (no constraint at all)."""
    for day in range(7):
        covered = 0
        for start, end in sorted((w.start, w.end) for w in windows if day in w.days):
            if start > covered:
                return False
            covered = max(covered, end)
        if covered < 24 * 60:
            return False
    return True


# Files of the system's zone directory that are no IANA zone a contact or a job can be in:
# this server's own zone, the placeholder "Factory", and the copies under posix/ and right/ (the
# latter count leap seconds: their clock is 27 s off).
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})
_NOT_ZONE_DIRS = ("posix/", "right/")


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; ValueError when the zone database does not know it, or it is a file
    of the zone directory that is no zone (`localtime`, `Factory`, `posix/...`, `right/...`)."""
    if name in _NOT_ZONES or name.startswith(_NOT_ZONE_DIRS):
        raise ValueError(f"{name[:64]!r} is not an IANA time zone")
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        raise ValueError(f"unknown IANA time zone {name[:64]!r}") from None


def valid_zone(name: str) -> bool:
    """Whether `name` is an IANA zone the zone database knows."""
    if not name or len(name) > 100 or name != name.strip():
        return False
    try:
        load_zone(name)
    except ValueError:
        return False
    return True


# Zones by number prefix: `phonenumbers` decides a number's zones (and its type, which can
# widen them to the whole country) from its leading digits, and the lookup costs about 0.1 ms;
# a 10,000-contact upload shares a few hundred prefixes.
_PREFIX_CHARS = 10  # "+" and 9 digits: longer than any prefix of its time-zone data
_zones_by_prefix: dict[str, tuple[str, ...]] = {}


def number_zones(phone: str) -> tuple[str, ...]:
    """The zones `phonenumbers` gives for an E.164 number (empty when unknown)."""
    prefix = phone[:_PREFIX_CHARS]
    found = _zones_by_prefix.get(prefix)
    if found is None:
        if len(_zones_by_prefix) >= 100_000:
            _zones_by_prefix.clear()
        found = _zones_by_prefix[prefix] = _lookup_zones(phone)
    return found


def _lookup_zones(phone: str) -> tuple[str, ...]:
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return ()
    zones = phone_timezones.time_zones_for_number(parsed)
    return tuple(
        sorted(z for z in zones if z != phone_timezones.UNKNOWN_TIMEZONE and valid_zone(z))
    )


def contact_zones(
    explicit: str | None, phone: str, window_timezone: str, job_timezone: str
) -> tuple[str, ...]:
    """The zones a contact's windows are read in.

    The job's `windowTimezone` when it names a zone; else the contact's own `timezone`; else
    the zones of its number; unknown, the job's `timezone`.
    """
    if window_timezone != RECIPIENT:
        return (window_timezone,)
    if explicit:
        return (explicit,)
    return number_zones(phone) or (job_timezone,)


def _day_intervals(windows: Windows, zone: ZoneInfo, day: date) -> list[tuple[float, float]]:
    """The UTC intervals the windows are open on one local day of one zone."""
    out: list[tuple[float, float]] = []
    weekday = day.weekday()
    midnight = datetime.combine(day, time(0), tzinfo=zone)
    next_midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    for w in windows:
        if weekday not in w.days:
            continue
        start = datetime.combine(day, time(w.start // 60, w.start % 60), tzinfo=zone)
        end = (
            next_midnight
            if w.end == 24 * 60
            else datetime.combine(day, time(w.end // 60, w.end % 60), tzinfo=zone)
        )
        # A wall-clock time skipped by a daylight-saving jump is read with the offset before
        # the jump, which can put it past midnight's instant: keep the interval within the day.
        # A start skipped so comes after the jump; an end skipped so is read with the offset
        # after it, before the jump (read as a start, 00:00-02:30 on a day 02:00 jumps to
        # 03:00 ended at 03:30, an hour after 02:30 no longer came).
        a = max(start.timestamp(), midnight.timestamp())
        b = min(end.timestamp(), end.replace(fold=1).timestamp())
        if b > a:
            out.append((a, b))
    return out


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def zone_intervals(
    windows: Windows, zone_name: str, start: float, end: float
) -> list[tuple[float, float]]:
    """Open intervals of one zone overlapping [start, end), merged (a window ending at 24:00
    and one starting at 00:00 the next day make one interval)."""
    zone = ZoneInfo(zone_name)
    first = datetime.fromtimestamp(start, UTC).astimezone(zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end, UTC).astimezone(zone).date() + timedelta(days=1)
    found: list[tuple[float, float]] = []
    day = first
    while day <= last:
        found.extend(_day_intervals(windows, zone, day))
        day += timedelta(days=1)
    return [(a, b) for a, b in _merge(found) if b > start and a < end]


def _intersect(
    left: Sequence[tuple[float, float]], right: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    i = j = 0
    while i < len(left) and j < len(right):
        a = max(left[i][0], right[j][0])
        b = min(left[i][1], right[j][1])
        if a < b:
            out.append((a, b))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return out


def common_intervals(
    windows: Windows, zones: Sequence[str], start: float, end: float
) -> list[tuple[float, float]]:
    """Intervals within [start, end) in which the windows are open in every zone."""
    if always_open(windows):
        return [(start, end)]
    result: list[tuple[float, float]] | None = None
    for zone in dict.fromkeys(zones):
        intervals = zone_intervals(windows, zone, start, end)
        result = intervals if result is None else _intersect(result, intervals)
        if not result:
            return []
    return [(max(a, start), min(b, end)) for a, b in (result or [])]


def next_callable(
    windows: Windows, zones: Sequence[str], at: float
) -> tuple[float, float | None] | None:
    """The first interval, at or after `at`, in which the contact may be dialed: (from, until).

    `from` is `at` itself when the windows are open then. `until` is None when the windows are
    always open. None: they are never open in all the zones at once (no common window).
    """
    if always_open(windows):
        return at, None
    horizon = at + HORIZON_DAYS * _DAY_SECONDS
    for a, b in common_intervals(windows, zones, at, horizon):
        if b > at:
            # An interval cut at the horizon is simply looked at again when it ends there.
            return max(a, at), b
    return None


def is_open(windows: Windows, zones: Sequence[str], at: float) -> bool:
    found = next_callable(windows, zones, at)
    return found is not None and found[0] <= at


def open_seconds_per_week(windows: Windows, zones: Sequence[str], at: float) -> float:
    """How many seconds of the coming week the windows are open in every zone."""
    week = 7 * _DAY_SECONDS
    return sum(b - a for a, b in common_intervals(windows, zones, at, at + week))


def advance_open(windows: Windows, zones: Sequence[str], start: float, seconds: float) -> float:
    """The instant by which the windows have been open `seconds` in all zones, from `start`
    (estimates: work only progresses while the windows are open)."""
    if seconds <= 0 or always_open(windows):
        return start + max(0.0, seconds)
    left = seconds
    at = start
    for _ in range(520):  # ten years of weeks: a bound, not a limit met in practice
        intervals = common_intervals(windows, zones, at, at + 7 * _DAY_SECONDS)
        if not intervals:
            return start + seconds
        for a, b in intervals:
            if b - a >= left:
                return a + left
            left -= b - a
        at += 7 * _DAY_SECONDS
    return at


class Rules:
    """The store's CallingRules: windows as stored on jobs (JSON) and the organizations' caps."""

    def __init__(self, caps: dict[str, int]) -> None:
        self._caps = caps
        self._parsed: dict[str, Windows] = {}
        # A window ending moves every contact of a zone at once, from the same instant.
        self._intervals: dict[
            tuple[str | None, str | None, float], tuple[float, float | None] | None
        ] = {}

    def daily_cap(self, organization_id: str) -> int:
        return self._caps.get(organization_id, 0)

    def windows(self, windows_json: str | None) -> Windows:
        if windows_json is None:
            return ALL_DAY
        found = self._parsed.get(windows_json)
        if found is None:
            found = self._parsed[windows_json] = parse_windows(json.loads(windows_json))
        return found

    def interval(
        self, windows_json: str | None, zones: str | None, at: float
    ) -> tuple[float, float | None] | None:
        key = (windows_json, zones, at)
        if key in self._intervals:
            return self._intervals[key]
        if len(self._intervals) >= 10_000:
            self._intervals.clear()
        found = self._intervals[key] = next_callable(
            self.windows(windows_json), split_zones(zones), at
        )
        return found


def join_zones(zones: Sequence[str]) -> str:
    return ",".join(zones)


def split_zones(text: str | None) -> tuple[str, ...]:
    return tuple(z for z in (text or "UTC").split(",") if z)
