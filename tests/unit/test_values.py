"""The values the engine makes for every call (`storage.rows.value`): frozen to the type checker,
plain dataclasses at run time (a frozen one's fields cost six times as much to set)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

from mypy import api as mypy_api

from dialer.providers.base import DialRequest, DialResult
from dialer.retry import Decision
from storage.rows import ClaimedContact, Outcome

HOT = (ClaimedContact, Outcome, DialRequest, DialResult, Decision)


def claim(**changes: object) -> ClaimedContact:
    fields = {
        "id": 7,
        "job_id": "batch_1",
        "seq": 1,
        "phone": "+12025550123",
        "contact_data": {},
        "attempt_no": 1,
        "max_attempts": 3,
        "room_name": "r",
        "started_at": 10.0,
    }
    return ClaimedContact(**{**fields, **changes})  # type: ignore[arg-type]


def test_values_compare_and_hash_by_value_as_frozen_dataclasses_do() -> None:
    for cls in HOT:
        assert dataclasses.is_dataclass(cls)
        assert cls.__hash__ is not None and "__slots__" in vars(cls)
    a, b = claim(), claim()
    assert a == b and claim(attempt_no=2) != a
    ended = [
        Outcome(
            7, "batch_1", "org", 1, "busy", "queued", 99.0, 486, None, None, 12.0, None, 0.0, 10.0
        )
        for _ in range(2)
    ]
    assert hash(ended[0]) == hash(ended[1]) and len(set(ended)) == 1
    assert dataclasses.replace(a, started_at=11.0) == a.started(11.0)


def test_the_type_checker_refuses_an_assignment_to_a_value_field(tmp_path: Path) -> None:
    source = tmp_path / "assigns.py"
    source.write_text(
        textwrap.dedent(
            """
            from dialer.providers.base import DialResult
            from storage.rows import ClaimedContact, Outcome

            def change(c: ClaimedContact, o: Outcome, r: DialResult) -> None:
                c.started_at = 1.0
                o.next_status = "completed"
                r.status = "busy"
            """
        )
    )
    out, _, status = mypy_api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", str(source)]
    )
    assert status == 1, out
    assert out.count("is read-only") == 3, out
