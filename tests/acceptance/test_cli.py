"""The `dialer` command: API keys and configuration errors."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.acceptance.conftest import dialer_cmd


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dialer_cmd(*args), capture_output=True, text=True, cwd=cwd, check=False)


def test_keys_create_list_revoke(service_factory: Any, tmp_path: Path) -> None:
    """keys create prints the key alone on the last line; list never shows it; revoke works."""
    svc = service_factory()
    created = run("keys", "create", "--org", "org_demo", "--config", str(svc.config), cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("dk_") and " " not in key
    listed = run("keys", "list", "--config", str(svc.config), cwd=tmp_path)
    assert listed.returncode == 0
    assert key not in listed.stdout
    key_id = listed.stdout.strip().splitlines()[-1].split()[0]
    assert key_id.startswith("key_")
    stored = svc.db_rows("SELECT key_hash FROM api_keys")
    assert key not in {r["key_hash"] for r in stored}
    revoked = run("keys", "revoke", key_id, "--config", str(svc.config), cwd=tmp_path)
    assert revoked.returncode == 0
    again = run("keys", "revoke", key_id, "--config", str(svc.config), cwd=tmp_path)
    assert again.returncode == 1


def test_keys_create_rejects_unknown_organization(service_factory: Any, tmp_path: Path) -> None:
    """Creating a key for an organization that is not configured fails clearly."""
    svc = service_factory()
    result = run("keys", "create", "--org", "nope", "--config", str(svc.config), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown organization 'nope'" in result.stderr


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    """Unknown keys and wrong types stop the service at start-up with the key named."""
    config = tmp_path / "bad.toml"
    config.write_text('[engine]\nmax_concurent_calls = 5\n[server]\nport = "eighty"\n')
    result = run("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "engine.max_concurent_calls: unknown key" in result.stderr
    assert "server.port" in result.stderr


def test_a_database_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    """A database a newer version migrated in a way this one would misread (a rollback after an
    upgrade): serve and the other commands refuse it in one line, naming what to do, and leave
    it as it was."""
    repo = Path(__file__).resolve().parents[2]
    db = tmp_path / "x.db"
    config = tmp_path / "config.toml"
    text = (repo / "config.example.toml").read_text()
    config.write_text(text.replace('path = "data/dialer.db"', f'path = "{db}"'))
    assert run("keys", "list", "--config", str(config), cwd=tmp_path).returncode == 0
    with sqlite3.connect(db) as conn:
        newer = conn.execute("PRAGMA user_version").fetchone()[0] + 1
        conn.execute(f"PRAGMA user_version = {newer}")
        conn.execute("UPDATE schema_compat SET oldest_code = ?", (newer,))
    for command in (["serve", "--port", "0"], ["keys", "list"]):
        result = run(*command, "--config", str(config), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "written by a newer version of the dialer" in result.stderr
        assert "Traceback" not in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == newer


def listening(log: str) -> dict[str, Any]:
    """The `service_listening` line of a serve's log: with stderr not a terminal every line
    of it is JSON, the start-up banner's too (its first line the message, the rest steps)."""
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    return next(line for line in lines if line.get("event") == "service_listening")


def test_example_config_starts_banner(tmp_path: Path) -> None:
    """The shipped example config is valid (keys list works against it)."""
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "config.example.toml").read_text()
    config = tmp_path / "config.toml"
    config.write_text(text.replace('path = "data/dialer.db"', f'path = "{tmp_path / "x.db"}"'))
    result = run("keys", "list", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_serve_banner_commands_work_with_the_example_config(
    service_factory: Any, tmp_path: Path
) -> None:
    """The start-up banner's key command and sample-CSV create, run as printed, make a job."""
    repo = Path(__file__).resolve().parents[2]
    svc = service_factory()
    text = (repo / "config.example.toml").read_text()
    text = text.replace('path = "data/dialer.db"', f'path = "{svc.db}"')
    svc.config.write_text(text.replace("port = 8080", f"port = {svc.port}"))
    svc.start()
    banner = "\n".join(listening(svc.log.read_text())["steps"])
    key_line = next(line for line in banner.splitlines() if "keys create" in line)
    assert "--org org_demo" in key_line and key_line.strip().startswith("KEY=$(")
    key_args = key_line.split("keys create", 1)[1].split("|")[0].split()
    created = run("keys", "create", *key_args, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    svc.key = created.stdout.strip().splitlines()[-1]
    curl = banner[banner.index("curl -s -X POST") :].split("3.")[0]
    sample = Path(curl.split("file=@", 1)[1].split()[0])
    assert sample.is_file()
    assert "fromPhoneNumberId=phone_demo" in curl
    status, body = svc.request_multipart(
        "/batch/create",
        {"fromPhoneNumberId": "phone_demo", "name": "First campaign"},
        sample.read_bytes(),
    )
    assert status == 201, body
    assert body["totalContacts"] == 7 and body["invalidCount"] == 1


def test_dnc_add_list_import_remove(service_factory: Any, tmp_path: Path) -> None:
    """dnc add/list/import/remove manage one organization's list and refuse bad input."""
    svc = service_factory()
    cfg = ("--org", "org_demo", "--config", str(svc.config))
    added = run(
        "dnc", "add", "+12025550111", "+12025550112", "--reason", "asked", *cfg, cwd=tmp_path
    )
    assert (added.returncode, added.stdout.strip()) == (0, "added 2, already listed 0")
    bad = run("dnc", "add", "12025550113", *cfg, cwd=tmp_path)
    assert bad.returncode == 1 and "not valid E.164" in bad.stderr
    csv_file = tmp_path / "dnc.csv"
    csv_file.write_text("phone\n+12025550112\n+12025550114\nnope\n+12025550114\n")
    imported = run("dnc", "import", str(csv_file), *cfg, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == (
        "added 1, already listed 1, invalid rows 1, duplicate rows 1"
    )
    listed = run("dnc", "list", *cfg, cwd=tmp_path)
    lines = listed.stdout.strip().splitlines()[1:]
    assert [line.split()[:2] for line in lines] == [
        ["+12025550111", "cli"],
        ["+12025550112", "cli"],
        ["+12025550114", "import"],
    ]
    assert lines[0].endswith("asked")
    for given in ("12025550111", "(202) 555-0111"):  # without its + and country code
        refused = run("dnc", "remove", given, *cfg, cwd=tmp_path)
        assert refused.returncode == 1 and "not a phone number in E.164" in refused.stderr
        refused = run("dnc", "list", "--number", given, *cfg, cwd=tmp_path)
        assert refused.returncode == 1 and "not a phone number in E.164" in refused.stderr
    removed = run("dnc", "remove", "+1 202-555-0111", *cfg, cwd=tmp_path)
    assert removed.returncode == 0 and removed.stdout.strip() == "removed +12025550111"
    again = run("dnc", "remove", "+12025550111", *cfg, cwd=tmp_path)
    assert again.returncode == 1 and "not on this organization" in again.stderr
    unknown = run("dnc", "list", "--org", "nope", "--config", str(svc.config), cwd=tmp_path)
    assert unknown.returncode == 2
    # A column of another name, named with --phone-column.
    csv_file.write_text("name,mobile\nann,+12025550115\n")
    imported = run("dnc", "import", str(csv_file), "--phone-column", "mobile", *cfg, cwd=tmp_path)
    assert (
        imported.stdout.strip() == "added 1, already listed 0, invalid rows 0, duplicate rows 0"
    ), imported.stderr
    # Only the phone column counts; national numbers are read with --default-country.
    csv_file.write_text("phone,timezone\n(202) 555-0116,Mars/Base\n202-555-0117,UTC,extra\n")
    imported = run("dnc", "import", str(csv_file), "--default-country", "US", *cfg, cwd=tmp_path)
    assert (
        imported.stdout.strip() == "added 2, already listed 0, invalid rows 0, duplicate rows 0"
    ), imported.stderr
    bad = run("dnc", "import", str(csv_file), "--default-country", "XX", *cfg, cwd=tmp_path)
    assert bad.returncode == 1 and "defaultCountry 'XX'" in bad.stderr


def _example_config(tmp_path: Path, db: str) -> Path:
    repo = Path(__file__).resolve().parents[2]
    config = tmp_path / "config.toml"
    text = (repo / "config.example.toml").read_text()
    config.write_text(text.replace('path = "data/dialer.db"', f'path = "{db}"'))
    return config


def test_unusable_databases_are_one_line_errors(tmp_path: Path) -> None:
    """A file that is not a database, or a database path under a regular file: every command
    says so in one line and exits 2, no traceback."""
    (tmp_path / "notdb.db").write_bytes(b"hello, not a database" * 100)
    (tmp_path / "afile").write_text("")
    commands = (
        ["keys", "list"],
        ["keys", "create", "--org", "org_demo"],
        ["keys", "revoke", "key_x"],
        ["dnc", "list", "--org", "org_demo"],
        ["dnc", "add", "+14155550123", "--org", "org_demo"],
        ["serve", "--port", "0"],
    )
    for db, words in ((tmp_path / "notdb.db", "not a database"), (tmp_path / "afile/x.db", "")):
        config = _example_config(tmp_path, str(db))
        for command in commands:
            result = run(*command, "--config", str(config), cwd=tmp_path)
            assert result.returncode == 2, (command, result.stderr)
            assert "Traceback" not in result.stderr, (command, result.stderr)
            [line] = result.stderr.strip().splitlines()[-1:]
            assert line.startswith("error: ") and words in line, (command, line)
    assert (tmp_path / "notdb.db").read_bytes() == b"hello, not a database" * 100


def test_cli_arguments_are_checked(tmp_path: Path) -> None:
    """A port out of range is a usage error; keys list of an unknown organization says so."""
    config = _example_config(tmp_path, str(tmp_path / "x.db"))
    result = run("serve", "--port", "70000", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "port 70000 is not within 0-65535" in result.stderr
    result = run("keys", "list", "--org", "org_nope", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "unknown organization 'org_nope'" in result.stderr


def test_keys_commands_before_serve_made_the_database_directory(tmp_path: Path) -> None:
    """On a new deployment `keys list` and `keys revoke` may run before `serve` made the
    database's directory: they make it as `keys create` does (they exited 2 with `[Errno 2] No
    such file or directory`, depending on which came first)."""
    db = tmp_path / "fresh" / "dialer.db"
    config = _example_config(tmp_path, str(db))
    listed = run("keys", "list", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().splitlines()[1:] == []  # the header alone
    revoked = run("keys", "revoke", "key_1", "--config", str(config), cwd=tmp_path)
    assert (revoked.returncode, revoked.stderr.strip()) == (1, "error: no active key 'key_1'")
    assert os.stat(db.parent).st_mode & 0o777 == 0o700


def test_serve_on_port_zero_prints_the_port_it_listens_on(tmp_path: Path) -> None:
    """`--port 0` takes any free port; the banner names that one, not 0, it answers there, and
    the database's new directory is its owner's only."""
    db_dir = tmp_path / "fresh"
    config = _example_config(tmp_path, str(db_dir / "dialer.db"))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            dialer_cmd("serve", "--port", "0", "--config", str(config)),
            stdout=out,
            stderr=out,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 30
        while "service_listening" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        line = listening(log.read_text())["message"]
        port = int(line.split("http://127.0.0.1:", 1)[1].split()[0])
        assert port != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        assert os.stat(db_dir).st_mode & 0o777 == 0o700
    finally:
        proc.terminate()
        proc.wait(timeout=30)
