"""Claiming ahead (Engine._deck): contacts claimed durably before their slot frees are dialed the
moment it does, without a write; a pause, a cancel, a do-not-call listing or the end of a calling
interval gives them back undialed; the API never shows them as live calls."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dialer import cli, dnc, scheduler
from dialer.clock import Clock, FakeClock
from dialer.providers.base import DialRequest, DialResult
from dialer.providers.simulated import SimulatedProvider
from storage.store import Store
from tests.conftest import NUMBER, ORG, Running, StartApp, make_config, wait_until
from tests.integration.test_compat import get_batch_call
from tests.integration.test_metrics import scrape, value
from tests.integration.test_scheduler import phones

LIMIT = 2
CALL_SECONDS = 1.0


class RecordingProvider(SimulatedProvider):
    """The simulated provider, recording every number dialed and the most live at once."""

    def __init__(self, config: Any, clock: Clock) -> None:
        super().__init__(config.telephony.simulated, clock)
        self.numbers: list[str] = []
        self.live = 0
        self.most_live = 0

    async def dial(self, request: DialRequest) -> DialResult:
        self.numbers.append(request.to_number)
        self.live += 1
        self.most_live = max(self.most_live, self.live)
        try:
            return await super().dial(request)
        finally:
            self.live -= 1


def short_calls(tmp_path: Path, **engine: Any) -> Any:
    # 1 s calls, 2 at a time, claimed 2 s ahead: 2 x 2 / 1 = 4 contacts, DECK_ROUNDS x 2.
    return make_config(
        tmp_path,
        telephony={"simulated": {"call_seconds": CALL_SECONDS, "ring_seconds": 0}},
        engine={"claim_ahead_seconds": 2.0, **engine},
    )


async def start(start_app: StartApp, tmp_path: Path, n: int = 20) -> tuple[Running, str, Any]:
    """A running job whose first round of calls ended: the engine knows its calls are short
    and holds contacts claimed ahead."""
    config = short_calls(tmp_path)
    clock = FakeClock()
    provider = RecordingProvider(config, clock)
    running = await start_app(config, provider=provider, clock=clock)
    job_id = (await running.create_json(phones(n), concurrentCallLimit=LIMIT))["batchJobId"]
    await settle(running, lambda: provider.live == LIMIT)
    await running.clock.advance(CALL_SECONDS)  # the first round ends: its length is known
    await settle(running, lambda: running.engine.claimed_ahead(job_id) == 2 * LIMIT)
    return running, job_id, provider


async def settle(running: Running, condition: Any) -> None:
    async def done() -> bool:
        return bool(condition()) and running.engine.idle.is_set()

    await wait_until(done)


def rows(running: Running, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(running.store.path) as conn:
        return conn.execute(query, args).fetchall()


async def run_to_end(running: Running, job_id: str) -> None:
    """Let the clock run, a call length at a time, until the job is completed."""

    async def done() -> bool:
        await running.clock.advance(CALL_SECONDS)
        return (await running.detail(job_id))["status"] == "completed"

    await wait_until(done)


def stall_the_disk(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """From now on every flush of the database's log waits until `released` is set (then
    flushes as usual); `stalled` is set when one does."""
    from storage import store as storemod

    stalled, released = threading.Event(), threading.Event()
    real_flush = storemod.flush_file

    def stalling_flush(fd: int) -> None:
        if not released.is_set():
            stalled.set()
            assert released.wait(10)
        real_flush(fd)

    monkeypatch.setattr(storemod, "flush_file", stalling_flush)
    return stalled, released


async def breakdown(running: Running, job_id: str) -> dict[str, int]:
    body = await running.detail(job_id)
    counts: dict[str, int] = body["statusBreakdown"]
    assert sum(counts.values()) == body["totalContacts"]
    return counts


async def test_a_freed_slot_takes_a_contact_claimed_ahead_while_the_disk_stalls(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Contacts claimed ahead are in `dialing` with their attempt on the disk (a crash finds
    them), shown as pending; when calls end while every flush of the disk stalls, their slots
    are refilled from them at once, never beyond the limit."""
    running, job_id, provider = await start(start_app, tmp_path)
    ahead = rows(
        running,
        "SELECT count(*) FROM contacts c JOIN attempts a ON a.contact_id = c.id"
        " AND a.attempt_no = c.attempt_count WHERE c.status = 'dialing' AND a.outcome IS NULL",
    )[0][0]
    assert ahead == LIMIT + 2 * LIMIT  # the live calls and the contacts claimed ahead
    counts = await breakdown(running, job_id)
    assert (counts["dialing"], counts["completed"], counts["pending"]) == (LIMIT, 2, 16)
    # Listed as the counts show them: the live calls only.
    resp = await running.client.get(
        f"/batch/jobs/{job_id}?contactStatus=dialing", headers=running.headers()
    )
    listed = await resp.json()
    live = {f"contact_{cid}" for cid in running.engine._live}
    assert listed["contactsTotal"] == LIMIT
    assert {c["id"] for c in listed["contacts"]} == live and len(live) == LIMIT
    number = {"organization": ORG, "phone_number_id": NUMBER}
    scraped = await scrape(running)
    assert value(scraped, "dialer_contacts_claimed_ahead", **number) == 2 * LIMIT
    assert value(scraped, "dialer_live_calls", **number) == LIMIT

    stalled, released = stall_the_disk(monkeypatch)
    dialed = len(provider.numbers)
    for _ in range(2):  # two rounds end while the disk holds every write
        await running.clock.advance(CALL_SECONDS)
        for _ in range(20):
            await asyncio.sleep(0)
    assert await asyncio.to_thread(stalled.wait, 10)  # their outcomes wait for the disk
    assert len(provider.numbers) == dialed + 2 * LIMIT  # their successors did not
    assert provider.most_live == LIMIT
    # Shown as no more than the live calls (a read may see the write in flight committed).
    assert (await breakdown(running, job_id))["dialing"] <= LIMIT
    released.set()

    await run_to_end(running, job_id)
    assert sorted(provider.numbers) == sorted(p["phone"] for p in phones(20))  # each once
    assert provider.most_live == LIMIT
    assert rows(running, "SELECT count(*), sum(outcome = 'completed') FROM attempts") == [(20, 20)]


async def test_an_attempt_dialed_from_the_contacts_claimed_ahead_starts_at_its_dial(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A contact claimed ahead waits up to a round for its slot: its attempt (its row, its
    job's call-length statistics, the attempt-duration metric) starts when it is dialed."""
    running, job_id, _ = await start(start_app, tmp_path)
    await run_to_end(running, job_id)
    found = rows(running, "SELECT ended_at - started_at FROM attempts")
    assert len(found) == 20
    assert all(seconds == pytest.approx(CALL_SECONDS) for (seconds,) in found), found
    assert rows(
        running,
        "SELECT count(*) FROM contacts c JOIN attempts a ON a.contact_id = c.id"
        " AND a.attempt_no = c.attempt_count WHERE c.last_attempt_at = a.started_at",
    ) == [(20,)]
    assert rows(running, "SELECT call_seconds / calls_ended FROM jobs") == [
        (pytest.approx(CALL_SECONDS),)
    ]


async def stopped_by(
    running: Running,
    job_id: str,
    provider: RecordingProvider,
    control: str,
    answers: list[dict[str, Any]] | None = None,
) -> dict[str, int]:
    """Post the job control while contacts are claimed ahead; once its live calls ended,
    nothing else was dialed. The status counts then (the control's answer in `answers`)."""
    dialed = len(provider.numbers)
    resp = await running.client.post(f"/batch/jobs/{job_id}/{control}", headers=running.headers())
    assert resp.status == 200
    if answers is not None:
        answers.append(await resp.json())
    for _ in range(3):
        await running.clock.advance(CALL_SECONDS)
    await settle(running, lambda: provider.live == 0)
    assert len(provider.numbers) == dialed
    assert rows(running, "SELECT count(*) FROM attempts WHERE outcome IS NULL") == [(0,)]
    return await breakdown(running, job_id)


async def test_the_batch_routes_count_no_contact_claimed_ahead_as_dialed(
    start_app: StartApp, tmp_path: Path
) -> None:
    """`total_calls_dispatched` and `retry_count` count the contacts dialed: those claimed
    ahead have their attempt counted in the database before they are dialed."""
    running, job_id, provider = await start(start_app, tmp_path)
    assert rows(running, "SELECT count(*) FROM contacts WHERE attempt_count > 0") == [(4 * LIMIT,)]
    status, body = await get_batch_call(running, job_id)
    assert status == 200
    assert body["total_calls_dispatched"] == len(provider.numbers) == 2 * LIMIT
    assert body["retry_count"] == 0

    await stopped_by(running, job_id, provider, "pause")  # given back, and that written
    status, body = await get_batch_call(running, job_id)
    assert body["total_calls_dispatched"] == len(provider.numbers) == 2 * LIMIT
    assert not running.engine._undialed


async def test_a_pause_gives_the_contacts_claimed_ahead_back_undialed(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, job_id, provider = await start(start_app, tmp_path)
    counts = await stopped_by(running, job_id, provider, "pause")
    assert (counts["dialing"], counts["completed"], counts["pending"]) == (0, 4, 16)
    # Given back as they were: no attempt counted (and no attempt row left open, above), no
    # last attempt or room shown.
    assert rows(
        running,
        "SELECT max(attempt_count), count(last_attempt_at), count(room_name) FROM contacts"
        " WHERE status = 'pending'",
    ) == [(0, 0, 0)]
    resp = await running.client.post(f"/batch/jobs/{job_id}/resume", headers=running.headers())
    assert resp.status == 200

    await run_to_end(running, job_id)
    assert sorted(provider.numbers) == sorted(p["phone"] for p in phones(20))


async def test_a_cancel_cancels_the_contacts_claimed_ahead(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, job_id, provider = await start(start_app, tmp_path)
    answers: list[dict[str, Any]] = []
    counts = await stopped_by(running, job_id, provider, "cancel", answers)
    assert (counts["dialing"], counts["completed"], counts["cancelled"]) == (0, 4, 16)
    # The answer counts them too (it counted only those waiting: found from outside).
    assert answers[0]["contactsCancelled"] == 16


async def never_dialed(
    running: Running, job_id: str, provider: RecordingProvider, listed: str
) -> None:
    """The job runs to its end without dialing the listed number (the 19 others once): its
    contact is cancelled as do-not-call."""
    await run_to_end(running, job_id)
    assert listed not in provider.numbers
    assert len(provider.numbers) == 19
    found = rows(running, "SELECT status, failure_reason FROM contacts WHERE phone = ?", listed)
    assert found == [("cancelled", "do_not_call")]


async def test_a_number_listed_do_not_call_is_not_dialed_from_the_contacts_claimed_ahead(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, job_id, provider = await start(start_app, tmp_path)
    deck = list(running.engine._deck[job_id])
    listed = deck[0].phone
    resp = await running.client.post("/dnc", json={"numbers": [listed]}, headers=running.headers())
    assert resp.status == 200

    await never_dialed(running, job_id, provider, listed)


async def test_a_number_listed_from_outside_the_service_is_not_dialed_from_those_claimed_ahead(
    start_app: StartApp, tmp_path: Path
) -> None:
    """`dialer dnc add` writes to the database from another process: no route gives the
    contacts claimed ahead back, the engine sees the listing itself (within
    LISTINGS_CHECK_SECONDS) and gives them back before their slots free."""
    running, job_id, provider = await start(start_app, tmp_path)
    listed = running.engine._deck[job_id][0].phone

    async def list_it(store: Store) -> None:  # as `dialer dnc add` does it
        await dnc.add(store, ORG, [listed], None, "cli", running.clock.now())

    await asyncio.to_thread(asyncio.run, cli._with_store(running.store.path, list_it))
    engine = running.engine

    def ahead() -> list[str]:
        return [c.phone for c in engine._deck.get(job_id, ())]

    await settle(running, lambda: listed not in ahead() and len(ahead()) == 2 * LIMIT)  # again

    await never_dialed(running, job_id, provider, listed)


async def test_a_contact_whose_calling_interval_ended_is_given_back_not_dialed(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, job_id, provider = await start(start_app, tmp_path)
    engine = running.engine
    deck = engine._deck[job_id]
    closing = deck[0]
    deck[0] = replace(closing, call_until=running.clock.now() + CALL_SECONDS / 2)
    await running.clock.advance(CALL_SECONDS)  # the interval has ended when a slot frees
    await settle(running, lambda: provider.live == LIMIT)
    assert closing.phone not in provider.numbers
    assert len(provider.numbers) == 3 * LIMIT  # its slot went to the next contact

    # Given back (its attempt not counted), it waits for its next interval: here (open all
    # day) at once, so it is dialed later like any other contact, once.
    await run_to_end(running, job_id)
    assert sorted(provider.numbers) == sorted(p["phone"] for p in phones(20))
    attempts = rows(running, "SELECT attempt_no FROM attempts WHERE contact_id = ?", closing.id)
    assert attempts == [(1,)]


async def test_a_first_round_is_refilled_from_contacts_claimed_ahead_on_a_guess(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any call of a job ended, its length is unknown; once its first calls lasted
    DECK_SHORTEST_CALL_SECONDS, one round is claimed ahead, so even the first round's slots are
    refilled without waiting for a write."""
    config = short_calls(tmp_path)
    clock = FakeClock()
    provider = RecordingProvider(config, clock)
    running = await start_app(config, provider=provider, clock=clock)
    job_id = (await running.create_json(phones(20), concurrentCallLimit=LIMIT))["batchJobId"]
    await settle(running, lambda: provider.live == LIMIT)
    assert running.engine.claimed_ahead(job_id) == 0  # they may be instant calls
    await running.clock.advance(scheduler.DECK_SHORTEST_CALL_SECONDS)
    await settle(running, lambda: running.engine.claimed_ahead(job_id) == LIMIT)
    assert (await breakdown(running, job_id))["dialing"] == LIMIT

    stalled, released = stall_the_disk(monkeypatch)
    await running.clock.advance(CALL_SECONDS)  # the first round ends while the disk stalls
    for _ in range(20):
        await asyncio.sleep(0)
    assert await asyncio.to_thread(stalled.wait, 10)
    assert len(provider.numbers) == 2 * LIMIT  # refilled from the guess, no write awaited
    released.set()

    await run_to_end(running, job_id)
    assert sorted(provider.numbers) == sorted(p["phone"] for p in phones(20))  # each once
    assert provider.most_live == LIMIT


async def test_long_calls_give_their_first_rounds_guess_back_and_claim_nothing_more(
    start_app: StartApp, tmp_path: Path
) -> None:
    """The contacts claimed ahead on a guess for calls that last are given back undialed once
    they are stale (no attempt counted), and no more are claimed ahead for them."""
    config = make_config(tmp_path, telephony={"simulated": {"call_seconds": 60}})
    running = await start_app(config)
    engine = running.engine
    job_id = (await running.create_json(phones(10), concurrentCallLimit=LIMIT))["batchJobId"]
    await settle(running, lambda: engine.live_calls(job_id) == LIMIT)
    await running.clock.advance(scheduler.DECK_SHORTEST_CALL_SECONDS)
    await settle(running, lambda: engine.claimed_ahead(job_id) == LIMIT)

    await running.clock.advance(engine._deck_max_age())  # stale, though no slot is free
    await settle(running, lambda: engine.claimed_ahead(job_id) == 0)
    assert rows(running, "SELECT count(*) FROM attempts") == [(LIMIT,)]  # the live calls'
    assert rows(running, "SELECT count(*) FROM contacts WHERE attempt_count > 0") == [(LIMIT,)]
    assert (await breakdown(running, job_id))["dialing"] == LIMIT
    for _ in range(3):
        await running.clock.advance(60)
        await settle(running, lambda: engine.live_calls(job_id) == LIMIT)
        assert engine.claimed_ahead(job_id) == 0
        assert (await breakdown(running, job_id))["dialing"] == LIMIT
    assert rows(running, "SELECT count(*) FROM contacts WHERE status = 'dialing'") == [(LIMIT,)]


async def test_claiming_ahead_can_be_turned_off(start_app: StartApp, tmp_path: Path) -> None:
    running = await start_app(short_calls(tmp_path, claim_ahead_seconds=0))
    job_id = (await running.create_json(phones(10), concurrentCallLimit=LIMIT))["batchJobId"]
    for _ in range(2):
        await running.clock.advance(CALL_SECONDS)
        await settle(running, lambda: running.engine.live_calls(job_id) == LIMIT)
        assert running.engine.claimed_ahead(job_id) == 0


async def test_no_more_are_claimed_ahead_than_the_caller_number_may_dial_meanwhile(
    start_app: StartApp, tmp_path: Path
) -> None:
    """At 1 call a second, 2 s ahead is 2 contacts (not the 4 the slots would take)."""
    config = short_calls(tmp_path)
    slow = config.phone_numbers[0].model_copy(update={"calls_per_second": 1.0})
    config = config.model_copy(update={"phone_numbers": [slow, *config.phone_numbers[1:]]})
    assert config.phone_number(slow.id) == slow
    running = await start_app(config)
    job_id = (await running.create_json(phones(10), concurrentCallLimit=LIMIT))["batchJobId"]
    for _ in range(3):
        await running.clock.advance(CALL_SECONDS)
        await settle(running, lambda: running.engine.live_calls(job_id) > 0)
    assert running.engine.claimed_ahead(job_id) == 2


async def test_free_slots_are_claimed_in_a_cycle_of_their_own_before_contacts_ahead(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refills of free slots do not wait behind the (bigger) claim of contacts ahead: that
    claim is the next cycle's, right after."""
    wanted: list[dict[str, int]] = []
    real_cycle = Store.cycle

    async def cycle(self: Store, *args: Any, **kwargs: Any) -> Any:
        wanted.append(dict(args[2]))
        return await real_cycle(self, *args, **kwargs)

    monkeypatch.setattr(Store, "cycle", cycle)
    _, job_id, _ = await start(start_app, tmp_path)
    claims = [w[job_id] for w in wanted if w.get(job_id)]
    # Refills of at most LIMIT free slots, and the 2 x LIMIT ahead alone: never both at once.
    assert 2 * LIMIT in claims and all(c <= LIMIT or c == 2 * LIMIT for c in claims), claims


async def test_a_call_is_timed_from_its_dial_to_its_end_not_to_when_the_engine_took_it(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The typical call length that sizes the claims ahead is each call's own (an instant call
    the engine takes late, behind a stalled disk, is no long call)."""
    rules = [
        {"prefix": "+12025550101", "seconds": 1},
        {"prefix": "+12025550102", "seconds": 3},
        {"prefix": "+1202555010", "seconds": 100},  # the next two: live till the end
    ]
    running = await start_app(make_config(tmp_path, telephony={"simulated": {"rules": rules}}))
    job_id = (await running.create_json(phones(4), concurrentCallLimit=LIMIT))["batchJobId"]
    await settle(running, lambda: running.engine.live_calls(job_id) == LIMIT)
    await running.clock.advance(scheduler.DECK_SHORTEST_CALL_SECONDS)  # (the guess: 2 ahead)
    await settle(running, lambda: running.engine.claimed_ahead(job_id) == LIMIT)
    stalled, released = stall_the_disk(monkeypatch)
    await running.clock.advance(1)  # the 1 s call ends; the cycle recording it stalls
    assert await asyncio.to_thread(stalled.wait, 10)
    await running.clock.advance(9)  # the 3 s call ends meanwhile, taken only after the stall
    released.set()
    job = running.engine._jobs[job_id]
    await settle(running, lambda: job.call_seconds is not None and job.call_seconds > 1)
    assert job.call_seconds == pytest.approx(1 + scheduler.CALL_SECONDS_WEIGHT * (3 - 1))
