"""`dialer.jsontext.dumps`: orjson's speed, and nothing the standard library could write fails."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from dialer import jsontext


class Colour(StrEnum):
    RED = "red"


def test_writes_the_same_json_as_the_standard_library() -> None:
    value = {
        "id": "batch_1",
        "n": 3,
        "ratio": 0.1,
        "delay": 300.0,
        "none": None,
        "flags": [True, False],
        "nested": {"é": "ünïcode ✓", "q": 'quote " and \\ and \n'},
        "status": Colour.RED,
        7: "int key",
    }
    text = jsontext.dumps(value)
    assert json.loads(text) == json.loads(json.dumps(value))
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_what_orjson_refuses_is_written_by_the_standard_library() -> None:
    big = 2**70  # beyond 64 bits: orjson raises, and reads such a number back as a float
    assert json.loads(jsontext.dumps({"big": big})) == {"big": big}
    lone = "\ud800"  # a lone surrogate (json.loads makes them from "\\ud800")
    assert jsontext.dumps({"s": lone}) == '{"s":"\\ud800"}'


def test_default_turns_what_json_cannot_hold_into_what_it_can() -> None:
    moment = datetime(2026, 12, 2, tzinfo=UTC)
    assert jsontext.dumps({"at": moment, "x": {1, 2}}, repr) == (
        '{"at":"2026-12-02T00:00:00+00:00","x":"{1, 2}"}'
    )
    assert jsontext.dumps({"obj": object()}, lambda o: "an object") == '{"obj":"an object"}'


def test_a_dataclass_is_written_by_default_so_its_hidden_fields_stay_hidden() -> None:
    @dataclass(frozen=True)
    class Endpoint:
        url: str
        secret: str = field(repr=False)

    text = jsontext.dumps({"endpoint": Endpoint("https://example.com", "whsec_SECRET")}, repr)
    assert "whsec_SECRET" not in text
    assert json.loads(text)["endpoint"].endswith("Endpoint(url='https://example.com')")
