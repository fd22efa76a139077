"""The TOML config: defaults, unknown keys and wrong types rejected by name, tenant references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dialer import config as configmod

REPO_ROOT = Path(__file__).resolve().parents[2]


def tenants(**changes: Any) -> dict[str, Any]:
    """A minimal valid config with one organization, agent and number; `changes` replace keys."""
    data: dict[str, Any] = {
        "organizations": [{"id": "org_a"}, {"id": "org_b"}],
        "agents": [
            {"id": "agent_a", "organization": "org_a"},
            {"id": "agent_b", "organization": "org_b"},
        ],
        "phone_numbers": [
            {
                "id": "num_a",
                "organization": "org_a",
                "number": "+12025550100",
                "outbound_agent": "agent_a",
            }
        ],
    }
    data.update(changes)
    return data


def number(**fields: Any) -> dict[str, Any]:
    """A phone_numbers entry of org_a with `fields` replaced."""
    return {"id": "num_x", "organization": "org_a", "number": "+12025550100", **fields}


def config_error(data: dict[str, Any]) -> str:
    """The message of the ConfigError that parsing `data` raises."""
    with pytest.raises(configmod.ConfigError) as caught:
        configmod.parse(data)
    return str(caught.value)


def write_config(directory: Path, text: str) -> Path:
    """Write `text` as config.toml in `directory` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_empty_config_gets_every_default() -> None:
    """An empty mapping is a valid config with the documented defaults and no tenants."""
    config = configmod.parse({})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.storage.path == "data/dialer.db"
    assert config.engine.max_concurrent_calls == 100
    assert config.engine.retry_delay_seconds == 300.0
    assert config.engine.retry_backoff == 2.0
    assert config.telephony.provider == "simulated"
    assert (config.organizations, config.agents, config.phone_numbers) == ([], [], [])


def test_given_values_override_defaults_and_lookups_find_tenants() -> None:
    """Set keys win over defaults; organization/agent/phone_number find entries by id."""
    config = configmod.parse(tenants(engine={"max_concurrent_calls": 7}))
    assert config.engine.max_concurrent_calls == 7
    assert config.engine.retry_backoff == 2.0
    org, agent, num = (
        config.organization("org_b"),
        config.agent("agent_a"),
        config.phone_number("num_a"),
    )
    assert org is not None and org.id == "org_b"
    assert agent is not None and agent.organization == "org_a"
    assert num is not None and num.number == "+12025550100"
    assert config.organization("nope") is None and config.phone_number("nope") is None


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"bogus": 1}, "bogus"),
        ({"engine": {"bogus": 1}}, "engine.bogus"),
        ({"telephony": {"simulated": {"sped": 2.0}}}, "telephony.simulated.sped"),
        ({"organizations": [{"id": "o", "credit": 5}]}, "organizations.0.credit"),
    ],
)
def test_unknown_keys_are_rejected_by_name(data: dict[str, Any], where: str) -> None:
    """A misspelt key is an error that names its full path, never silently ignored."""
    assert f"{where}: unknown key" in config_error(data)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"engine": {"max_concurrent_calls": "100"}}, "engine.max_concurrent_calls"),
        ({"server": {"port": 80.5}}, "server.port"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"engine": {"expected_answer_rate": 1.5}}, "engine.expected_answer_rate"),
        ({"engine": {"retry_backoff": 0.5}}, "engine.retry_backoff"),
        ({"telephony": {"provider": "twilio"}}, "telephony.provider"),
        ({"storage": {"path": 5}}, "storage.path"),
        (
            {"telephony": {"simulated": {"default_outcome": "maybe"}}},
            "telephony.simulated.default_outcome",
        ),
        ({"telephony": {"simulated": {"mix": {"ringing": 1.0}}}}, "telephony.simulated.mix"),
        ({"telephony": {"simulated": {"mix": {"busy": 0.0}}}}, "telephony.simulated.mix"),
        ({"metrics": {"token": ""}}, "metrics.token"),
    ],
)
def test_wrong_types_and_values_are_rejected_by_name(data: dict[str, Any], where: str) -> None:
    """A value of the wrong type or out of range names its key (strings are not coerced)."""
    message = config_error(data)
    assert f"\n  {where}: " in message


def test_every_problem_is_reported_at_once() -> None:
    """Several mistakes give one error listing each of them."""
    message = config_error({"engine": {"bogus": 1, "max_concurrent_calls": 0}, "server": {"x": 1}})
    for where in ("engine.bogus", "engine.max_concurrent_calls", "server.x"):
        assert f"{where}: " in message


@pytest.mark.parametrize("bad", ["2025550100", "+1 202 555 0100", "+12025550", "+12025550100\n"])
def test_invalid_caller_number_is_rejected(bad: str) -> None:
    """A caller number that is not valid E.164 names phone_numbers.<index>.number."""
    assert "phone_numbers.0.number: " in config_error(tenants(phone_numbers=[number(number=bad)]))


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        (
            {"agents": [{"id": "agent_x", "organization": "org_zz"}]},
            "agents.agent_x.organization: unknown 'org_zz'",
        ),
        (
            {"phone_numbers": [number(organization="org_zz")]},
            "phone_numbers.num_x.organization: unknown 'org_zz'",
        ),
        (
            {"phone_numbers": [number(outbound_agent="agent_zz")]},
            "phone_numbers.num_x.outbound_agent: unknown agent 'agent_zz'",
        ),
        (
            {"phone_numbers": [number(outbound_agent="agent_b")]},
            "phone_numbers.num_x.outbound_agent: unknown agent 'agent_b' in organization 'org_a'",
        ),
    ],
    ids=["agent-org", "number-org", "number-agent", "agent-of-other-org"],
)
def test_references_to_unknown_tenants_are_rejected(changes: dict[str, Any], fragment: str) -> None:
    """Agents and numbers must point at a configured organization (and agent of the same one)."""
    assert fragment in config_error(tenants(**changes))


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"organizations": [{"id": "o"}, {"id": "o"}]}, "organizations: id 'o' appears twice"),
        (
            {
                "agents": [
                    {"id": "a", "organization": "org_a"},
                    {"id": "a", "organization": "org_b"},
                ]
            },
            "agents: id 'a' appears twice",
        ),
        (
            {"phone_numbers": [number(), number(number="+12025550101")]},
            "phone_numbers: id 'num_x' appears twice",
        ),
    ],
)
def test_duplicate_ids_are_rejected(changes: dict[str, Any], fragment: str) -> None:
    """Two entries with the same id in one section are an error naming the id."""
    assert fragment in config_error(tenants(**changes))


def test_number_without_outbound_agent_is_allowed() -> None:
    """outbound_agent is optional (jobs from such a number are refused later, not the config)."""
    config = configmod.parse(tenants(phone_numbers=[number()]))
    assert config.phone_numbers[0].outbound_agent is None


def test_load_resolves_relative_storage_path_against_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative storage path means 'next to the config file', whatever the working directory."""
    path = write_config(tmp_path / "etc", '[storage]\npath = "db/dialer.db"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = configmod.load(path)
    assert config.storage.path == (tmp_path / "etc" / "db" / "dialer.db").as_posix()


def test_load_resolves_relative_config_path_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config path relative to the cwd still anchors storage at the config's folder."""
    write_config(tmp_path / "etc", "")
    monkeypatch.chdir(tmp_path)
    config = configmod.load("etc/config.toml")
    assert config.storage.path == (tmp_path / "etc" / "data" / "dialer.db").as_posix()


@pytest.mark.parametrize("storage", [":memory:", "/var/lib/dialer/x.db"])
def test_load_keeps_memory_and_absolute_storage_paths(tmp_path: Path, storage: str) -> None:
    """':memory:' and absolute paths are used as written."""
    config = configmod.load(write_config(tmp_path, f'[storage]\npath = "{storage}"\n'))
    assert config.storage.path == storage


def test_load_reports_unknown_key_from_toml(tmp_path: Path) -> None:
    """Validation errors from a file name the key, like parse()."""
    with pytest.raises(configmod.ConfigError, match=r"engine\.bogus: unknown key"):
        configmod.load(write_config(tmp_path, "[engine]\nbogus = 1\n"))


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"[engine\n", "not valid TOML"), (b'[server]\nhost = "\xff"\n', "not valid TOML")],
)
def test_load_rejects_unparsable_files(tmp_path: Path, content: bytes, match: str) -> None:
    """Broken TOML or non-UTF-8 bytes are a ConfigError naming the file."""
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(configmod.ConfigError, match=match) as caught:
        configmod.load(path)
    assert str(path) in str(caught.value)


def test_load_missing_file(tmp_path: Path) -> None:
    """A missing config file is a ConfigError, not a traceback."""
    with pytest.raises(configmod.ConfigError, match="cannot read config"):
        configmod.load(tmp_path / "absent.toml")


def test_example_config_in_repo_root_loads() -> None:
    """config.example.toml is valid and wires its demo tenant together."""
    config = configmod.load(REPO_ROOT / "config.example.toml")
    assert config.storage.path == (REPO_ROOT / "data" / "dialer.db").as_posix()
    demo = config.phone_number("phone_demo")
    assert demo is not None and demo.outbound_agent == "agent_demo"
    assert [o.id for o in config.organizations] == ["org_demo", "org_acme"]
    assert config.organization("org_demo").credits_usd is None  # a 10,000-contact demo job fits
    no_agent = config.phone_number("phone_no_agent")
    assert no_agent is not None and no_agent.outbound_agent is None


def test_livekit_credentials_fall_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty LiveKit credentials are filled from LIVEKIT_* env vars; set ones are kept."""
    monkeypatch.setenv("LIVEKIT_URL", "wss://env.example")
    monkeypatch.setenv("LIVEKIT_API_KEY", "env-key")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "env-secret")
    config = configmod.parse({"telephony": {"livekit": {"api_key": "file-key"}}})
    livekit = config.telephony.livekit.with_env()
    assert (livekit.url, livekit.api_key, livekit.api_secret) == (
        "wss://env.example",
        "file-key",
        "env-secret",
    )


def test_livekit_secret_is_not_in_repr() -> None:
    """Secrets never show up when a config is printed or logged."""
    config = configmod.parse({"telephony": {"livekit": {"api_secret": "s3cr3t-value"}}})
    assert "s3cr3t-value" not in repr(config)


def test_organization_calling_rules_default_and_validate(tmp_path: Path) -> None:
    """Organizations default to windows every day 08:00-21:00 and a cap of 3; windows in TOML
    are validated at start-up with the organization's key named."""
    from dialer import windows

    plain = configmod.parse({"organizations": [{"id": "o"}]}).organizations[0]
    assert plain.default_windows() == windows.DEFAULT_WINDOWS
    assert plain.max_attempts_per_number_per_day == 3
    path = tmp_path / "c.toml"
    path.write_text(
        '[[organizations]]\nid = "o"\nmax_attempts_per_number_per_day = 0\n'
        'calling_windows = [{ days = ["sat"], start = "10:00", end = "18:00" }]\n'
    )
    org = configmod.load(path).organizations[0]
    assert org.max_attempts_per_number_per_day == 0
    assert windows.windows_json(org.default_windows()) == [
        {"days": ["sat"], "start": "10:00", "end": "18:00"}
    ]
    path.write_text(
        '[[organizations]]\nid = "o"\n'
        'calling_windows = [{ days = ["sat"], start = "18:00", end = "10:00" }]\n'
    )
    with pytest.raises(configmod.ConfigError, match=r"organizations\.0\.calling_windows"):
        configmod.load(path)
    with pytest.raises(configmod.ConfigError, match="max_attempts_per_number_per_day"):
        configmod.parse({"organizations": [{"id": "o", "max_attempts_per_number_per_day": -1}]})
