"""Calling-window arithmetic: explicit instants in, UTC intervals out (no clock involved)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dialer import windows
from dialer.windows import Window, WindowError


def ts(text: str) -> float:
    """An ISO UTC time as unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def iso(value: float | None) -> str | None:
    """Unix seconds as ISO UTC (None stays None)."""
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


EVERY_DAY_8_21 = windows.DEFAULT_WINDOWS
NY = ("America/New_York",)


def test_parse_accepts_several_windows_and_days() -> None:
    """Two windows on weekdays and another on Saturday parse with their days in order."""
    parsed = windows.parse_windows(
        [
            {"days": ["fri", "mon"], "start": "09:00", "end": "12:00"},
            {"days": ["mon", "fri"], "start": "14:00", "end": "18:30"},
            {"days": ["sat"], "start": "10:00", "end": "24:00"},
        ]
    )
    assert parsed[0] == Window(days=(0, 4), start=540, end=720)
    assert parsed[1].end == 18 * 60 + 30
    assert parsed[2].end == 1440
    assert windows.windows_json(parsed)[0] == {
        "days": ["mon", "fri"],
        "start": "09:00",
        "end": "12:00",
    }


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([], "non-empty list"),
        ("08:00-21:00", "non-empty list"),
        ([{"days": ["mon"], "start": "21:00", "end": "08:00"}], "must be before end"),
        ([{"days": ["mon"], "start": "09:00", "end": "09:00"}], "must be before end"),
        ([{"days": ["funday"], "start": "09:00", "end": "10:00"}], "not one of mon..sun"),
        ([{"days": [], "start": "09:00", "end": "10:00"}], "days must be a non-empty"),
        ([{"days": ["mon"], "start": "9:0", "end": "10:00"}], "HH:MM"),
        ([{"days": ["mon"], "start": "09:00", "end": "10:00 "}], "HH:MM"),
        ([{"days": ["mon"], "start": "09:00", "end": "25:00"}], "HH:MM"),
        ([{"days": ["mon"], "start": "24:00", "end": "24:00"}], "before 24:00"),
        ([{"days": ["mon"], "start": "09:00"}], "end is required"),
        ([{"days": ["mon"], "start": "09:00", "end": "10:00", "tz": "x"}], "unknown field"),
        ([5], "must be an object"),
    ],
)
def test_parse_rejects_malformed_windows_naming_the_problem(value: object, problem: str) -> None:
    """Each malformed window is refused with a message naming what is wrong."""
    with pytest.raises(WindowError, match=problem):
        windows.parse_windows(value)


def test_default_is_every_day_8_to_21() -> None:
    """The default windows are every day 08:00-21:00."""
    assert windows.windows_json(windows.DEFAULT_WINDOWS) == [
        {"days": list(windows.DAYS), "start": "08:00", "end": "21:00"}
    ]


def test_open_now_gives_the_rest_of_the_window() -> None:
    """Inside the window: callable from `at` until the window's local end."""
    # 15:00 UTC is 10:00 in New York (EST, UTC-5) on 2026-01-05.
    at = ts("2026-01-05T15:00:00Z")
    start, until = windows.next_callable(EVERY_DAY_8_21, NY, at) or (0.0, None)
    assert start == at
    assert iso(until) == "2026-01-06T02:00:00Z"  # 21:00 EST
    assert windows.is_open(EVERY_DAY_8_21, NY, at)


def test_closed_now_gives_the_next_opening() -> None:
    """Outside the window: the next opening is 08:00 local the next morning."""
    at = ts("2026-01-05T03:00:00Z")  # 22:00 EST on the 4th
    found = windows.next_callable(EVERY_DAY_8_21, NY, at)
    assert found is not None
    assert iso(found[0]) == "2026-01-05T13:00:00Z"
    assert iso(found[1]) == "2026-01-06T02:00:00Z"
    assert not windows.is_open(EVERY_DAY_8_21, NY, at)


def test_window_end_is_exclusive() -> None:
    """At the window's end no call may start: the next interval is the next day's."""
    at = ts("2026-01-06T02:00:00Z")  # exactly 21:00 EST
    found = windows.next_callable(EVERY_DAY_8_21, NY, at)
    assert found is not None and iso(found[0]) == "2026-01-06T13:00:00Z"


def test_days_of_the_week_are_local_days() -> None:
    """A weekday-only window skips the local weekend even when UTC is already Monday."""
    weekdays = windows.parse_windows(
        [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}]
    )
    # Friday 2026-01-09 18:00 in Los Angeles is Saturday 02:00 UTC.
    found = windows.next_callable(weekdays, ("America/Los_Angeles",), ts("2026-01-10T02:00:00Z"))
    assert found is not None
    assert iso(found[0]) == "2026-01-12T17:00:00Z"  # Monday 09:00 PST


def test_several_zones_open_only_when_open_in_all() -> None:
    """With New York and Los Angeles the window is 08:00 LA (11:00 NY) to 21:00 NY (18:00 LA)."""
    zones = ("America/New_York", "America/Los_Angeles")
    at = ts("2026-01-05T14:00:00Z")  # 09:00 NY, 06:00 LA: open in NY only
    found = windows.next_callable(EVERY_DAY_8_21, zones, at)
    assert found is not None
    assert iso(found[0]) == "2026-01-05T16:00:00Z"  # 08:00 PST
    assert iso(found[1]) == "2026-01-06T02:00:00Z"  # 21:00 EST
    assert not windows.is_open(EVERY_DAY_8_21, zones, at)


def test_zones_that_never_overlap_have_no_common_window() -> None:
    """New York and Sydney never share 09:00-12:00: no interval at all."""
    narrow = windows.parse_windows([{"days": list(windows.DAYS), "start": "09:00", "end": "12:00"}])
    zones = ("America/New_York", "Australia/Sydney")
    assert windows.next_callable(narrow, zones, ts("2026-01-05T00:00:00Z")) is None
    assert windows.open_seconds_per_week(narrow, zones, ts("2026-01-05T00:00:00Z")) == 0


def test_spring_forward_day_keeps_wall_clock_windows() -> None:
    """On the US spring-forward day (2026-03-08) 08:00 New York is 12:00 UTC, not 13:00."""
    before = windows.next_callable(EVERY_DAY_8_21, NY, ts("2026-03-07T05:00:00Z"))
    on_day = windows.next_callable(EVERY_DAY_8_21, NY, ts("2026-03-08T05:00:00Z"))
    assert before is not None and on_day is not None
    assert iso(before[0]) == "2026-03-07T13:00:00Z"  # EST
    assert iso(on_day[0]) == "2026-03-08T12:00:00Z"  # EDT
    assert iso(on_day[1]) == "2026-03-09T01:00:00Z"  # 21:00 EDT


def test_fall_back_day_and_a_skipped_hour() -> None:
    """On fall-back day windows follow local time; a window starting in the skipped hour opens
    when the clock jumps."""
    found = windows.next_callable(EVERY_DAY_8_21, NY, ts("2026-11-01T05:00:00Z"))
    assert found is not None and iso(found[0]) == "2026-11-01T13:00:00Z"  # 08:00 EST
    night = windows.parse_windows([{"days": ["sun"], "start": "02:30", "end": "04:00"}])
    gap = windows.next_callable(night, NY, ts("2026-03-08T05:00:00Z"))
    assert gap is not None
    assert iso(gap[0]) == "2026-03-08T07:30:00Z"  # 02:30 read as EST = 03:30 EDT
    assert iso(gap[1]) == "2026-03-08T08:00:00Z"  # 04:00 EDT


def test_a_window_ending_in_the_skipped_hour_ends_before_the_jump() -> None:
    """00:00-02:30 on the day 02:00 jumps to 03:00 (New York, 2027-03-14): 02:30 never comes,
    and the window must not run past the jump (it ended at 03:30 EDT, 07:30 UTC)."""
    night = windows.parse_windows([{"days": ["sun"], "start": "00:00", "end": "02:30"}])
    found = windows.next_callable(night, NY, ts("2027-03-14T05:00:00Z"))
    assert found is not None
    assert iso(found[0]) == "2027-03-14T05:00:00Z"  # 00:00 EST
    assert found[1] is not None and found[1] <= ts("2027-03-14T07:00:00Z")  # 03:00 EDT, the jump


def test_all_day_windows_are_always_open() -> None:
    """00:00-24:00 every day puts no bound on dialing."""
    assert windows.always_open(windows.ALL_DAY)
    assert windows.next_callable(windows.ALL_DAY, NY, 123.0) == (123.0, None)
    assert not windows.always_open(EVERY_DAY_8_21)


def test_adjacent_windows_merge_across_midnight() -> None:
    """22:00-24:00 and 00:00-06:00 make one interval through midnight."""
    late = windows.parse_windows(
        [
            {"days": list(windows.DAYS), "start": "22:00", "end": "24:00"},
            {"days": list(windows.DAYS), "start": "00:00", "end": "06:00"},
        ]
    )
    found = windows.next_callable(late, ("UTC",), ts("2026-01-05T23:00:00Z"))
    assert found is not None and iso(found[1]) == "2026-01-06T06:00:00Z"


def test_zones_of_a_number() -> None:
    """A Washington number is New York time; an unknown zone falls back to the job's."""
    assert windows.number_zones("+12025550100") == ("America/New_York",)
    assert windows.contact_zones(None, "+12025550100", "recipient", "UTC") == NY
    assert windows.contact_zones("Europe/Paris", "+12025550100", "recipient", "UTC") == (
        "Europe/Paris",
    )
    assert windows.contact_zones("Europe/Paris", "+12025550100", "Asia/Tokyo", "UTC") == (
        "Asia/Tokyo",
    )
    assert len(windows.number_zones("+18005550100")) > 1  # toll-free: every US zone
    assert not windows.valid_zone("Mars/Olympus")
    assert windows.valid_zone("Australia/Sydney")


@pytest.mark.parametrize(
    "name", ["localtime", "Factory", "posixrules", "posix/America/New_York", "right/Europe/Paris"]
)
def test_files_of_the_zone_directory_that_are_no_zone_are_refused(name: str) -> None:
    """`localtime` is this server's zone, `Factory` a placeholder, `right/...` counts leap
    seconds (27 s off): none is the zone of a person (all were accepted)."""
    assert not windows.valid_zone(name)
    with pytest.raises(ValueError):
        windows.load_zone(name)
    assert windows.valid_zone("America/New_York") and windows.valid_zone("UTC")
