"""The pure mapping from an agent's disposition to the contact's next state, and the tokens."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dialer import results
from storage.rows import AlwaysOpen, ResultFacts
from storage.store import Store

NOW = 1_000_000.0
FACTS = ResultFacts(
    disposition="completed",
    callback_at=None,
    attempt_no=1,
    max_attempts=3,
    zones=None,
    job_status="running",
    retry_statuses=("no_answer", "busy"),
    retry_delay_seconds=300.0,
    retry_backoff=2.0,
    retry_on_voicemail=True,
    calling_windows=None,
    now=NOW,
)
RULES = results.ResultRules(AlwaysOpen())


@pytest.mark.parametrize("disposition", ["completed", "not_interested", "do_not_call"])
def test_reached_dispositions_complete_the_contact(disposition: str) -> None:
    change = RULES.change(replace(FACTS, disposition=disposition))
    assert (change.status, change.next_retry_at, change.completed_at) == ("completed", None, NOW)
    assert change.do_not_call is (disposition == "do_not_call")


def test_voicemail_follows_the_retry_policy() -> None:
    first = RULES.change(replace(FACTS, disposition="voicemail"))
    assert (first.status, first.next_retry_at, first.failure_reason) == (
        "queued",
        NOW + 300,
        "voicemail",
    )
    second = RULES.change(replace(FACTS, disposition="voicemail", attempt_no=2))
    assert second.next_retry_at == NOW + 600  # backoff x2
    last = RULES.change(replace(FACTS, disposition="voicemail", attempt_no=3))
    assert (last.status, last.completed_at) == ("no_answer", NOW)
    not_retried = replace(FACTS, disposition="voicemail", retry_statuses=("busy",))
    assert RULES.change(not_retried).status == "no_answer"
    off = replace(FACTS, disposition="voicemail", retry_on_voicemail=False)
    assert RULES.change(off).status == "no_answer"


def test_a_callback_is_queued_at_its_time_and_grants_an_attempt() -> None:
    facts = replace(FACTS, disposition="callback_requested", callback_at=NOW + 7200)
    change = RULES.change(replace(facts, attempt_no=3))
    assert (change.status, change.next_retry_at, change.max_attempts) == ("queued", NOW + 7200, 4)
    assert RULES.change(facts).max_attempts == 3  # attempts left: none granted
    past = RULES.change(replace(facts, callback_at=NOW - 60))
    assert past.next_retry_at == NOW


class NeverOpen(AlwaysOpen):
    """Calling windows its zones never share (one vanished at a daylight-saving change)."""

    def interval(
        self, windows_json: str | None, zones: str | None, at: float
    ) -> tuple[float, float | None] | None:
        return None


def test_a_retry_without_a_common_window_ends_its_interval_now() -> None:
    """Queued again with no common window left: its interval ends now, so the next claim
    cancels it (no_common_window). (With no end it could be dialed at any hour.)"""
    facts = replace(FACTS, disposition="voicemail", calling_windows="[]")
    change = results.ResultRules(NeverOpen()).change(facts)
    assert (change.status, change.next_call_at, change.call_until) == ("queued", None, NOW)


@pytest.mark.parametrize("job_status", ["cancelled", "failed"])
def test_a_closed_job_never_queues_again(job_status: str) -> None:
    callback = replace(
        FACTS, disposition="callback_requested", callback_at=NOW + 60, job_status=job_status
    )
    assert RULES.change(callback).status == "completed"
    voicemail = replace(FACTS, disposition="voicemail", job_status=job_status)
    assert RULES.change(voicemail).status == "no_answer"


def test_tokens_are_per_room_and_constant_length() -> None:
    secret = b"s" * 32
    token = results.callback_token(secret, "job_c1_a1_abcdef")
    assert len(token) == 43 and "=" not in token
    assert results.token_matches(secret, "job_c1_a1_abcdef", token)
    assert not results.token_matches(secret, "job_c1_a2_abcdef", token)
    assert not results.token_matches(b"t" * 32, "job_c1_a1_abcdef", token)
    assert results.callback_url("https://d.example/", "r1") == "https://d.example/calls/r1/result"


async def test_the_callback_secret_is_made_once_per_database(tmp_path: Path) -> None:
    """Tokens handed to agents before a restart still verify after it; another database has
    another secret."""
    first = await Store.open(str(tmp_path / "a.db"))
    secret = await first.callback_secret()
    await first.close()
    again = await Store.open(str(tmp_path / "a.db"))
    other = await Store.open(str(tmp_path / "b.db"))
    try:
        assert await again.callback_secret() == secret and len(secret) == 32
        assert await other.callback_secret() != secret
    finally:
        await again.close()
        await other.close()


def test_a_dial_request_derives_its_agent_token_only_when_asked() -> None:
    """The engine hands providers the secret; the token is the HMAC of the room, computed when
    a provider sends it; an explicit token wins; neither shows in the request's repr."""
    from dialer.providers.base import DialRequest

    base = dict(
        job_id="j",
        contact_id=1,
        attempt_no=1,
        room_name="job_c1_a1_abcdef",
        to_number="+1",
        from_number="+1",
        sip_trunk_id="t",
        agent_name="a",
    )
    secret = b"s" * 32
    derived = DialRequest(**base, callback_secret=secret)  # type: ignore[arg-type]
    assert derived.agent_token == results.callback_token(secret, "job_c1_a1_abcdef")
    explicit = DialRequest(**base, callback_token="given", callback_secret=secret)  # type: ignore[arg-type]
    assert explicit.agent_token == "given"
    assert DialRequest(**base).agent_token == ""  # type: ignore[arg-type]
    assert derived.agent_token not in repr(derived) and repr(secret) not in repr(derived)
