"""The statements of the scheduler's transactions, as functions of a sqlite3 connection inside
one: claim contacts for the free slots, record the outcomes of ended calls, apply the engine's
verdicts and agents' results, start and expire jobs. `storage.store.Store` runs them (see
`Store.cycle` and `Store.activate`); each is guarded, so that a contact moves only from the state
it is known to be in.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from storage import db as dbmod
from storage.db import TransitionError
from storage.rows import (
    CREDITS_EXHAUSTED,
    Activation,
    AppliedResult,
    CallingRules,
    ClaimedContact,
    JobClaim,
    JobRow,
    JobVerdict,
    Outcome,
    ResultFacts,
    ResultRules,
    RoomNamer,
)

Q = dbmod.queries


_STARTABLE = json.dumps(["pending", "scheduled"])
_RUNNING = json.dumps(["running"])


def activate(conn: sqlite3.Connection, now: float) -> Activation:
    """Expire the jobs past their `expiresAt`, start the pending ones and the scheduled ones that
    are due, and read the running jobs and when the next start and expiry are due."""
    expired = _expire_jobs(conn, now)
    due = [row[0] for row in conn.execute(Q()["due_jobs"], {"now": now})]
    started = start_jobs(conn, due, _STARTABLE, now) if due else []
    running = [JobRow.from_row(r) for r in conn.execute(Q()["jobs_in_status"], (_RUNNING,))]
    return Activation(
        expired,
        started,
        running,
        _float_or_none(conn.execute(Q()["next_scheduled_start"]).fetchone()[0]),
        _float_or_none(conn.execute(Q()["next_expiry"]).fetchone()[0]),
    )


def _float_or_none(value: Any) -> float | None:
    return float(value) if value is not None else None


def start_jobs(
    conn: sqlite3.Connection, job_ids: Sequence[str], from_json: str, now: float
) -> list[str]:
    started = []
    for job_id in job_ids:
        cur = conn.execute(Q()["start_job"], {"id": job_id, "now": now, "from_statuses": from_json})
        if cur.rowcount:
            started.append(job_id)
    return started


def _expire_jobs(conn: sqlite3.Connection, now: float) -> list[str]:
    ids = [r[0] for r in conn.execute(Q()["expired_jobs"], {"now": now})]
    for job_id in ids:
        conn.execute(Q()["expire_contacts"], {"id": job_id, "now": now})
        conn.execute(Q()["expire_job"], {"id": job_id, "now": now})
    return ids


def prepare_scratch(conn: sqlite3.Connection) -> None:
    """A writing connection's scratch tables: per connection, never written to the file."""
    conn.execute(Q()["create_outcome_batch"])
    conn.execute(Q()["create_claim_batch"])


def no_rooms(job_id: str, contact_id: int, attempt_no: int) -> str:
    raise AssertionError("no claims were asked for")


def claim(
    conn: sqlite3.Connection,
    wanted: Mapping[str, int],
    now: float,
    room_namer: RoomNamer,
    rules: CallingRules,
) -> dict[str, JobClaim]:
    """Claim up to `wanted[job]` ready contacts per job and write their attempt rows.

    One small pick per job, then a handful of set-based statements for all of them. Contacts
    whose calling interval ended are first moved to their next one. A number is claimed once per
    organization and cycle (never in two live calls); one that reaches its cap makes the
    organization's other contacts with it wait. A job that had fewer ready contacts than wanted
    learns when it next has work; with none it is completed if nothing else is open.
    """
    orgs: dict[str, str] = {}
    if wanted:
        text = conn.execute(Q()["job_organizations"], (json.dumps(list(wanted)),)).fetchone()[0]
        orgs = json.loads(text or "{}")
    picked: dict[str, list[list[Any]]] = {}
    batch: list[list[Any]] = []
    phones: dict[str, set[str]] = {}  # organization -> numbers claimed in this cycle
    was: dict[int, str] = {}  # contact -> its status before the claim
    for job_id, limit in wanted.items():
        org = orgs.get(job_id, "")
        _roll_intervals(conn, job_id, now, rules)
        params = {
            "job_id": job_id,
            "now": now,
            "limit": limit,
            "org": org,
            "cap": rules.daily_cap(org),
        }
        picks = json.loads(conn.execute(Q()["pick_contacts"], params).fetchone()[0] or "[]")
        taken = phones.setdefault(org, set())
        kept = [p for p in picks if p[2] not in taken]
        taken.update(p[2] for p in kept)
        picked[job_id] = kept
        batch.extend(
            [cid, job_id, attempt, room_namer(job_id, cid, attempt)] for cid, attempt, _, _ in kept
        )
        was.update((p[0], p[3]) for p in kept)
    claimed: dict[str, list[ClaimedContact]] = {job_id: [] for job_id in wanted}
    if batch:
        conn.execute(Q()["clear_claim_batch"])
        conn.execute(Q()["load_claim_batch"], (json.dumps(batch),))
        moved = conn.execute(Q()["claim_batch"], {"now": now}).rowcount
        if moved != len(batch):  # cannot happen inside this transaction: the picks are fresh
            raise TransitionError(f"claimed {moved} of {len(batch)} picked contacts")
        conn.execute(Q()["insert_claimed_attempts"], {"now": now})
        for org, numbers in phones.items():
            cap = rules.daily_cap(org)
            if cap and numbers:
                defer_capped(conn, org, cap, json.dumps(sorted(numbers)), now, rules)
        rooms = {row[0]: row[3] for row in batch}
        jobs = {row[0]: row[1] for row in batch}
        rows = json.loads(conn.execute(Q()["claimed_contacts"]).fetchone()[0])
        for cid, seq, phone, data, attempt, max_attempts, zones, call_until in rows:
            claimed[jobs[cid]].append(
                ClaimedContact(
                    id=cid,
                    job_id=jobs[cid],
                    seq=seq,
                    phone=phone,
                    contact_data=data,
                    attempt_no=attempt,
                    max_attempts=max_attempts,
                    room_name=rooms[cid],
                    started_at=now,
                    zones=zones,
                    call_until=call_until,
                    was=was[cid],
                )
            )
    result: dict[str, JobClaim] = {}
    for job_id, limit in wanted.items():
        contacts = sorted(claimed[job_id], key=lambda c: c.seq)
        due: float | None = None
        completed = False
        if len(contacts) < limit:
            due = _next_work(conn, job_id, now)
            completed = due is None and bool(
                conn.execute(Q()["complete_job_if_done"], {"id": job_id, "now": now}).rowcount
            )
        result[job_id] = JobClaim(contacts, len(contacts) < limit, due, completed)
    return result


def _next_work(conn: sqlite3.Connection, job_id: str, now: float) -> float | None:
    """When a job next has work: a retry falls due, a window opens or ends, a cap lifts."""
    params = {"job_id": job_id, "now": now}
    times = [
        conn.execute(Q()[query], params).fetchone()
        for query in ("next_retry_due", "next_call_due", "next_window_end")
    ]
    found = [float(row[0]) for row in times if row is not None and row[0] is not None]
    return min(found) if found else None


def _roll_intervals(conn: sqlite3.Connection, job_id: str, now: float, rules: CallingRules) -> None:
    """Move a job's open contacts whose calling interval ended to their next one (computed by
    the rules from their zones and the job's windows); cancel those that have none."""
    text = conn.execute(Q()["ended_intervals"], {"job_id": job_id, "now": now}).fetchone()[0]
    ended: list[list[Any]] = json.loads(text) if text else []
    if not ended:
        return
    row = conn.execute(Q()["get_job_any_org"], (job_id,)).fetchone()
    windows_json = row["calling_windows"] if row is not None else None
    rolled: list[list[Any]] = []
    without: list[int] = []
    for cid, zones, waits_for in ended:
        found = rules.interval(windows_json, zones, max(now, float(waits_for or 0)))
        if found is None:
            without.append(cid)
        else:
            rolled.append([cid, found[0] if found[0] > now else None, found[1]])
    if rolled:
        conn.execute(Q()["roll_intervals"], {"rows": json.dumps(rolled), "now": now})
    if without:
        conn.execute(Q()["cancel_without_window"], {"ids": json.dumps(without), "now": now})


def _defer_waiting_at_cap(
    conn: sqlite3.Connection, accepted: Sequence[Outcome], now: float, rules: CallingRules
) -> None:
    """Contacts going back to wait whose number is at its cap wait until it lifts."""
    waiting: dict[str, list[int]] = {}
    for o in accepted:
        if o.next_status in ("pending", "queued") and rules.daily_cap(o.organization_id):
            waiting.setdefault(o.organization_id, []).append(o.contact_id)
    for org, ids in waiting.items():
        phones = conn.execute(Q()["open_phones"], (json.dumps(ids),)).fetchone()[0]
        defer_capped(conn, org, rules.daily_cap(org), phones or "[]", now, rules)


def defer_capped(
    conn: sqlite3.Connection,
    org: str,
    cap: int,
    phones_json: str,
    now: float,
    rules: CallingRules,
) -> None:
    """Open contacts of the organization with these numbers, at the cap: wait until it lifts
    (defer_capped), and from then for their calling interval's next opening, which their
    `nextCallAt` (and a retry's `nextRetryAt`) then shows. (It showed when the cap lifts, a
    moment their windows may be closed; they were dialed at the opening all the same.)"""
    deferred = conn.execute(
        Q()["defer_capped"], {"org": org, "cap": cap, "phones": phones_json, "now": now}
    ).fetchall()
    windows: dict[str, str | None] = {}
    rolled: list[list[Any]] = []
    for contact_id, job_id, zones, release in deferred:
        if job_id not in windows:
            row = conn.execute(Q()["get_job_any_org"], (job_id,)).fetchone()
            windows[job_id] = row["calling_windows"] if row is not None else None
        found = rules.interval(windows[job_id], zones, release)
        if found is not None:  # (none: cancelled when it lifts, as any without a window)
            rolled.append([contact_id, found[0], found[1]])
    if rolled:
        conn.execute(Q()["roll_intervals"], {"rows": json.dumps(rolled), "now": now})


def record(
    conn: sqlite3.Connection,
    outcomes: Sequence[Outcome],
    now: float,
    rules: CallingRules,
    result_rules: ResultRules,
    resulted: list[AppliedResult] | None = None,
) -> tuple[list[str], list[Outcome]]:
    """Record finished attempts; return (jobs that became completed, refused outcomes).

    A retry decided for a job that was cancelled meanwhile becomes the final outcome instead.
    Results the agents posted while these calls were live take effect here, in the same
    transaction (their jobs are added to `resulted`).
    """
    if not outcomes:
        return [], []
    job_ids = sorted({o.job_id for o in outcomes})
    cancelled = {r[0] for r in conn.execute(Q()["cancelled_jobs"], (json.dumps(job_ids),))}
    settled = [_settle_for_cancelled(o) if o.job_id in cancelled else o for o in outcomes]
    accepted, refused = _transition_contacts(conn, settled, now)
    if conn.execute(Q()["any_pending_result"]).fetchone()[0]:
        _apply_pending_results(conn, now, result_rules, resulted)
    # After the results: finishing an attempt's row writes its webhook events from the contact
    # as the attempt, with its agent's result, left it (migration 0017).
    conn.execute(Q()["finish_attempts_batch"])
    conn.execute(Q()["drop_given_back_attempts"])
    conn.execute(Q()["cancel_listed_outcomes"], {"now": now})
    conn.execute(Q()["clear_outcome_batch"])
    _defer_waiting_at_cap(conn, accepted, now, rules)
    spend: dict[str, float] = {}
    job_spend: dict[str, float] = {}
    calls: dict[str, list[float]] = {}  # job -> [attempts ended, their seconds]
    for o in accepted:
        if o.charged_usd:
            spend[o.organization_id] = spend.get(o.organization_id, 0.0) + o.charged_usd
            job_spend[o.job_id] = job_spend.get(o.job_id, 0.0) + o.charged_usd
        if not o.give_back and o.ended_at is not None:
            stats = calls.setdefault(o.job_id, [0, 0.0])
            stats[0] += 1
            stats[1] += max(0.0, o.ended_at - o.started_at)
    conn.executemany(Q()["add_spend"], list(spend.items()))
    conn.executemany(Q()["add_job_spend"], [(usd, job) for job, usd in job_spend.items()])
    conn.execute(
        Q()["add_call_stats_batch"],
        (json.dumps([[job, n, secs] for job, (n, secs) in calls.items()]),),
    )
    params = {"ids": json.dumps(job_ids), "now": now, "credits": CREDITS_EXHAUSTED}
    completed = [r[0] for r in conn.execute(Q()["complete_jobs_if_done"], params)]
    return completed, refused


def _apply_pending_results(
    conn: sqlite3.Connection, now: float, rules: ResultRules, resulted: list[AppliedResult] | None
) -> None:
    """The results posted while the calls of temp.outcome_batch were live: the latest of each
    attempt takes effect (a dial given back was no call: its results only stop waiting)."""
    pending = conn.execute(Q()["pending_results_in_batch"]).fetchall()
    for contact_id, attempt_no, result_id, give_back in pending:
        if give_back:
            params = {"contact_id": contact_id, "attempt_no": attempt_no, "now": now}
            conn.execute(Q()["mark_results_applied"], params)
            continue
        applied = apply_result(conn, contact_id, attempt_no, result_id, now, rules)
        if applied is not None and resulted is not None:
            resulted.append(applied)


def apply_result(
    conn: sqlite3.Connection,
    contact_id: int,
    attempt_no: int,
    result_id: int,
    now: float,
    rules: ResultRules,
) -> AppliedResult | None:
    """Make the effect of result `result_id` (the latest for the attempt, whose call has ended)
    on its contact; mark the attempt's results applied. Returns what changed (None: the contact
    moved on since, e.g. it is dialing again or was cancelled)."""
    row = conn.execute(Q()["result_context"], {"result_id": result_id}).fetchone()
    conn.execute(
        Q()["mark_results_applied"],
        {"contact_id": contact_id, "attempt_no": attempt_no, "now": now},
    )
    if row is None:
        return None
    (disposition, callback_at, status, attempt_count, max_attempts, zones, phone) = row[:7]
    job_id, org, job_status, retry_statuses, delay, backoff, on_voicemail, windows_json = row[7:]
    if attempt_count != attempt_no or status in ("dialing", "cancelled"):
        return None
    change = rules.change(
        ResultFacts(
            disposition=disposition,
            callback_at=callback_at,
            attempt_no=attempt_no,
            max_attempts=max_attempts,
            zones=zones,
            job_status=job_status,
            retry_statuses=tuple(json.loads(retry_statuses)),
            retry_delay_seconds=delay,
            retry_backoff=backoff,
            retry_on_voicemail=bool(on_voicemail),
            calling_windows=windows_json,
            now=now,
        )
    )
    params = {
        "contact_id": contact_id,
        "attempt_no": attempt_no,
        "status": change.status,
        "next_retry_at": change.next_retry_at,
        "next_call_at": change.next_call_at,
        "call_until": change.call_until,
        "max_attempts": change.max_attempts,
        "completed_at": change.completed_at,
        "failure_reason": change.failure_reason,
        "now": now,
    }
    if conn.execute(Q()["apply_result_to_contact"], params).rowcount != 1:
        return None
    if change.do_not_call:
        reason = "Asked not to be called again (agent result)"
        listing = {"org": org, "number": phone, "reason": reason, "now": now, "job_id": job_id}
        conn.execute(Q()["dnc_add_from_agent"], listing)
        numbers = {"org": org, "numbers": json.dumps([phone]), "now": now}
        conn.execute(Q()["dnc_cancel_contacts"], numbers).fetchall()
    if change.status in ("pending", "queued"):
        # Waiting again: never for a number listed meanwhile; else its job looks for it.
        listed = {"contact_id": contact_id, "now": now}
        if conn.execute(Q()["cancel_contact_if_listed"], listed).rowcount == 0:
            conn.execute(Q()["reopen_job"], {"id": job_id, "now": now})
    return AppliedResult(str(job_id), contact_id, attempt_no, str(disposition), change.status)


def pause_out_of_credits(
    conn: sqlite3.Connection, limits_json: str, now: float
) -> list[JobVerdict]:
    """Pause the running jobs of organizations whose spend reached their credits."""
    params = {"limits": limits_json, "reason": CREDITS_EXHAUSTED, "now": now}
    return [
        JobVerdict(row[0], "paused", CREDITS_EXHAUSTED)
        for row in conn.execute(Q()["pause_jobs_out_of_credits"], params).fetchall()
    ]


def apply_verdict(conn: sqlite3.Connection, verdict: JobVerdict, now: float) -> bool:
    """Fail or pause a job the engine judged; False when it was no longer in a state for it."""
    if verdict.status == "failed":
        params = {"id": verdict.job_id, "reason": verdict.reason, "now": now}
        return conn.execute(Q()["fail_job"], params).rowcount == 1
    params = {
        "id": verdict.job_id,
        "org": None,
        "reason": verdict.reason,
        "now": now,
        "from_statuses": '["running"]',
    }
    return conn.execute(Q()["pause_job"], params).rowcount == 1


def _settle_for_cancelled(o: Outcome) -> Outcome:
    """A retry decided for a job that was cancelled meanwhile becomes the final outcome."""
    if o.next_status not in ("queued", "pending"):
        return o
    return replace(o, next_status="cancelled" if o.give_back else o.outcome, next_retry_at=None)


# Rows of temp.outcome_batch are inserted this many at a time, as bound parameters of one
# statement each (largest first): a few statements a cycle, and a handful of statement shapes
# for the statement cache. (Extracting 17 fields from a JSON text per row cost 21 us a row.)
_OUTCOME_CHUNKS = (128, 32, 8, 1)
_OUTCOME_COLUMNS = 18


@functools.cache
def _insert_outcomes_sql(rows: int) -> str:
    row = "(" + ",".join("?" * _OUTCOME_COLUMNS) + ")"
    return "INSERT INTO temp.outcome_batch VALUES " + ",".join([row] * rows)


def _load_outcome_batch(conn: sqlite3.Connection, rows: list[list[Any]]) -> None:
    """Insert the rows into temp.outcome_batch in a few statements."""
    done = 0
    for size in _OUTCOME_CHUNKS:
        while len(rows) - done >= size:
            chunk = rows[done : done + size]
            conn.execute(_insert_outcomes_sql(size), [value for row in chunk for value in row])
            done += size


def _batch_row(o: Outcome, now: float) -> list[Any]:
    """An outcome as a row of temp.outcome_batch (in its column order)."""
    final = not o.give_back and o.next_status not in ("queued", "pending")
    return [
        o.contact_id,
        o.job_id,
        o.attempt_no,
        int(o.give_back),
        o.next_status,
        o.next_retry_at,
        (o.ended_at or now) if final else None,
        str(o.sip_code) if o.sip_code is not None else None,
        o.reason,
        o.duration,
        "not_placed" if o.give_back else o.outcome,
        o.sip_code,
        o.answered_at,
        o.ended_at,
        o.charged_usd,
        o.next_call_at,
        o.call_until,
        o.started_at,
    ]


def _transition_contacts(
    conn: sqlite3.Connection, outcomes: Sequence[Outcome], now: float
) -> tuple[list[Outcome], list[Outcome]]:
    """Load the outcomes into temp.outcome_batch and apply each one's guarded contact
    transition; return (accepted, refused). The batch is left holding the accepted ones.

    The usual case, every contact still `dialing` that attempt, is two set-based statements; if
    any guard refuses, they are undone and the outcomes applied one by one to find out which
    (never overwritten: the refused ones are only reported, and leave the batch).
    """
    conn.execute(Q()["clear_outcome_batch"])
    _load_outcome_batch(conn, [_batch_row(o, now) for o in outcomes])
    conn.execute("SAVEPOINT transitions")
    changed = conn.execute(Q()["finish_contacts_batch"], {"now": now}).rowcount
    if any(o.give_back for o in outcomes):
        changed += conn.execute(Q()["give_back_batch"], {"now": now}).rowcount
    if changed == len(outcomes):
        conn.execute("RELEASE transitions")
        return list(outcomes), []
    conn.execute("ROLLBACK TO transitions")
    conn.execute("RELEASE transitions")
    accepted: list[Outcome] = []
    refused: list[Outcome] = []
    for o in outcomes:
        row = _batch_row(o, now)
        params = {
            "contact_id": o.contact_id,
            "attempt_no": o.attempt_no,
            "status": o.next_status,
            "next_retry_at": o.next_retry_at,
            "completed_at": row[6],
            "error_code": row[7],
            "failure_reason": o.reason,
            "duration": o.duration,
            "next_call_at": o.next_call_at,
            "call_until": o.call_until,
            "started_at": o.started_at,
            "now": now,
        }
        query = Q()["give_back_attempt" if o.give_back else "finish_contact"]
        if conn.execute(query, params).rowcount == 1:
            accepted.append(o)
        else:
            refused.append(o)
            conn.execute(Q()["forget_outcome"], (o.contact_id,))
    return accepted, refused
