"""The OpenAPI document: served without a key, covers every route, matches real answers."""

from __future__ import annotations

from typing import Any

from api import openapi, schemas
from tests.conftest import ORG, Running


async def get_document(running: Running) -> dict[str, Any]:
    resp = await running.client.get("/openapi.json")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


async def test_document_is_served_without_a_key(running: Running) -> None:
    """GET /openapi.json needs no API key and is an OpenAPI 3.1 document."""
    doc = await get_document(running)
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["apiKey"]["name"] == "x-api-key"


async def test_every_route_of_the_app_is_in_the_document(running: Running) -> None:
    """A route added to the app without openapi.register() fails this test."""
    doc = await get_document(running)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = set(openapi.routes_of(running.app))
    assert served - documented == set()
    assert ("POST", "/batch/create") in served


async def test_every_operation_documents_its_errors_and_answers(running: Running) -> None:
    """Keyed operations list 401 and 429 in their envelope; every answer has a schema."""
    doc = await get_document(running)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            ok = [code for code in op["responses"] if code.startswith("2")]
            assert len(ok) == 1, (method, path)
            if "security" in op:
                assert {"401", "429"} <= set(op["responses"]), (method, path)
                assert "rate_limited" in op["responses"]["429"]["description"]


async def test_answers_match_their_models(running: Running) -> None:
    """Real answers of create, detail, list and an error validate against their models."""
    resp = await running.client.post(
        "/batch/create",
        json={
            "fromPhoneNumberId": "num_a",
            "name": "x",
            "scheduledStartTime": "2026-06-01T09:00:00Z",
            "contacts": [{"phone": "+12025550101", "plan": "gold"}],
        },
        headers=running.headers(),
    )
    created = schemas.CreateAnswer.model_validate(await resp.json())
    detail = await running.detail(created.batchJobId)
    assert schemas.JobDetail.model_validate(detail).contacts[0].contactData["plan"] == "gold"
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": ORG}, headers=running.headers()
    )
    assert schemas.JobList.model_validate(await resp.json()).total == 1
    resp = await running.client.get("/batch/jobs/nope", headers=running.headers())
    assert schemas.ErrorEnvelope.model_validate(await resp.json()).code == "job_not_found"
    resp = await running.client.get(
        f"/v1/voiceai/batch-calling/{created.batchJobId}", headers=running.headers()
    )
    assert len(schemas.BatchCall.model_validate(await resp.json()).recipients) == 1
