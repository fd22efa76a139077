"""Validation errors turned into answers: bounded whatever the number of problems."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from api import errors
from api.batch import validation_error


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = 0


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Item]


def failing(problems: int) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate({"items": [{"bad": 1} for _ in range(problems)]})
    return caught.value


def test_a_few_problems_are_listed() -> None:
    answer = validation_error(failing(30))
    assert (answer.status, answer.code) == (400, "validation_error")
    assert answer.message.count("unknown field 'items.") == 20
    assert answer.message.endswith("and 10 more")


def test_too_many_problems_are_counted_without_reading_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_ERRORS_READ problems none is read one by one (each costs ~1 us and ~1 KB)."""
    exc = failing(errors.MAX_ERRORS_READ + 1)

    def read_all(*args: object, **kwargs: object) -> None:
        raise AssertionError("every problem was read")

    monkeypatch.setattr(ValidationError, "errors", read_all)
    answer = validation_error(exc)
    assert (answer.status, answer.code) == (400, "validation_error")
    assert answer.message.startswith(f"the body has {errors.MAX_ERRORS_READ + 1} problems")
