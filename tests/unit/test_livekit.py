"""LiveKit provider logic without a network: error classification and start-up checks."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from livekit import api

from api.app import create_app
from dialer import config as configmod
from dialer.config import LiveKitConfig
from dialer.providers.livekit import classify
from dialer.states import ContactStatus
from tests.conftest import make_config

CONFIG = LiveKitConfig(url="http://lk", api_key="k", api_secret="s", ringing_timeout_seconds=30)


def twirp(code: str, status: int, **meta: str) -> api.ServerError:
    return api.ServerError(code, "msg", status=status, metadata=meta)


def test_sip_code_in_metadata_wins_over_the_twirp_code() -> None:
    """A SIP code LiveKit attached decides the status, whatever Twirp code carries it."""
    error = twirp("permission_denied", 403, sip_status_code="603", sip_status="Decline")
    result = classify(error, dial_sent=True, config=CONFIG)
    assert (result.status, result.sip_code, result.reason) == (
        ContactStatus.BLOCKED,
        603,
        "SIP 603 Decline",
    )
    assert not result.job_fatal


@pytest.mark.parametrize(
    ("error", "status", "flags"),
    [
        (twirp("canceled", 408), ContactStatus.NO_ANSWER, {}),
        (twirp("deadline_exceeded", 408), ContactStatus.TIMEOUT, {}),
        (TimeoutError(), ContactStatus.TIMEOUT, {}),
        (twirp("unauthenticated", 401), ContactStatus.FAILED, {"job_fatal": True}),
        (twirp("permission_denied", 403), ContactStatus.FAILED, {"job_fatal": True}),
        (twirp("not_found", 404), ContactStatus.FAILED, {"job_fatal": True}),
        (
            twirp("unavailable", 503),
            ContactStatus.FAILED,
            {"retryable": True, "provider_error": True},
        ),
        (twirp("invalid_argument", 400), ContactStatus.FAILED, {}),
        (
            aiohttp.ServerDisconnectedError(),
            ContactStatus.FAILED,
            {"retryable": True, "provider_error": True},
        ),
    ],
)
def test_dial_errors_map_to_outcomes(
    error: BaseException, status: ContactStatus, flags: dict[str, Any]
) -> None:
    """Errors of a dial that was sent map to the status and flags the design asks for."""
    result = classify(error, dial_sent=True, config=CONFIG)
    assert result.status is status
    assert result.sip_code is None
    assert result.reason
    assert not result.not_placed
    assert result.job_fatal == flags.get("job_fatal", False)
    assert result.retryable == flags.get("retryable", False)
    assert result.provider_error == flags.get("provider_error", False)


@pytest.mark.parametrize(
    "error",
    [TimeoutError(), aiohttp.ServerDisconnectedError(), twirp("internal", 500)],
)
def test_dispatch_failures_place_no_call(error: BaseException) -> None:
    """Transport trouble or a LiveKit 5xx before the dial was sent gives the attempt back."""
    result = classify(error, dial_sent=False, config=CONFIG)
    assert result.not_placed and not result.job_fatal


@pytest.mark.parametrize("dial_sent", [False, True])
def test_a_limit_of_the_project_places_no_call(dial_sent: bool) -> None:
    """LiveKit refusing the dispatch or the dial for a project limit (resource_exhausted, 429,
    no SIP code) gives the attempt back: neither the contact's failure nor the job's."""
    result = classify(twirp("resource_exhausted", 429), dial_sent=dial_sent, config=CONFIG)
    assert result.not_placed and result.at_limit  # (the engine keeps within it, see Engine)
    assert not result.job_fatal
    assert result.sip_code is None
    assert result.reason is not None and "a limit of the project was reached" in result.reason


def test_a_busy_callee_is_not_a_limit_of_the_project() -> None:
    """A busy answer comes as resource_exhausted too, with its SIP code; and an older server's
    error text naming the SIP answer means an INVITE went out: both count as attempts."""
    busy = twirp("resource_exhausted", 429, sip_status_code="486", sip_status="Busy Here")
    result = classify(busy, dial_sent=True, config=CONFIG)
    assert (result.status, result.sip_code, result.not_placed) == (ContactStatus.BUSY, 486, False)
    assert not result.at_limit
    named = api.ServerError(
        "resource_exhausted", "INVITE failed: sip status: 486: Busy Here", status=429
    )
    result = classify(named, dial_sent=True, config=CONFIG)
    assert result.status is ContactStatus.FAILED
    assert result.retryable and not result.not_placed and not result.job_fatal


def test_refused_dispatch_is_job_fatal() -> None:
    """A dispatch LiveKit refuses (4xx) is a configuration problem, not the contact's."""
    result = classify(twirp("invalid_argument", 400), dial_sent=False, config=CONFIG)
    assert result.job_fatal and not result.not_placed


def test_unexpected_errors_are_not_swallowed() -> None:
    """An error that is not LiveKit's or the network's is raised again (a bug must show)."""
    with pytest.raises(KeyError):
        classify(KeyError("x"), dial_sent=True, config=CONFIG)


def livekit_config(**livekit: Any) -> configmod.Config:
    return make_config(telephony={"provider": "livekit", "livekit": livekit})


def test_livekit_without_credentials_is_a_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """provider = "livekit" without url/key/secret (file or env) names each missing setting."""
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    config = livekit_config()
    with pytest.raises(configmod.ConfigError) as err:
        configmod.check_telephony(config)
    for missing in ("telephony.livekit.url", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        assert missing in str(err.value)
    with pytest.raises(configmod.ConfigError):
        create_app(config)


def test_credentials_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET fill what the file leaves empty."""
    monkeypatch.setenv("LIVEKIT_URL", "wss://project.livekit.cloud")
    monkeypatch.setenv("LIVEKIT_API_KEY", "key")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "secret")
    config = livekit_config()
    with pytest.raises(configmod.ConfigError) as err:
        configmod.check_telephony(config)  # the test config has numbers without a trunk
    assert "telephony.livekit" not in str(err.value)
    assert "phone_numbers.num_noagent.sip_trunk_id" in str(err.value)
    assert config.telephony.livekit.with_env().url == "wss://project.livekit.cloud"


def test_simulated_provider_needs_no_livekit_settings() -> None:
    """The start-up check only applies when the livekit provider is chosen."""
    configmod.check_telephony(make_config())


def test_a_sip_code_that_cannot_be_one_is_not_kept() -> None:
    """A `sip_status_code` of 20 digits (SQLite cannot store it: the engine stopped at every
    start), a 2-digit one, or metadata that is not an object: no SIP code."""
    for raw in ("99999999999999999999", "42", "4861", "-486", "", "४८६"):
        result = classify(
            twirp("unavailable", 503, sip_status_code=raw), dial_sent=True, config=CONFIG
        )
        assert result.sip_code is None, raw
        assert result.status is ContactStatus.FAILED and result.retryable
    odd = api.ServerError("unavailable", "msg", status=503, metadata="not an object")  # type: ignore[arg-type]
    assert classify(odd, dial_sent=True, config=CONFIG).sip_code is None
    busy = twirp("resource_exhausted", 429, sip_status_code=" 486 ")
    assert classify(busy, dial_sent=True, config=CONFIG).sip_code == 486
