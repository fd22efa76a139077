"""The official ElevenLabs SDK (`client.conversational_ai.batch_calls`), unchanged, against the
started service: every operation works, and every answer passes the SDK's own response model
under strict validation (not only the SDK's lenient parser)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from elevenlabs import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError as SdkApiError
from elevenlabs.errors import UnprocessableEntityError
from elevenlabs.types import (
    BatchCallDetailedResponse,
    BatchCallResponse,
    ConversationInitiationClientDataRequestInput,
    OutboundCallRecipient,
    TelephonyCallConfigInput,
    WorkspaceBatchCallsResponse,
)
from pydantic import BaseModel

from dialer.providers import livekit
from dialer.providers.base import DialRequest, DialResult
from dialer.states import ContactStatus
from tests.conftest import NUMBER, Running, StartApp, make_config, wait_until

AGENT = "agent_a"  # an agent of the test organization, outbound agent of NUMBER
FAILING = "+1415555"  # numbers the simulated provider fails (terminal `failed`)
RECIPIENT_STATUSES = {
    "pending",
    "dispatched",
    "initiated",
    "in_progress",
    "completed",
    "failed",
    "cancelled",
    "voicemail",
}


@dataclass
class Sdk:
    """An AsyncElevenLabs client on the service, keeping every answer's JSON for validation."""

    client: AsyncElevenLabs
    http: httpx.AsyncClient
    answers: list[httpx.Response] = field(default_factory=list)

    @property
    def batch_calls(self) -> Any:
        return self.client.conversational_ai.batch_calls

    def last_json(self) -> Any:
        return self.answers[-1].json()


def strict(model: type[BaseModel], data: Any) -> None:
    """`data` passes the SDK's response model under strict validation."""
    model.model_validate(data, strict=True)


@pytest.fixture
async def sdk_for() -> AsyncIterator[Any]:
    """Make an SDK client for a running app (base_url = the service, api_key = one of its keys)."""
    made: list[httpx.AsyncClient] = []

    def make(running: Running, key: str | None = None) -> Sdk:
        answers: list[httpx.Response] = []

        async def keep(response: httpx.Response) -> None:
            await response.aread()
            answers.append(response)

        http = httpx.AsyncClient(event_hooks={"response": [keep]}, timeout=10)
        made.append(http)
        base_url = str(running.client.make_url("")).rstrip("/")
        client = AsyncElevenLabs(api_key=key or running.key, base_url=base_url, httpx_client=http)
        return Sdk(client, http, answers)

    yield make
    for http in made:
        await http.aclose()


def recipient(phone: str, rid: str | None = None, **variables: Any) -> OutboundCallRecipient:
    data = ConversationInitiationClientDataRequestInput(dynamic_variables=variables)
    return OutboundCallRecipient(
        id=rid, phone_number=phone, conversation_initiation_client_data=data
    )


class RecordingProvider:
    """Answers every call at once (`completed`, or `failed` for FAILING numbers) and keeps
    each request, so a test can read what the agent would receive."""

    name = "recording"

    def __init__(self) -> None:
        self.requests: list[DialRequest] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def dial(self, request: DialRequest) -> DialResult:
        self.requests.append(request)
        if request.to_number.startswith(FAILING):
            return DialResult(status=ContactStatus.FAILED, reason="test failure")
        return DialResult(status=ContactStatus.COMPLETED, duration=1)

    async def resume(self, request: DialRequest) -> DialResult:
        return DialResult(status=ContactStatus.FAILED, reason="interrupted")


async def job_count(running: Running) -> int:
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": "org_a"}, headers=running.headers()
    )
    body: dict[str, Any] = await resp.json()
    return int(body["total"])


async def finished(sdk: Sdk, batch_id: str) -> Any:
    """Poll the SDK's get until the batch is completed (engine work, not clock time)."""

    async def done() -> bool:
        return bool((await sdk.batch_calls.get(batch_id)).status == "completed")

    await wait_until(done)
    return await sdk.batch_calls.get(batch_id)


# ----------------------------------------------------------------- create and get


async def test_sdk_create_and_get_round_trip(running: Running, sdk_for: Any) -> None:
    """create answers a valid BatchCallResponse; get shows every recipient with its id, dynamic
    variables and override, as an ordinary job visible on the /batch routes too."""
    sdk = sdk_for(running)
    start = int(running.clock.now()) + 3600
    override = {"agent": {"first_message": "Hi {{name}}", "language": "en"}, "tts": {"speed": 1}}
    ann = OutboundCallRecipient(
        id="r-ann",
        phone_number="+12025550101",
        conversation_initiation_client_data=ConversationInitiationClientDataRequestInput(
            dynamic_variables={"name": "Ann", "balance": 12.5, "vip": True},
            conversation_config_override=override,
        ),
    )
    created = await sdk.batch_calls.create(
        call_name="Renewals",
        agent_id=AGENT,
        agent_phone_number_id=NUMBER,
        recipients=[ann, recipient("+12025550102")],
        scheduled_time_unix=start,
        timezone="Europe/Paris",
        target_concurrency_limit=7,
        telephony_call_config=TelephonyCallConfigInput(ringing_timeout_secs=25),
    )
    strict(BatchCallResponse, sdk.last_json())
    assert created.status == "pending" and created.name == "Renewals"
    assert (created.scheduled_time_unix, created.timezone) == (start, "Europe/Paris")
    assert created.target_concurrency_limit == 7
    assert created.telephony_call_config.ringing_timeout_secs == 25
    assert created.total_calls_scheduled == 2 and created.total_calls_dispatched == 0

    batch = await sdk.batch_calls.get(created.id)
    strict(BatchCallDetailedResponse, sdk.last_json())
    first, second = batch.recipients
    assert (first.id, first.phone_number, first.status) == ("r-ann", "+12025550101", "pending")
    data = first.conversation_initiation_client_data
    assert data.dynamic_variables == {"name": "Ann", "balance": 12.5, "vip": True}
    assert data.conversation_config_override.agent.first_message == "Hi {{name}}"
    assert data.conversation_config_override.tts.speed == 1
    assert second.id.startswith("contact_") and second.phone_number == "+12025550102"
    assert second.conversation_initiation_client_data.dynamic_variables == {}

    detail = await running.detail(created.id)
    assert detail["status"] == "scheduled" and detail["concurrentCallLimit"] == 7
    assert detail["agentId"] == AGENT and detail["totalContacts"] == 2


async def test_sdk_create_without_caller_number_uses_the_agents(
    running: Running, sdk_for: Any
) -> None:
    """Without agent_phone_number_id the batch calls from the number whose outbound agent it is."""
    sdk = sdk_for(running)
    created = await sdk.batch_calls.create(
        call_name="x", agent_id=AGENT, recipients=[recipient("+12025550101")]
    )
    strict(BatchCallResponse, sdk.last_json())
    assert created.phone_number_id == NUMBER


async def test_dynamic_variables_and_overrides_reach_the_agent(
    start_app: StartApp, sdk_for: Any
) -> None:
    """The agent's dispatch metadata carries each recipient's dynamic variables, override and id;
    the dial uses the batch's ringing timeout."""
    provider = RecordingProvider()
    running = await start_app(provider=provider)
    sdk = sdk_for(running)
    override = {"agent": {"first_message": "Hello Ann", "prompt": {"prompt": "Be brief"}}}
    created = await sdk.batch_calls.create(
        call_name="x",
        agent_id=AGENT,
        recipients=[
            OutboundCallRecipient(
                id="r-1",
                phone_number="+12025550101",
                conversation_initiation_client_data=ConversationInitiationClientDataRequestInput(
                    dynamic_variables={"name": "Ann", "due": "2026-12-24"},
                    conversation_config_override=override,
                ),
            )
        ],
        telephony_call_config=TelephonyCallConfigInput(ringing_timeout_secs=25),
    )
    batch = await finished(sdk, created.id)
    strict(BatchCallDetailedResponse, sdk.last_json())
    assert batch.recipients[0].status == "completed"
    (request,) = provider.requests
    assert request.ringing_timeout_seconds == 25
    metadata = json.loads(livekit.agent_metadata(request))
    assert metadata["contactData"] == {
        "name": "Ann",
        "due": "2026-12-24",
        "phone": "+12025550101",
        "recipient_id": "r-1",
        "conversation_config_override": override,
    }


# ----------------------------------------------------------------- list


async def test_sdk_list_pages_with_last_doc_and_filters_by_agent(
    running: Running, sdk_for: Any
) -> None:
    """list answers newest first, `limit` at a time, `next_doc`/`has_more` leading through every
    batch once (jobs made on /batch/create included); agent_id filters."""
    sdk = sdk_for(running)
    made = [(await running.create_json([{"phone": "+12025550109"}]))["batchJobId"]]
    for _ in range(4):
        made.append(
            (
                await sdk.batch_calls.create(
                    call_name="x", agent_id=AGENT, recipients=[recipient("+12025550101")]
                )
            ).id
        )
    seen: list[str] = []
    last_doc: str | None = None
    while True:
        page = await sdk.batch_calls.list(limit=2, last_doc=last_doc)
        strict(WorkspaceBatchCallsResponse, sdk.last_json())
        assert len(page.batch_calls) <= 2
        seen += [b.id for b in page.batch_calls]
        if not page.has_more:
            assert page.next_doc is None
            break
        last_doc = page.next_doc
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    everything = await sdk.batch_calls.list()
    assert [b.id for b in everything.batch_calls] == seen and everything.has_more is False
    none = await sdk.batch_calls.list(agent_id="agent_b")
    strict(WorkspaceBatchCallsResponse, sdk.last_json())
    assert none.batch_calls == [] and none.has_more is False
    mine = await sdk.batch_calls.list(agent_id=AGENT)
    assert len(mine.batch_calls) == 5


async def test_sdk_list_refuses_bad_limit_and_unknown_cursor(
    running: Running, sdk_for: Any
) -> None:
    """An out-of-range limit or a last_doc that is no batch of yours is a 422 with detail."""
    sdk = sdk_for(running)
    for kwargs in ({"limit": 0}, {"limit": 101}, {"last_doc": "batch_nope"}):
        with pytest.raises(UnprocessableEntityError) as caught:
            await sdk.batch_calls.list(**kwargs)
        assert isinstance(caught.value.body["detail"], list)
        assert caught.value.body["detail"][0]["loc"][0] == "query"


# ----------------------------------------------------------------- cancel, retry, delete


async def test_sdk_cancel(running: Running, sdk_for: Any) -> None:
    """cancel stops a batch that has not finished; its recipients are cancelled."""
    sdk = sdk_for(running)
    created = await sdk.batch_calls.create(
        call_name="x",
        agent_id=AGENT,
        recipients=[recipient("+12025550101")],
        scheduled_time_unix=int(running.clock.now()) + 3600,
    )
    cancelled = await sdk.batch_calls.cancel(created.id)
    strict(BatchCallResponse, sdk.last_json())
    assert cancelled.status == "cancelled"
    batch = await sdk.batch_calls.get(created.id)
    assert [r.status for r in batch.recipients] == ["cancelled"]
    with pytest.raises(SdkApiError) as caught:
        await sdk.batch_calls.cancel(created.id)  # already finished
    assert caught.value.status_code == 400
    assert caught.value.body["detail"]["status"] == "job_not_cancellable"


async def test_sdk_retry_calls_failed_recipients_again(start_app: StartApp, sdk_for: Any) -> None:
    """retry dials the failed recipients once more; the others are not called again."""
    provider = RecordingProvider()
    running = await start_app(provider=provider)
    sdk = sdk_for(running)
    created = await sdk.batch_calls.create(
        call_name="x",
        agent_id=AGENT,
        recipients=[recipient("+12025550101"), recipient(f"{FAILING}0101")],
    )
    batch = await finished(sdk, created.id)
    assert [r.status for r in batch.recipients] == ["completed", "failed"]
    assert batch.retry_count == 0
    retried = await sdk.batch_calls.retry(created.id)
    strict(BatchCallResponse, sdk.last_json())
    assert retried.status in ("in_progress", "completed")
    batch = await finished(sdk, created.id)
    strict(BatchCallDetailedResponse, sdk.last_json())
    assert batch.retry_count == 1 and batch.total_calls_dispatched == 2
    assert [r.to_number for r in provider.requests].count(f"{FAILING}0101") == 2
    assert [r.to_number for r in provider.requests].count("+12025550101") == 1


async def test_sdk_delete_hides_a_finished_batch_everywhere_but_keeps_its_records(
    start_app: StartApp, sdk_for: Any
) -> None:
    """delete answers 2xx for a finished batch; then every route answers 404 and the lists leave
    it out, while its contacts' attempt rows are still in the database."""
    running = await start_app(provider=RecordingProvider())
    sdk = sdk_for(running)
    created = await sdk.batch_calls.create(
        call_name="x", agent_id=AGENT, recipients=[recipient("+12025550101")]
    )
    await finished(sdk, created.id)
    contact_id = (await running.store.list_contacts(created.id, None, 10, 0))[0].id
    assert await sdk.batch_calls.delete(created.id) is None
    assert sdk.answers[-1].status_code == 204
    with pytest.raises(SdkApiError) as caught:
        await sdk.batch_calls.get(created.id)
    assert caught.value.status_code == 404
    for path in (
        f"/batch/jobs/{created.id}",
        f"/batch/jobs/{created.id}/export",
        f"/v1/voiceai/batch-calling/{created.id}",
        f"/api/v1/public/call-batches/{created.id}/calls",
    ):
        resp = await running.client.get(path, headers=running.headers())
        assert resp.status == 404, path
    assert (await sdk.batch_calls.list()).batch_calls == []
    assert await job_count(running) == 0
    assert [a.outcome for a in await running.store.list_attempts(contact_id)] == ["completed"]
    with pytest.raises(SdkApiError) as caught:
        await sdk.batch_calls.delete(created.id)
    assert caught.value.status_code == 404


async def test_sdk_delete_refuses_a_batch_still_to_run(running: Running, sdk_for: Any) -> None:
    """A batch that has not finished is not deleted (cancel it first)."""
    sdk = sdk_for(running)
    created = await sdk.batch_calls.create(
        call_name="x",
        agent_id=AGENT,
        recipients=[recipient("+12025550101")],
        scheduled_time_unix=int(running.clock.now()) + 3600,
    )
    with pytest.raises(SdkApiError) as caught:
        await sdk.batch_calls.delete(created.id)
    assert caught.value.status_code == 400
    assert caught.value.body["detail"]["status"] == "job_not_deletable"
    assert (await sdk.batch_calls.get(created.id)).status == "pending"


# ----------------------------------------------------------------- refused submits


@pytest.mark.parametrize(
    ("recipients", "extra", "loc"),
    [
        ([{"whatsapp_user_id": "wa-1"}], {}, ["body", "recipients", 0, "whatsapp_user_id"]),
        ([{"phone_number": "+12025550101"}, {}], {}, ["body", "recipients", 1, "phone_number"]),
        (
            [{"phone_number": "+12025550101"}, {"phone_number": "(202) 555-0102"}],
            {},
            ["body", "recipients", 1, "phone_number"],
        ),
        ([{"phone_number": "+12025550101"}], {"agent_id": "agent_b"}, ["body", "agent_id"]),
        (
            [{"phone_number": "+12025550101"}],
            {"agent_phone_number_id": "num_b"},
            ["body", "agent_phone_number_id"],
        ),
        ([{"phone_number": "+12025550101"}], {"timezone": "Mars/Base"}, ["body", "timezone"]),
        (
            [{"phone_number": "+12025550101"}],
            {"target_concurrency_limit": 51},
            ["body", "target_concurrency_limit"],
        ),
        (
            [{"phone_number": "+12025550101"}],
            {
                "whatsapp_params": {
                    "whatsapp_call_permission_request_template_name": "t",
                    "whatsapp_call_permission_request_template_language_code": "en",
                }
            },
            ["body", "whatsapp_params"],
        ),
        (
            [
                {
                    "phone_number": "+12025550101",
                    "conversation_initiation_client_data": {"dynamic_variables": {"phone": "x"}},
                }
            ],
            {},
            ["body", "recipients", 0, "conversation_initiation_client_data", "dynamic_variables"],
        ),
        ([], {}, ["body", "recipients"]),
    ],
    ids=[
        "whatsapp",
        "no-phone",
        "not-e164",
        "foreign-agent",
        "foreign-number",
        "timezone",
        "concurrency",
        "whatsapp-params",
        "reserved-variable",
        "no-recipients",
    ],
)
async def test_sdk_create_refusals_are_422_with_detail(
    running: Running,
    sdk_for: Any,
    recipients: list[dict[str, Any]],
    extra: dict[str, Any],
    loc: list[Any],
) -> None:
    """Bad submits raise the SDK's UnprocessableEntityError with the vendor's `detail` list naming
    the field, and create nothing."""
    sdk = sdk_for(running)
    with pytest.raises(UnprocessableEntityError) as caught:
        await sdk.batch_calls.create(
            call_name="x",
            recipients=[OutboundCallRecipient(**r) for r in recipients],
            **{"agent_id": AGENT, **extra},
        )
    detail = caught.value.body["detail"]
    assert any(d["loc"][: len(loc)] == loc and d["msg"] for d in detail), detail
    assert await job_count(running) == 0


# ----------------------------------------------------------------- keys and the seed's route


async def test_xi_api_key_is_accepted_on_every_route(running: Running) -> None:
    """`xi-api-key` authenticates like `x-api-key`, on the /batch routes too; a wrong one is 401."""
    created = await running.create_json([{"phone": "+12025550101"}])
    for path in (f"/batch/jobs/{created['batchJobId']}", "/v1/convai/batch-calling/workspace"):
        resp = await running.client.get(path, headers={"xi-api-key": running.key})
        assert resp.status == 200, path
        resp = await running.client.get(path, headers={"xi-api-key": "dk_nope"})
        assert resp.status == 401, path
    resp = await running.client.get(
        f"/v1/convai/batch-calling/{created['batchJobId']}",
        headers={"xi-api-key": running.other_key},
    )
    assert resp.status == 404


async def test_sdk_rejects_unknown_key(running: Running, sdk_for: Any) -> None:
    """The SDK with a key this service does not know gets 401."""
    with pytest.raises(SdkApiError) as caught:
        await sdk_for(running, key="dk_nope").batch_calls.list()
    assert caught.value.status_code == 401


async def test_seed_route_answers_the_sdk_detailed_model(
    start_app: StartApp, tmp_path: Path
) -> None:
    """/v1/voiceai/batch-calling/{id} of a CSV-made job with every recipient status passes the
    SDK's BatchCallDetailedResponse strictly, recipients in the SDK's status enum."""
    rules = [{"prefix": FAILING, "outcome": "blocked", "sip_code": 603}]
    running = await start_app(make_config(tmp_path, telephony={"simulated": {"rules": rules}}))
    created = await running.create_json(
        [
            {"phone": "+12025550101", "name": "Ann", "conversation_config_override": "text"},
            {
                "phone": f"{FAILING}0101",
                "tags": ["a"],
                "conversation_config_override": {"agent": 1},
            },
        ]
    )
    await running.wait_status(created["batchJobId"], "completed")
    resp = await running.client.get(
        f"/v1/voiceai/batch-calling/{created['batchJobId']}", headers=running.headers()
    )
    body = await resp.json()
    strict(BatchCallDetailedResponse, body)
    assert {r["status"] for r in body["recipients"]} <= RECIPIENT_STATUSES
    assert body["telephony_call_config"]["ringing_timeout_secs"] > 0
    assert body["target_concurrency_limit"] == 5 and body["timezone"] == "UTC"
    # A custom field that happens to carry the override's name but not its shape is no override.
    for recipient in body["recipients"]:
        data = recipient["conversation_initiation_client_data"]
        assert data["conversation_config_override"]["agent"]["first_message"] is None
