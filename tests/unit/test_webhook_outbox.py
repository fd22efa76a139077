"""The webhook outbox in the Store: one change row per change in the engine's transaction,
deliveries pending from the event on and taken (numbered, written) only by the sender."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dialer import results, states
from storage import db as dbmod
from storage import store as storemod
from storage.rows import (
    AlwaysOpen,
    ClaimedContact,
    DeliveryAttempt,
    DueDelivery,
    NewResult,
    WebhookDeliveryRow,
    WebhookEndpointRow,
)
from storage.store import Store
from tests.unit.conftest import ORG, T0, namer, new_contacts, new_job, outcome_for, running_job

OTHER = "org_b"


async def add_endpoint(
    store: Store, endpoint_id: str, events: tuple[str, ...] | None = None, org: str = ORG
) -> None:
    await store.insert_webhook_endpoint(
        WebhookEndpointRow(endpoint_id, org, "http://127.0.0.1:9/h", events, None, "whsec_x", T0)
    )


async def test_an_endpoint_past_the_limit_is_not_inserted(store: Store) -> None:
    """insert_webhook_endpoint adds an endpoint only below its organization's limit (False
    past it; other organizations count apart); a limit above the 32 slots is refused."""

    def endpoint(n: int, org: str = ORG) -> WebhookEndpointRow:
        return WebhookEndpointRow(f"whep_{org}_{n}", org, "http://h/", None, None, "whsec_x", T0)

    assert [await store.insert_webhook_endpoint(endpoint(n), 2) for n in range(3)] == [
        True,
        True,
        False,
    ]
    assert await store.insert_webhook_endpoint(endpoint(0, OTHER), 2)
    assert [e.id for e in await store.list_webhook_endpoints(ORG)] == [
        f"whep_{ORG}_0",
        f"whep_{ORG}_1",
    ]
    slots = [await store.insert_webhook_endpoint(endpoint(n, "org_c")) for n in range(33)]
    assert slots == [True] * storemod.WEBHOOK_ENDPOINT_SLOTS + [False]
    with pytest.raises(ValueError, match="at most 32"):
        await store.insert_webhook_endpoint(endpoint(9), storemod.WEBHOOK_ENDPOINT_SLOTS + 1)


async def claim(store: Store, limit: int, job_id: str = "job_1") -> list[ClaimedContact]:
    return (await store.claim({job_id: limit}, T0, namer))[job_id].contacts


async def take(
    store: Store, endpoint_id: str, free: int, now: float = T0 + 100, busy: list[int] | None = None
) -> list[DueDelivery]:
    """What the sender would send now to the endpoint with `free` slots."""
    due, _ = await store.take_webhook_deliveries(
        {endpoint_id: free}, {endpoint_id: busy or []}, now
    )
    return due


async def listed(store: Store, org: str = ORG, **filters: Any) -> list[WebhookDeliveryRow]:
    rows, total = await store.list_webhook_deliveries(
        org, filters.get("endpoint_id"), filters.get("status"), 100, 0
    )
    assert total == len(rows)
    return rows


def rows(store: Store, sql: str) -> list[sqlite3.Row]:
    conn = dbmod.connect(store.path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(store: Store, table: str) -> int:
    return int(rows(store, f"SELECT count(*) FROM {table}")[0][0])


async def three_outcomes(store: Store) -> None:
    """A running job of 3 contacts (job.started) whose attempts ended: completed, busy and
    retried, no_answer (5 contact events)."""
    await running_job(store, 3)
    done, retried, unanswered = await claim(store, 3)
    await store.record_outcomes(
        [
            outcome_for(done, "completed"),
            outcome_for(retried, "busy", "queued", next_retry_at=T0 + 600),
            outcome_for(unanswered, "no_answer"),
        ],
        T0 + 60,
    )


async def test_an_ended_attempt_writes_one_change_row_and_no_delivery_row(store: Store) -> None:
    """The engine's transaction writes one row per ended attempt, whichever events it makes,
    and no delivery row; the deliveries are listed pending, never sent, with their ids."""
    await add_endpoint(store, "whep_a")
    await three_outcomes(store)
    assert count(store, "webhook_changes") == 4  # job.started + 3 attempts
    assert count(store, "webhook_taken_deliveries") == 0
    deliveries = await listed(store)
    assert [d.type for d in deliveries] == [
        "contact.finished",
        "contact.attempt_finished",
        "contact.attempt_finished",
        "contact.finished",
        "contact.attempt_finished",
        "job.started",
    ]
    assert {(d.status, d.attempts, d.sequence, d.endpoint_id) for d in deliveries} == {
        ("pending", 0, None, "whep_a")
    }
    assert [d.id for d in deliveries] == [d.event_id * 32 for d in deliveries]  # slot 0
    assert len({d.webhook_id for d in deliveries}) == 6


async def test_a_result_posted_during_the_call_is_in_its_attempts_events(store: Store) -> None:
    """Results posted while the calls were live change the contacts in the outcomes' transaction:
    each attempt's one change row shows the contact as the result left it (a voicemail queued
    for its retry: no contact.finished; a no_answer the agent completed: one, completed)."""
    store.result_rules = results.ResultRules(AlwaysOpen())
    await add_endpoint(store, "whep_a")
    await running_job(store, 2)
    voicemail, reached = await claim(store, 2)
    for contact, disposition in ((voicemail, "voicemail"), (reached, "completed")):
        new = NewResult(
            contact.room_name, contact.id, 1, disposition, None, None, None, "simulated"
        )
        assert await store.record_result(new, ORG, T0 + 30, window_seconds=900, most_per_attempt=5)
    await store.record_outcomes(
        [outcome_for(voicemail, "completed"), outcome_for(reached, "no_answer")], T0 + 60
    )
    changes = rows(
        store,
        "SELECT contact_id, kind, status, failure_reason, next_retry_at IS NOT NULL"
        " FROM webhook_changes WHERE contact_id IS NOT NULL ORDER BY id",
    )
    assert [tuple(r) for r in changes] == [
        (voicemail.id, 7, "queued", "voicemail", 1),
        (reached.id, 8, "completed", None, 0),
    ]
    assert sorted(d.type for d in await listed(store)) == [
        "contact.attempt_finished",
        "contact.attempt_finished",
        "contact.finished",
        "contact.result",
        "contact.result",
        "job.started",
    ]


async def test_taking_numbers_the_events_in_order_and_keeps_ids(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender takes the oldest first; an event gets its sequence when it or a later one is
    taken, in event order; ids and webhook-ids are the ones listed before."""
    monkeypatch.setattr(storemod, "WEBHOOK_TAKE_AHEAD", 2)
    await add_endpoint(store, "whep_a")
    await three_outcomes(store)
    before = {d.id: d.webhook_id for d in await listed(store)}
    first = await take(store, "whep_a", 2)
    assert [(d.type, d.sequence, d.attempts) for d in first] == [
        ("job.started", 1, 0),
        ("contact.attempt_finished", 2, 0),
    ]
    assert first[1].data["attempt"]["outcome"] == "completed"
    assert first[1].data["status"] == "completed"
    assert all(before[d.id] == d.webhook_id for d in first)
    assert count(store, "webhook_taken_deliveries") == 2
    # The attempt's change made two events: both are numbered, the second not taken yet.
    after = {d.id: d for d in await listed(store)}
    assert {i: d.webhook_id for i, d in after.items()} == before
    assert sorted(d.sequence for d in after.values() if d.sequence is not None) == [1, 2, 3]
    rest = await take(store, "whep_a", 10, busy=[d.id for d in first])
    assert [d.sequence for d in rest] == [3, 4, 5, 6]
    assert [d.type for d in rest] == [
        "contact.finished",
        "contact.attempt_finished",
        "contact.attempt_finished",
        "contact.finished",
    ]
    assert rest[1].data["status"] == "queued" and rest[1].data["nextRetryAt"] is not None
    assert count(store, "webhook_taken_deliveries") == 6


async def test_an_endpoint_takes_its_next_ones_in_one_write(store: Store) -> None:
    """Sending one delivery takes the endpoint's next ones with it (up to the take-ahead), in
    one write; they are sent from their rows, the first ones first."""
    await add_endpoint(store, "whep_a")
    await three_outcomes(store)
    (first,) = await take(store, "whep_a", 1)
    assert count(store, "webhook_taken_deliveries") == 6
    assert {d.sequence for d in await listed(store)} == {1, 2, 3, 4, 5, 6}
    rest = await take(store, "whep_a", 10, busy=[first.id])
    assert [d.sequence for d in rest] == [2, 3, 4, 5, 6]


async def test_sequences_count_per_organization(store: Store) -> None:
    """Two organizations' changes written in the same transactions: each numbers its own."""
    await add_endpoint(store, "whep_a")
    await add_endpoint(store, "whep_b", org=OTHER)
    await store.create_job(new_job("job_1"), new_contacts(2))
    await store.create_job(new_job("job_2", organization_id=OTHER), new_contacts(2))
    pending = states.JobStatus.PENDING.value
    assert await store.start_jobs(["job_1", "job_2"], [pending], T0) == ["job_1", "job_2"]
    claimed = await store.claim({"job_1": 2, "job_2": 2}, T0, namer)
    mine, theirs = claimed["job_1"].contacts, claimed["job_2"].contacts
    outcomes = [
        outcome_for(c, "completed") for pair in zip(mine, theirs, strict=True) for c in pair
    ]
    outcomes = [replace(o, organization_id=OTHER) if o.job_id != "job_1" else o for o in outcomes]
    await store.record_outcomes(outcomes, T0 + 60)
    for endpoint_id in ("whep_a", "whep_b"):
        sent = await take(store, endpoint_id, 10)
        assert [d.sequence for d in sent] == [1, 2, 3, 4, 5, 6], endpoint_id
        assert (sent[0].type, sent[-1].type) == ("job.started", "job.completed")
    assert {d.endpoint_id for d in await listed(store, OTHER)} == {"whep_b"}


async def test_due_retries_filling_the_slots_leave_the_new_events_for_later(
    store: Store,
) -> None:
    """Retries due before the new events take every slot; the new events are taken next."""
    await add_endpoint(store, "whep_a")
    await running_job(store, 2)
    early, late = await claim(store, 2)
    await store.record_outcomes([outcome_for(early, "completed")], T0 + 60)
    sent = await take(store, "whep_a", 3)  # job.started, and the early contact's two
    await store.record_webhook_attempts(
        [DeliveryAttempt(d.id, 0, "pending", T0 + 105, 500, "HTTP 500", T0 + 100) for d in sent]
    )
    await store.record_outcomes([outcome_for(late, "completed")], T0 + 200)
    retried = await take(store, "whep_a", 3, now=T0 + 300)
    assert [d.id for d in retried] == [d.id for d in sent]
    await store.record_webhook_attempts(
        [DeliveryAttempt(d.id, 1, "delivered", None, 200, None, T0 + 300) for d in retried]
    )
    new = await take(store, "whep_a", 3, now=T0 + 301)
    assert [(d.type, d.sequence) for d in new] == [
        ("contact.attempt_finished", 4),
        ("contact.finished", 5),
        ("job.completed", 6),
    ]


async def test_an_endpoint_gets_its_types_from_its_creation_on(store: Store) -> None:
    """An endpoint created later gets none of the earlier events; one that takes a rare type
    gets it after many events it does not take."""
    await add_endpoint(store, "whep_all")
    await running_job(store, 3)
    contacts = await claim(store, 3)
    await store.record_outcomes([outcome_for(contacts[0], "completed")], T0 + 60)
    await add_endpoint(store, "whep_rare", events=("job.completed",))
    assert await take(store, "whep_rare", 4) == []
    await store.record_outcomes([outcome_for(contacts[1], "completed")], T0 + 61)
    assert await take(store, "whep_rare", 4) == []
    await store.record_outcomes([outcome_for(contacts[2], "completed")], T0 + 62)
    sent = await take(store, "whep_rare", 4)
    assert [(d.type, d.sequence) for d in sent] == [("job.completed", 8)]
    assert sent[0].data["status"] == "completed" and sent[0].id % 32 == 1
    assert [d.type for d in await listed(store, endpoint_id="whep_rare")] == ["job.completed"]
    assert len(await listed(store, endpoint_id="whep_all")) == 8


async def test_a_delivery_not_taken_is_found_by_id_and_goes_with_its_endpoint(
    store: Store,
) -> None:
    """Get finds a pending delivery not taken yet (retry refuses it: not failed); deleting its
    endpoint removes its deliveries, taken or not, and no other's."""
    await add_endpoint(store, "whep_a")
    await add_endpoint(store, "whep_b")
    await three_outcomes(store)
    (taken,) = await take(store, "whep_a", 1)
    untaken = (await listed(store, endpoint_id="whep_a"))[0]
    found = await store.get_webhook_delivery(ORG, untaken.id)
    assert found == untaken and found.status == "pending" and found.attempts == 0
    assert await store.get_webhook_delivery(OTHER, untaken.id) is None
    assert not await store.replay_webhook_delivery(ORG, untaken.id, T0 + 200)
    assert (await store.get_webhook_delivery(ORG, taken.id)) is not None
    assert await store.delete_webhook_endpoint(ORG, "whep_a")
    assert await store.get_webhook_delivery(ORG, taken.id) is None
    assert {d.endpoint_id for d in await listed(store)} == {"whep_b"}
    assert len(await listed(store)) == 6


# ------------------------------------------------------------------ from 0009


def snapshot_0009(path: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Events (webhook-id, type, sequence, data) and deliveries as the 0009 schema has them."""
    conn = dbmod.connect(path)
    try:
        events = [
            (r[0], r[1], r[2], json.loads(r[3]))
            for r in conn.execute(
                "SELECT e.webhook_id, e.type, e.sequence, d.data FROM webhook_events AS e"
                " JOIN webhook_event_documents AS d ON d.id = e.id ORDER BY e.id"
            )
        ]
        deliveries = [
            tuple(r)
            for r in conn.execute(
                "SELECT d.event_id, e.webhook_id, d.endpoint_id, d.status, d.attempts,"
                " d.next_attempt_at, d.last_status FROM webhook_deliveries AS d"
                " JOIN webhook_events AS e ON e.id = d.event_id ORDER BY d.id"
            )
        ]
        return events, deliveries
    finally:
        conn.close()


async def test_0009_events_and_deliveries_are_carried_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written by 0009 keeps every event (webhook-id, sequence, document) and
    delivery (state; id = event id * 32 + slot); its endpoints go on from there."""
    every = dbmod.migrations()
    # Up to 0010 (agents' results), the last schema whose events went to 0009's outbox.
    monkeypatch.setattr(dbmod, "migrations", lambda: [m for m in every if m[0] <= 10])
    path = str(tmp_path / "old.db")
    old = await Store.open(path)
    conn = dbmod.connect(path)
    conn.executemany(
        "INSERT INTO webhook_endpoints (id, organization_id, url, events, description, secret,"
        " created_at) VALUES (?, ?, 'http://127.0.0.1:9/h', ?, NULL, 'whsec_x', ?)",
        [("whep_a", ORG, None, T0), ("whep_b", ORG, '["contact.finished"]', T0 + 1)],
    )
    conn.close()
    await running_job(old, 2)
    done, retried = (await old.claim({"job_1": 2}, T0, namer))["job_1"].contacts
    await old.record_outcomes(
        [
            outcome_for(done, "completed"),
            outcome_for(retried, "busy", "queued", next_retry_at=T0 + 600),
        ],
        T0 + 60,
    )
    conn = dbmod.connect(path)
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'failed', attempts = 8, last_status = 410"
        " WHERE id = (SELECT min(id) FROM webhook_deliveries)"
    )
    conn.close()
    events, deliveries = snapshot_0009(path)
    assert len(events) == 4 and len(deliveries) == 5
    await old.close()

    monkeypatch.setattr(dbmod, "migrations", lambda: every)
    store = await Store.open(path)
    try:
        conn = dbmod.connect(path)
        carried = [
            (r[0], r[1], r[2], json.loads(r[3]))
            for r in conn.execute(
                "SELECT e.webhook_id, e.type, e.sequence, d.data FROM webhook_events AS e"
                " JOIN webhook_event_documents AS d ON d.id = e.id ORDER BY e.id"
            )
        ]
        slots = dict(conn.execute("SELECT id, slot FROM webhook_endpoints").fetchall())
        conn.close()
        assert carried == events
        assert slots == {"whep_a": 0, "whep_b": 1}
        listed_now = sorted(await listed(store), key=lambda d: d.id)
        assert [
            (
                d.event_id // 2,
                d.webhook_id,
                d.endpoint_id,
                d.status,
                d.attempts,
                d.next_attempt_at,
                d.last_status,
            )
            for d in listed_now
        ] == deliveries
        assert [d.id for d in listed_now] == [
            d.event_id * 32 + slots[d.endpoint_id] for d in listed_now
        ]
        # New events follow the old ones: sequence 5 on, deliveries only for what each takes.
        await store.cancel_job(ORG, "job_1", T0 + 100)
        busy = [d.id for d in listed_now if d.status == "pending"]
        sent = await take(store, "whep_a", 10, busy=busy)
        assert [(d.type, d.sequence) for d in sent] == [
            ("job.cancelled", 5),
            ("contact.finished", 6),
        ]
        assert [d.type for d in await take(store, "whep_b", 10, busy=busy)] == ["contact.finished"]
    finally:
        await store.close()


async def test_the_outbox_views_join_on_event_id_through_an_index(store: Store) -> None:
    """Events joined with their documents or deliveries by event id (an audit's query) go
    through an index, not a scan of every event per event."""
    await add_endpoint(store, "whep_a")
    await three_outcomes(store)
    for query in (
        "SELECT e.webhook_id, d.data FROM webhook_events AS e"
        " JOIN webhook_event_documents AS d ON d.id = e.id",
        "SELECT e.webhook_id, d.status FROM webhook_deliveries AS d"
        " JOIN webhook_events AS e ON e.id = d.event_id",
    ):
        plan = [r[3] for r in rows(store, "EXPLAIN QUERY PLAN " + query)]
        assert any("AUTOMATIC COVERING INDEX" in step for step in plan), plan
        assert len(rows(store, query)) == 6


# ------------------------------------------------------------------ pruning

FAR = T0 + 10**6  # a cutoff after every event of these tests


def change_ids(store: Store) -> list[int]:
    return [r[0] for r in rows(store, "SELECT id FROM webhook_changes ORDER BY id")]


async def settle(store: Store, sent: list[DueDelivery], pending: tuple[int, ...] = ()) -> None:
    """Each sent delivery delivered, but those of the events `pending` (tried again later) and
    of event 6 (failed for good: a dead letter)."""
    results = []
    for d in sent:
        event = d.id // 32
        if event in pending:
            results.append(DeliveryAttempt(d.id, 0, "pending", FAR, 500, "HTTP 500", T0 + 100))
        elif event == 6:
            results.append(DeliveryAttempt(d.id, 0, "failed", None, 500, "HTTP 500", T0 + 100))
        else:
            results.append(DeliveryAttempt(d.id, 0, "delivered", None, 200, None, T0 + 100))
    await store.record_webhook_attempts(results)


async def test_pruning_forgets_old_events_that_no_delivery_needs(store: Store) -> None:
    """Changes made before the cutoff whose deliveries were all delivered or failed for good go
    with their deliveries; one whose delivery is still to be retried stays until it is done,
    and the newest change always stays (change ids keep growing)."""
    await add_endpoint(store, "whep_a")
    await three_outcomes(store)  # changes 1 (T0) and 2-4 (T0 + 60): events 2, 4-5, 6, 8-9
    sent = await take(store, "whep_a", 10)
    assert sorted(d.id // 32 for d in sent) == [2, 4, 5, 6, 8, 9]
    await settle(store, sent, pending=(4,))
    assert await store.prune_webhooks(T0 + 30) == 1  # only job.started is that old
    assert change_ids(store) == [2, 3, 4]
    assert await store.prune_webhooks(FAR) == 1  # 2 waits for its retry, 4 is the newest
    assert change_ids(store) == [2, 4]
    assert sorted(d.event_id for d in await listed(store)) == [4, 5, 8, 9]
    assert count(store, "webhook_taken_deliveries") == 4
    assert await store.prune_webhooks(FAR) == 0
    retried = [d for d in sent if d.id // 32 == 4]
    await store.record_webhook_attempts(
        [DeliveryAttempt(d.id, 1, "delivered", None, 200, None, T0 + 200) for d in retried]
    )
    assert await store.prune_webhooks(FAR) == 1
    assert change_ids(store) == [4]
    assert sorted(d.event_id for d in await listed(store)) == [8, 9]


async def test_pruning_keeps_what_an_endpoint_has_not_taken(store: Store) -> None:
    """An endpoint that has not taken its deliveries yet (pending, never sent) keeps every
    event it needs, whatever another endpoint did with them; in batches of `limit`."""
    await add_endpoint(store, "whep_a")
    await add_endpoint(store, "whep_b")
    await three_outcomes(store)
    await settle(store, await take(store, "whep_a", 10))
    assert await store.prune_webhooks(FAR) == 0
    assert {d.endpoint_id for d in await listed(store, status="pending")} == {"whep_b"}
    await settle(store, await take(store, "whep_b", 10))
    assert await store.prune_webhooks(FAR, limit=2) == 2
    assert await store.prune_webhooks(FAR, limit=2) == 1
    assert change_ids(store) == [4]


async def test_pruning_without_endpoints_keeps_the_newest_change(store: Store) -> None:
    """With every endpoint deleted, old changes go but the newest, so that the changes written
    for an endpoint added later get larger ids than any before (taken_through and the
    numbering count on it), and reach it."""
    await add_endpoint(store, "whep_a")
    await three_outcomes(store)
    assert await store.delete_webhook_endpoint(ORG, "whep_a")
    assert await store.prune_webhooks(FAR) == 3
    assert change_ids(store) == [4]
    await add_endpoint(store, "whep_c")
    await store.create_job(new_job("job_2"), new_contacts(1))
    await store.start_jobs(["job_2"], [states.JobStatus.PENDING.value], T0 + 200)
    assert change_ids(store) == [4, 5]
    assert [d.type for d in await take(store, "whep_c", 10)] == ["job.started"]


async def test_an_endpoint_of_another_organization_that_lags_holds_nothing_back(
    store: Store,
) -> None:
    """Only the organization's own endpoints keep its events: another's that has taken nothing
    (a dead or slow receiver) does not stop them being forgotten."""
    await add_endpoint(store, "whep_o", org=OTHER)
    await store.create_job(replace(new_job("job_o"), organization_id=OTHER), new_contacts(1))
    await store.start_jobs(["job_o"], [states.JobStatus.PENDING.value], T0)
    await add_endpoint(store, "whep_a")
    await three_outcomes(store)
    await settle(store, await take(store, "whep_a", 10))
    assert await store.prune_webhooks(FAR) == 3
    assert len(await listed(store, OTHER)) == 1  # the other's job.started, never taken


async def test_an_endpoint_that_asked_for_other_types_holds_nothing_back(store: Store) -> None:
    """An endpoint of the organization that asked only for a type these changes never make
    (its taken_through stays behind them) does not keep them."""
    await add_endpoint(store, "whep_f", events=("job.failed",))
    await add_endpoint(store, "whep_a")
    await three_outcomes(store)
    await settle(store, await take(store, "whep_a", 10))
    assert await take(store, "whep_f", 10) == []
    assert await store.prune_webhooks(FAR) == 3
    assert change_ids(store) == [4]
