"""The TOML config: one file, every key defaulted except the tenants, unknown keys rejected."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dialer import states, windows


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


PositiveFloat = Annotated[float, Field(gt=0)]


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_mb: float = Field(default=12.0, gt=0)
    # Per API key: sustained requests per second, and how many may come at once.
    requests_per_second: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, ge=1)
    # Open connections at most (those still sending request headers give way first), and how
    # long a connection may take to send a request head.
    max_connections: int = Field(default=1000, ge=1)
    # Streams open at once (live progress, held for as long as its job runs; CSV exports,
    # written as fast as they are read): in all, and per organization, so that one organization
    # cannot hold every connection.
    max_event_streams: int = Field(default=500, ge=1)
    max_event_streams_per_organization: int = Field(default=100, ge=1)
    header_timeout_seconds: float = Field(default=15.0, gt=0)
    # A request's body must have arrived this long after the handler began reading it.
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    # The address agents reach this service at: each call's `callbackUrl` is
    # `{public_url}/calls/{roomName}/result`. Default: http://host:port.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")


class StorageConfig(_Section):
    path: str = "data/dialer.db"
    # How long a write waits for the database lock (another process holding it) before it
    # fails: the API then answers 503 storage_unavailable and the engine retries.
    busy_timeout_seconds: float = Field(default=5.0, gt=0, le=5)


class EngineConfig(_Section):
    max_concurrent_calls: int = Field(default=100, ge=1, le=10_000)
    retry_delay_seconds: float = Field(default=300.0, ge=0)
    retry_backoff: float = Field(default=2.0, ge=1.0)
    default_call_seconds: float = Field(default=60.0, gt=0)
    expected_answer_rate: float = Field(default=0.6, gt=0, le=1)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # How many "job cannot proceed" provider errors in a row fail a job.
    provider_failure_limit: int = Field(default=3, ge=1)
    # While the provider cannot be reached no job dials (a probe dial at most every 60 s);
    # after this long the running jobs pause, saying why.
    provider_unreachable_pause_seconds: float = Field(default=600.0, gt=0)
    # Automatic pause: when at least `auto_pause_min_attempts` attempts of a job ended within
    # `auto_pause_window_seconds` and at least `auto_pause_failure_ratio` of them ended
    # carrier_error or failed, the job pauses itself. 0 attempts turns it off.
    auto_pause_min_attempts: int = Field(default=10, ge=0)
    auto_pause_window_seconds: float = Field(default=120.0, gt=0)
    auto_pause_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    # Claiming ahead: for a job whose calls end often (more than one a second per slot or so),
    # the contacts its slots will need in about this long are claimed ahead (durably, like any
    # claim) and dialed the moment a slot frees, without waiting for a write. 0 turns it off.
    # See Engine._deck.
    claim_ahead_seconds: float = Field(default=1.0, ge=0, le=5)


class MetricsConfig(_Section):
    # When set, `GET /metrics` answers only requests with `Authorization: Bearer <token>`.
    token: str | None = Field(default=None, min_length=1, repr=False)


class PricingConfig(_Section):
    usd_per_minute: float = Field(default=0.10, ge=0)


class SimulatedRule(_Section):
    prefix: str
    outcome: Literal[
        "completed",
        "no_answer",
        "busy",
        "timeout",
        "blocked",
        "invalid_number",
        "carrier_error",
        "failed",
    ] = "completed"
    sip_code: int | None = None
    seconds: float | None = Field(default=None, ge=0)
    # A scripted agent: on an answered call it reports this result through the service's
    # results route (as a real agent posts to its callbackUrl) before the call ends.
    disposition: (
        Literal["completed", "not_interested", "voicemail", "callback_requested", "do_not_call"]
        | None
    ) = None
    callback_after_seconds: float = Field(default=3600.0, ge=0)  # callback_requested: when
    summary: str | None = Field(default=None, max_length=2000)
    # False: the agent never joins the room, so nobody is dialed; the attempt ends after
    # `seconds` (the join timeout, as it were) and is given back like LiveKit's.
    agent_joins: bool = True


class SimulatedConfig(_Section):
    call_seconds: float = Field(default=20.0, ge=0)
    ring_seconds: float = Field(default=2.0, ge=0)
    speed: PositiveFloat = 1.0
    default_outcome: str | None = None
    mix: dict[str, float] | None = None
    seed: int = 0
    rules: list[SimulatedRule] = Field(default_factory=list)
    # Append one line per dial to this file (a ledger tests and operators can audit).
    dial_log: str | None = None
    # A limit of the simulated provider's project on calls at once (as LiveKit's on concurrent
    # SIP calls): a dial beyond it is refused before any call is placed. None: no limit.
    project_call_limit: int | None = Field(default=None, gt=0)

    @field_validator("default_outcome")
    @classmethod
    def _known_outcome(cls, value: str | None) -> str | None:
        if value is not None and value not in states.CALL_OUTCOMES:
            raise ValueError(f"unknown outcome {value!r}")
        return value

    @field_validator("mix")
    @classmethod
    def _known_mix(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        for outcome, weight in value.items():
            if outcome not in states.CALL_OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r} in mix")
            if weight < 0:
                raise ValueError(f"weight of {outcome!r} is negative")
        if sum(value.values()) <= 0:
            raise ValueError("mix weights add up to zero")
        return value


class LiveKitConfig(_Section):
    url: str = ""
    api_key: str = Field(default="", repr=False)
    api_secret: str = Field(default="", repr=False)
    ringing_timeout_seconds: float = Field(default=30.0, gt=0)
    max_call_seconds: float = Field(default=900.0, gt=0)
    webhook_path: str = "/webhooks/livekit"
    poll_interval_seconds: float = Field(default=15.0, gt=0)
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    # The callee is dialed only once the dispatched agent is in the room; an agent that has not
    # joined within this long means no dial (the attempt is given back). That many such failures
    # in a row for one job pause the job.
    agent_join_timeout_seconds: float = Field(default=10.0, gt=0)
    agent_join_failure_limit: int = Field(default=3, ge=1)

    def with_env(self) -> LiveKitConfig:
        """Fill empty credentials from LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET."""
        return self.model_copy(
            update={
                "url": self.url or os.environ.get("LIVEKIT_URL", ""),
                "api_key": self.api_key or os.environ.get("LIVEKIT_API_KEY", ""),
                "api_secret": self.api_secret or os.environ.get("LIVEKIT_API_SECRET", ""),
            }
        )


class TelephonyConfig(_Section):
    provider: Literal["simulated", "livekit"] = "simulated"
    simulated: SimulatedConfig = SimulatedConfig()
    livekit: LiveKitConfig = LiveKitConfig()


class WebhooksConfig(_Section):
    # Endpoints on loopback, link-local or private addresses are refused unless this is set
    # (a receiver on the same host or network: development, tests).
    allow_private_urls: bool = False
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    max_in_flight_per_endpoint: int = Field(default=4, ge=1, le=64)
    # Events and their deliveries are forgotten this long after the event, once no delivery
    # needs them (every one delivered, or failed for good); 0 keeps them forever.
    keep_days: float = Field(default=90.0, ge=0)


class Organization(_Section):
    id: str = Field(min_length=1)
    name: str = ""
    credits_usd: float | None = Field(default=None, ge=0)
    max_concurrent_calls: int | None = Field(default=None, ge=1)
    # Quotas: unfinished jobs (pending, scheduled, running, paused) and contacts stored in all
    # of the organization's jobs.
    max_active_jobs: int = Field(default=100, ge=1)
    max_stored_contacts: int = Field(default=1_000_000, ge=1)
    # The calling windows of jobs that name none (absent: every day 08:00-21:00), each
    # {days = ["mon", ...], start = "HH:MM", end = "HH:MM"}, read in the recipient's zones.
    calling_windows: list[dict[str, Any]] | None = None
    # Dials to one number within any 24 h, across all of the organization's jobs (0: no cap).
    max_attempts_per_number_per_day: int = Field(default=3, ge=0)

    @field_validator("calling_windows")
    @classmethod
    def _windows(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value is not None:
            windows.parse_windows(value)
        return value

    def default_windows(self) -> windows.Windows:
        """The calling windows of its jobs that name none."""
        if self.calling_windows is None:
            return windows.DEFAULT_WINDOWS
        return windows.parse_windows(self.calling_windows)


class Agent(_Section):
    id: str = Field(min_length=1)
    organization: str
    name: str = ""
    livekit_agent_name: str = ""


class PhoneNumber(_Section):
    id: str = Field(min_length=1)
    organization: str
    number: str
    provider: Literal["twilio", "vobiz", "sip_trunk"] = "sip_trunk"
    sip_trunk_id: str = ""
    outbound_agent: str | None = None
    calls_per_second: float = Field(default=1.0, gt=0)

    @field_validator("number")
    @classmethod
    def _e164(cls, value: str) -> str:
        from dialer import intake

        problem = intake.e164_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class Config(_Section):
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    engine: EngineConfig = EngineConfig()
    pricing: PricingConfig = PricingConfig()
    metrics: MetricsConfig = MetricsConfig()
    telephony: TelephonyConfig = TelephonyConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    organizations: list[Organization] = Field(default_factory=list)
    agents: list[Agent] = Field(default_factory=list)
    phone_numbers: list[PhoneNumber] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Config:
        orgs = {o.id for o in self.organizations}
        _unique("organizations", [o.id for o in self.organizations])
        _unique("agents", [a.id for a in self.agents])
        _unique("phone_numbers", [p.id for p in self.phone_numbers])
        agents = {a.id: a for a in self.agents}
        for agent in self.agents:
            if agent.organization not in orgs:
                raise ValueError(f"agents.{agent.id}.organization: unknown {agent.organization!r}")
        for number in self.phone_numbers:
            if number.organization not in orgs:
                raise ValueError(
                    f"phone_numbers.{number.id}.organization: unknown {number.organization!r}"
                )
            if number.outbound_agent is not None:
                outbound = agents.get(number.outbound_agent)
                if outbound is None or outbound.organization != number.organization:
                    raise ValueError(
                        f"phone_numbers.{number.id}.outbound_agent: unknown agent "
                        f"{number.outbound_agent!r} in organization {number.organization!r}"
                    )
        return self

    def organization(self, org_id: str) -> Organization | None:
        return next((o for o in self.organizations if o.id == org_id), None)

    def credit_limits(self) -> dict[str, float]:
        """{organization: credits} of the organizations that have credits."""
        return {o.id: o.credits_usd for o in self.organizations if o.credits_usd is not None}

    def agent(self, agent_id: str) -> Agent | None:
        return next((a for a in self.agents if a.id == agent_id), None)

    def phone_number(self, number_id: str) -> PhoneNumber | None:
        return next((p for p in self.phone_numbers if p.id == number_id), None)


def _unique(section: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise ValueError(f"{section}: id {item!r} appears twice")
        seen.add(item)


def parse(data: dict[str, Any]) -> Config:
    """Validate a config mapping; errors name the offending key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "config"
            if err["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown key")
            else:
                problems.append(f"{where}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def check_telephony(config: Config) -> None:
    """Start-up checks for the chosen telephony provider; a ConfigError names what is missing.

    Kept out of `load` so that commands that place no calls (`dialer keys ...`) still work.
    """
    if config.telephony.provider != "livekit":
        return
    livekit = config.telephony.livekit.with_env()
    missing = [
        f"telephony.livekit.{key} (or env {env})"
        for key, env, value in (
            ("url", "LIVEKIT_URL", livekit.url),
            ("api_key", "LIVEKIT_API_KEY", livekit.api_key),
            ("api_secret", "LIVEKIT_API_SECRET", livekit.api_secret),
        )
        if not value
    ]
    missing += [
        f"phone_numbers.{n.id}.sip_trunk_id" for n in config.phone_numbers if not n.sip_trunk_id
    ]
    if missing:
        raise ConfigError(
            'telephony provider "livekit" needs:\n  '
            + "\n  ".join(f"{m}: not set" for m in missing)
        )


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    config = parse(data)
    storage_path = Path(config.storage.path)
    if config.storage.path != ":memory:" and not storage_path.is_absolute():
        # Relative paths are relative to the config file, so the service finds the same database
        # whatever directory it is started from.
        resolved = (Path(path).resolve().parent / storage_path).as_posix()
        config = config.model_copy(
            update={"storage": config.storage.model_copy(update={"path": resolved})}
        )
    return config
