"""Idempotent creates: Idempotency-Key replays the first answer for 24 h, per organization."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from aiohttp import FormData

from tests.conftest import NUMBER, ORG, OTHER_ORG, Running

FUTURE = "2026-06-01T09:00:00Z"


def body(phone: str = "+12025550101", **fields: Any) -> dict[str, Any]:
    return {
        "fromPhoneNumberId": NUMBER,
        "name": "idem",
        "scheduledStartTime": FUTURE,
        "contacts": [{"phone": phone}],
        **fields,
    }


async def create(
    running: Running, payload: dict[str, Any], key: str, api_key: str | None = None
) -> tuple[int, Any]:
    resp = await running.client.post(
        "/batch/create",
        json=payload,
        headers={**running.headers(api_key), "Idempotency-Key": key},
    )
    return resp.status, await resp.json()


async def job_total(running: Running, org: str = ORG, key: str | None = None) -> int:
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": org}, headers=running.headers(key)
    )
    total: int = (await resp.json())["total"]
    return total


async def test_same_key_and_body_returns_the_first_answer(running: Running) -> None:
    """A retried create gets the same 201 answer and creates nothing more."""
    first = await create(running, body(), "order-1")
    second = await create(running, body(), "order-1")
    assert first[0] == second[0] == 201
    assert first[1] == second[1]
    assert await job_total(running) == 1


async def test_same_key_other_body_is_409(running: Running) -> None:
    """The same key with a different body answers 409 idempotency_key_reused."""
    assert (await create(running, body(), "order-2"))[0] == 201
    status, answer = await create(running, body("+12025550102"), "order-2")
    assert (status, answer["code"]) == (409, "idempotency_key_reused")
    assert await job_total(running) == 1


async def test_racing_retries_create_one_job(running: Running) -> None:
    """Ten concurrent creates with one key: one job, ten identical 201 answers."""
    answers = await asyncio.gather(*(create(running, body(), "race") for _ in range(10)))
    assert {status for status, _ in answers} == {201}
    assert len({a["batchJobId"] for _, a in answers}) == 1
    assert await job_total(running) == 1


async def test_key_is_per_organization_and_expires_after_a_day(running: Running) -> None:
    """Another organization's key is its own; after 24 h the key creates a new job."""
    other = {**body(), "fromPhoneNumberId": "num_b"}
    assert (await create(running, body(), "k"))[0] == 201
    assert (await create(running, other, "k", running.other_key))[0] == 201
    assert await job_total(running, OTHER_ORG, running.other_key) == 1
    await running.clock.advance(24 * 3600 + 1)
    status, answer = await create(running, body(), "k")
    assert status == 201, answer
    assert await job_total(running) == 2


async def test_csv_creates_are_idempotent_too(running: Running) -> None:
    """A multipart create retried with the same key and file is replayed."""

    def form(csv_text: bytes) -> FormData:
        data = FormData()
        data.add_field("file", io.BytesIO(csv_text), filename="c.csv")
        data.add_field("fromPhoneNumberId", NUMBER)
        data.add_field("name", "csv")
        return data

    headers = {**running.headers(), "Idempotency-Key": "csv-1"}
    answers = []
    for csv_text in (b"phone\n+12025550101\n", b"phone\n+12025550101\n", b"phone\n+12025550109\n"):
        resp = await running.client.post("/batch/create", data=form(csv_text), headers=headers)
        answers.append((resp.status, await resp.json()))
    assert answers[0] == answers[1]
    assert (answers[2][0], answers[2][1]["code"]) == (409, "idempotency_key_reused")
    assert await job_total(running) == 1


async def test_bad_idempotency_keys_are_refused(running: Running) -> None:
    """An empty, 256-character or non-ASCII key answers 400 validation_error."""
    for key in (" ", "k" * 256, "clé"):
        resp = await running.client.post(
            "/batch/create",
            json=body(),
            headers={**running.headers(), "Idempotency-Key": key},
        )
        assert (resp.status, (await resp.json())["code"]) == (400, "validation_error"), key
    assert (await create(running, body(), "k" * 255))[0] == 201
