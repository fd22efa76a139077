"""`GET /metrics`: the Prometheus exposition, parsed with prometheus-client's parser, moves as a
job runs (fake clock); its optional token; labels bounded (never a job or contact id); storage
and provider health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api import metrics
from dialer import dialed, webhooks
from dialer.clock import FakeClock
from tests.conftest import NUMBER, ORG, OTHER_ORG, Running, StartApp, make_config, wait_until
from tests.integration.test_storage_faults import FailingWrites, LedgerProvider, exists

Samples = list[tuple[str, dict[str, str], float]]


def phones(n: int, start: int = 101) -> list[dict[str, Any]]:
    return [{"phone": f"+1202555{start + i:04d}"} for i in range(n)]


async def scrape(running: Running, headers: dict[str, str] | None = None) -> Samples:
    resp = await running.client.get("/metrics", headers=headers or {})
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.content_type == "text/plain"
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of `name` with exactly these labels."""
    found = [v for n, got, v in samples if n == name and got == labels]
    assert len(found) == 1, (name, labels, [s for s in samples if s[0] == name])
    return found[0]


def fresh_ready_counts(running: Running) -> None:
    running.app[metrics.READY].ttl_seconds = 0  # every scrape counts ready contacts again


async def dialing(running: Running, job_id: str, n: int, completed: int = 0) -> None:
    """Wait until the job has n calls live and `completed` done, the engine waits for the
    clock, and the calls wait on it (so that their ends are on the clock before the test
    advances it)."""

    async def check() -> bool:
        counts = (await running.detail(job_id))["statusBreakdown"]
        return bool(
            counts["dialing"] == n
            and counts["completed"] == completed
            and running.engine.idle.is_set()
            and running.clock.sleeping >= n
        )

    await wait_until(check)


async def test_figures_move_as_a_job_runs(start_app: StartApp, tmp_path: Path) -> None:
    """Live calls, free slots, ready contacts, dials, durations, ring times, refills, cycles
    and writes follow a 6-contact job run 2 at a time on the fake clock."""
    config = make_config(tmp_path, telephony={"simulated": {"call_seconds": 10, "ring_seconds": 2}})
    running = await start_app(config)
    fresh_ready_counts(running)
    number = {"organization": ORG, "phone_number_id": NUMBER}

    before = await scrape(running)
    assert value(before, "dialer_live_calls", **number) == 0
    assert value(before, "dialer_free_slots", **number) == 0  # no job dials with it
    assert value(before, "dialer_contacts_ready", organization=ORG) == 0
    assert not [s for s in before if s[0] == "dialer_dials_total"]
    assert value(before, "dialer_attempt_duration_seconds_count") == 0
    assert value(before, "dialer_engine_running") == 1
    assert value(before, "dialer_storage_healthy") == 1
    assert value(before, "dialer_provider_reachable") == 1
    assert value(before, "dialer_outcomes_held") == 0

    job_id = (await running.create_json(phones(6), concurrentCallLimit=2))["batchJobId"]
    await dialing(running, job_id, 2)
    first = await scrape(running)
    assert value(first, "dialer_live_calls", **number) == 2
    assert value(first, "dialer_free_slots", **number) == 0  # its limit is reached
    assert value(first, "dialer_contacts_ready", organization=ORG) == 4
    assert value(first, "dialer_contacts_ready", organization=OTHER_ORG) == 0
    assert value(first, "dialer_scheduler_cycle_seconds_count") >= 1
    assert value(first, "dialer_storage_write_seconds_count") >= 1

    await running.clock.advance(12)  # 2 s ringing, 10 s talking: the first two end
    await dialing(running, job_id, 2, completed=2)
    second = await scrape(running)
    assert value(second, "dialer_dials_total", outcome="completed", sip_code="none") == 2
    assert value(second, "dialer_attempt_duration_seconds_count") == 2
    assert value(second, "dialer_attempt_duration_seconds_sum") == 24
    assert value(second, "dialer_attempt_duration_seconds_bucket", le="10.0") == 0
    assert value(second, "dialer_attempt_duration_seconds_bucket", le="15.0") == 2
    assert value(second, "dialer_ring_seconds_count") == 2
    assert value(second, "dialer_ring_seconds_sum") == 4
    assert value(second, "dialer_ring_seconds_bucket", le="2.0") == 2
    assert value(second, "dialer_slot_refill_seconds_count") == 2  # both slots refilled
    assert value(second, "dialer_slot_refill_seconds_bucket", le="+Inf") == 2
    assert value(second, "dialer_contacts_ready", organization=ORG) == 2
    assert value(second, "dialer_live_calls", **number) == 2
    assert value(second, "dialer_scheduler_cycle_seconds_count") > value(
        first, "dialer_scheduler_cycle_seconds_count"
    )
    assert value(second, "dialer_storage_write_seconds_count") > value(
        first, "dialer_storage_write_seconds_count"
    )

    await running.clock.advance(12)
    await dialing(running, job_id, 2, completed=4)
    await running.clock.advance(12)
    await running.wait_status(job_id, "completed")
    after = await scrape(running)
    assert value(after, "dialer_dials_total", outcome="completed", sip_code="none") == 6
    assert value(after, "dialer_attempt_duration_seconds_sum") == 72
    assert value(after, "dialer_ring_seconds_count") == 6
    # The last two slots had no contact left to take them: not a refill, not counted.
    assert value(after, "dialer_slot_refill_seconds_count") == 4
    assert value(after, "dialer_live_calls", **number) == 0
    assert value(after, "dialer_free_slots", **number) == 0
    assert value(after, "dialer_contacts_ready", organization=ORG) == 0
    assert value(after, "dialer_storage_write_failures_total") == 0


async def test_dials_by_outcome_and_sip_code_with_bounded_labels(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Outcomes and SIP codes are counted apart; every label is an organization, a caller
    number, an outcome, a SIP code or a bucket bound: no job or contact id anywhere."""
    config = make_config(
        tmp_path,
        telephony={
            "simulated": {
                "rules": [
                    {"prefix": "+120255501", "outcome": "busy", "sip_code": 486},
                    {"prefix": "+120255502", "outcome": "carrier_error", "sip_code": 503},
                ]
            }
        },
    )
    running = await start_app(config)
    contacts = phones(3, 101) + phones(2, 201) + phones(4, 301)  # busy, carrier error, answered
    first = (await running.create_json(contacts, maxAttempts=1))["batchJobId"]
    resp = await running.client.post(
        "/batch/create",
        json={"fromPhoneNumberId": "num_b", "name": "b", "contacts": phones(2, 401)},
        headers=running.headers(running.other_key),
    )
    second = (await resp.json())["batchJobId"]
    await running.wait_status(first, "completed")

    async def second_done() -> bool:
        resp = await running.client.get(
            f"/batch/jobs/{second}", headers=running.headers(running.other_key)
        )
        return bool((await resp.json())["status"] == "completed")

    await wait_until(second_done)

    text = await (await running.client.get("/metrics")).text()
    samples = await scrape(running)
    assert value(samples, "dialer_dials_total", outcome="busy", sip_code="486") == 3
    assert value(samples, "dialer_dials_total", outcome="carrier_error", sip_code="503") == 2
    assert value(samples, "dialer_dials_total", outcome="completed", sip_code="none") == 6

    allowed = {"organization", "phone_number_id", "outcome", "sip_code", "result", "le"}
    numbers = {(n.organization, n.id) for n in config.phone_numbers}
    for name, labels, _ in samples:
        assert set(labels) <= allowed, (name, labels)
        if "phone_number_id" in labels:
            assert (labels["organization"], labels["phone_number_id"]) in numbers
        if "organization" in labels:
            assert labels["organization"] in {ORG, OTHER_ORG}
        if "sip_code" in labels:
            assert labels["sip_code"] == "none" or labels["sip_code"].isdigit()
        if "result" in labels:
            assert labels["result"] in webhooks.SEND_RESULTS
    assert first not in text and second not in text
    detail = await running.detail(first)
    for contact in detail["contacts"]:
        assert f'"{contact["id"]}"' not in text


async def test_free_slots_within_the_organization_cap(start_app: StartApp, tmp_path: Path) -> None:
    """Free slots count what a job could start within its own and its organization's caps."""
    config = make_config(
        tmp_path,
        organizations=[{"id": ORG, "max_concurrent_calls": 4}, {"id": OTHER_ORG}],
        telephony={"simulated": {"call_seconds": 60}},
    )
    running = await start_app(config)
    job_id = (await running.create_json(phones(3), concurrentCallLimit=10))["batchJobId"]
    await dialing(running, job_id, 3)
    samples = await scrape(running)
    number = {"organization": ORG, "phone_number_id": NUMBER}
    assert value(samples, "dialer_live_calls", **number) == 3
    assert value(samples, "dialer_free_slots", **number) == 1  # the organization's 4, not 10
    other = {"organization": OTHER_ORG, "phone_number_id": "num_b"}
    assert value(samples, "dialer_live_calls", **other) == 0


async def test_token_is_required_when_configured(start_app: StartApp, tmp_path: Path) -> None:
    """With `[metrics] token`, only `Authorization: Bearer <token>` is let in (401 otherwise,
    an API key included); without it no key is needed (the other tests)."""
    running = await start_app(make_config(tmp_path, metrics={"token": "s3cret"}))
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret"},
        {"x-api-key": running.key},
        {"Authorization": f"Bearer {running.key}"},
    ):
        resp = await running.client.get("/metrics", headers=headers)
        body = await resp.json()
        assert (resp.status, body["code"]) == (401, "unauthorized"), headers
    samples = await scrape(running, {"Authorization": "Bearer s3cret"})
    assert value(samples, "dialer_engine_running") == 1


async def long_calls(
    start_app: StartApp, tmp_path: Path, contacts: int, limit: int
) -> tuple[Running, LedgerProvider, FakeClock, str]:
    """A job of minute-long calls on the fake clock, its first `limit` calls live."""
    config = make_config(tmp_path, telephony={"simulated": {"call_seconds": 60}})
    clock = FakeClock()
    provider = LedgerProvider(config, clock)
    running = await start_app(config, provider=provider, clock=clock)
    created = await running.create_json(phones(contacts), concurrentCallLimit=limit)
    job_id: str = created["batchJobId"]
    await dialing(running, job_id, limit)
    return running, provider, clock, job_id


async def test_storage_and_provider_health(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage health drops while writes fail (failures counted, outcomes held) and comes back;
    provider reachability drops while dials do not reach it."""
    fail = FailingWrites(monkeypatch)
    running, provider, clock, _ = await long_calls(start_app, tmp_path, 4, 2)
    fail.on = True
    await clock.advance(60)
    await wait_until(lambda: _storage_down(running))
    down = await scrape(running)
    assert value(down, "dialer_storage_healthy") == 0
    assert value(down, "dialer_outcomes_held") == 2
    assert value(down, "dialer_storage_write_failures_total") >= 1

    fail.on = False
    provider.down = True
    await clock.advance(5)
    await wait_until(lambda: _provider_down(running))
    up = await scrape(running)
    assert value(up, "dialer_storage_healthy") == 1
    assert value(up, "dialer_outcomes_held") == 0
    assert value(up, "dialer_provider_reachable") == 0
    assert value(up, "dialer_dials_total", outcome="not_placed", sip_code="none") >= 1


async def _storage_down(running: Running) -> bool:
    return running.engine.storage_outage is not None


async def _provider_down(running: Running) -> bool:
    engine = running.engine
    return (
        engine.provider_outage is not None
        and engine.storage_outage is None
        and (engine.held_outcomes == 0)
    )


async def test_each_app_has_its_own_registry(start_app: StartApp, tmp_path: Path) -> None:
    """Two apps in one process never share figures: each scrape shows its own engine only."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    busy = await start_app(make_config(tmp_path / "a"))
    quiet = await start_app(make_config(tmp_path / "b"))
    job_id = (await busy.create_json(phones(3)))["batchJobId"]
    await busy.wait_status(job_id, "completed")
    assert (
        value(await scrape(busy), "dialer_dials_total", outcome="completed", sip_code="none") == 3
    )
    assert not [s for s in await scrape(quiet) if s[0] == "dialer_dials_total"]


async def test_a_dial_log_that_cannot_be_written_is_dropped_and_calls_go_on(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dial log is kept from the engine's start; a write to it that fails (a full disk)
    drops it: the gauge says so, the file is gone, and the calls are placed all the same."""
    running, provider, clock, job_id = await long_calls(start_app, tmp_path, 2, 1)
    assert value(await scrape(running), "dialer_dial_log_kept") == 1

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dialed.os, "write", full)
    await clock.advance(60)  # the first call ends; the second one's attempt cannot be logged
    await dialing(running, job_id, 1, completed=1)
    assert value(await scrape(running), "dialer_dial_log_kept") == 0
    assert not exists(running.store.path + ".dialed")
    assert [contact for contact, _ in provider.ledger] == [1, 2]
