"""The `dialer` command: serve, bench, keys create|list|revoke, dnc add|remove|list|import."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from dialer import config as configmod
from dialer import dialed, dnc, instance, intake, keys, logs, results
from dialer.clock import SystemClock
from dialer.service import ServiceError
from storage.connection import make_private_dirs
from storage.db import StorageError
from storage.rows import ApiKeyRow
from storage.store import Store

log = structlog.get_logger("dialer")


def default_config_path() -> str:
    env = os.environ.get("DIALER_CONFIG")
    if env:
        return env
    return "config.toml" if Path("config.toml").exists() else "config.example.toml"


def _load(path: str, *, places_calls: bool = False) -> configmod.Config:
    try:
        config = configmod.load(path)
        if places_calls:
            configmod.check_telephony(config)
        return config
    except configmod.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ------------------------------------------------------------------ serve


def _shown(path: Path) -> str:
    """A path as the user would type it here: relative to the current directory if inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def command_name() -> str:
    """How to run this command again from here (`.venv/bin/dialer` when it is not on PATH)."""
    argv0 = Path(sys.argv[0])
    on_path = shutil.which("dialer")
    if argv0.name != "dialer" or (on_path and Path(on_path).resolve() == argv0.resolve()):
        return "dialer"
    return _shown(argv0)


# The sample contact list shipped in the repository (next to the packages).
SAMPLE_CSV = Path(__file__).resolve().parents[1] / "examples" / "contacts.csv"


def banner(config: configmod.Config, config_path: str, port: int | None = None) -> str:
    """What `serve` prints once it listens (on `port`, the one really bound: the config's may
    be 0, any free port)."""
    base = results.default_public_url(config.server.host, port or config.server.port)
    org = config.organizations[0].id if config.organizations else "ORG_ID"
    number = next(
        (p.id for p in config.phone_numbers if p.outbound_agent is not None), "PHONE_NUMBER_ID"
    )
    sample = _shown(SAMPLE_CSV) if SAMPLE_CSV.exists() else "contacts.csv"
    config_shown = _shown(Path(config_path))
    return "\n".join(
        [
            f"batch dialer listening on {base} "
            f"(telephony: {config.telephony.provider}, database: {config.storage.path})",
            "",
            "1. Create an API key (printed once, on the last line):",
            f"   KEY=$({command_name()} keys create --org {org} --config {config_shown} | tail -1)",
            "2. Create a job from the sample CSV:",
            f'   curl -s -X POST {base}/batch/create -H "x-api-key: $KEY" \\',
            f"     -F file=@{sample} -F fromPhoneNumberId={number} -F name='First campaign'",
            "3. Watch it:",
            f'   curl -s {base}/batch/jobs/BATCH_JOB_ID -H "x-api-key: $KEY"',
            "",
        ]
    )


# The GIL is handed between the event loop and the database threads at least this often
# (CPython's default is 5 ms): an API request never waits long behind a database thread's
# Python work.
GIL_SWITCH_SECONDS = 0.001


def serve(args: argparse.Namespace) -> int:
    """Start the service. In this order, so that a second start can do no harm: take the
    database's instance lock, listen on the port, open the store (migrations, a test write),
    and only then start the engine, which reconciles the calls a previous run left live.

    Any of these failing prints one line and exits 2. An engine that dies by a bug makes the
    process exit 1, so that a supervisor restarts it (the lock and the reconciliation make a
    restart safe); SIGTERM / SIGINT drain live calls and exit 0.
    """
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    # From here a signal is noted, not a KeyboardInterrupt or a death in the middle of opening
    # the database: the service stops as soon as it can, before its engine starts.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _note_early_signal)

    config = _load(args.config, places_calls=True)
    if config.storage.path != ":memory:":  # one name for the database (see dialer.instance)
        real = os.path.realpath(config.storage.path)
        config = config.model_copy(
            update={"storage": config.storage.model_copy(update={"path": real})}
        )
    if args.port is not None:
        config = config.model_copy(
            update={"server": config.server.model_copy(update={"port": args.port})}
        )
    logs.configure(args.log_level)
    intake.prepare()
    try:
        return asyncio.run(_serve(config, args.config))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_early_signals: list[int] = []


def _note_early_signal(signum: int, frame: object) -> None:
    _early_signals.append(signum)


def _ignore_stop_signals(loop: asyncio.AbstractEventLoop) -> None:
    """Once stopping: a repeated SIGTERM/SIGINT (a supervisor sending it again) must not kill the
    process in its last steps (closing the store, the interpreter's exit). (The loop forgets
    its handlers first: closing, it would put the default actions back.)"""
    for signum in STOP_SIGNALS:
        loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)


class StartupError(Exception):
    """The service cannot start; the message says why in one line."""


async def _serve(config: configmod.Config, config_path: str) -> int:
    from aiohttp import web

    from api import connections, health
    from api import keys as appkeys
    from api.app import create_app

    path = config.storage.path
    if path != ":memory:":
        directory = Path(path).parent
        try:
            make_private_dirs(directory)
        except (FileExistsError, NotADirectoryError):
            raise StartupError(
                f"cannot create the database's directory {directory}: a part of it is a file"
            ) from None
        except OSError as exc:
            raise StartupError(f"cannot create directory {directory}: {exc.strerror}") from None
        try:
            instance.acquire(path)  # held until the process ends
            dialed.adopt(path)  # the last serve's dial log, as this process's
        except instance.InstanceLocked as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot lock database {path}: {exc.strerror}") from None
    host, port = config.server.host, config.server.port
    try:
        sock = socket.create_server((host, port), family=_family(host))
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    try:
        store = await _open_store(path, config.storage.busy_timeout_seconds)
    except BaseException:
        sock.close()
        raise
    if path != ":memory:":
        try:
            instance.lock_made(path)
        except (instance.InstanceLocked, OSError) as exc:
            await store.close()
            sock.close()
            raise StartupError(f"cannot lock database {path}: {exc}") from None
    app = create_app(config, store=store)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.engine.shutdown_grace_seconds + 5,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    limits: connections.ConnectionGuard | None = None
    try:
        if _early_signals:  # asked to stop while starting: the engine never starts
            log.info(
                "service_stopped_while_starting", signal=signal.Signals(_early_signals[0]).name
            )
            sock.close()
            return 0
        await runner.setup()
        if config.server.public_url is None:  # agents call back where it really listens
            engine = app[appkeys.ENGINE]
            engine.public_url = results.default_public_url(host, sock.getsockname()[1])
        limits = connections.guard(runner, config.server)
        site = web.SockSite(runner, sock)
        await site.start()
        _freeze_startup_objects()
        shown = banner(config, config_path, sock.getsockname()[1])
        if logs.writes_json():  # every line a JSON line; the steps for people in a field
            first, *steps = shown.splitlines()
            log.info("service_listening", message=first, steps=[s for s in steps if s])
        else:
            print(shown, file=sys.stderr, flush=True)
        failed = app[health.ENGINE_FAILED]
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(failed.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        _ignore_stop_signals(loop)
        # The engine stops claiming now: the runner's cleanup first waits for requests still
        # being served (up to its shutdown timeout), and calls kept being placed meanwhile.
        app[appkeys.ENGINE].stop()
        if failed.is_set():
            log.error("service_exiting", reason="the engine stopped unexpectedly")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(4):
                    await runner.cleanup()
            return 1
        await runner.cleanup()
        return 0
    finally:
        if limits is not None:
            await limits.stop()
        _ignore_stop_signals(loop)
        await store.close()


def _freeze_startup_objects() -> None:
    """Keep what start-up built out of the garbage collector's full passes: the modules, the
    numbering plan's metadata, the config live as long as the process, and a full pass over
    them took about 40 ms, each one a freeze of the event loop (every request and call timer
    waiting), a few times a second under load. Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()
    log.info("startup_objects_frozen", objects=gc.get_freeze_count())


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def _open_store(path: str, busy_timeout: float) -> Store:
    """Open the store and check it can be written; a clear StartupError when not."""
    try:
        store = await Store.open(path, busy_timeout)
    except (StorageError, sqlite3.Error, OSError) as exc:
        raise StartupError(f"cannot open database {path}: {_reason(exc)}") from None
    try:
        await store.probe(SystemClock().now())
    except StorageError as exc:
        await store.close()
        raise StartupError(f"cannot write database {path}: {_reason(exc)}") from None
    return store


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
    return str(cause) or type(cause).__name__


# ------------------------------------------------------------------ keys


T = TypeVar("T")


async def _with_store(path: str, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` on the database (its directory made first: any command may be the first run
    on a new deployment). A database that cannot be used (not a database, a path under a file,
    no permission) is a StorageError naming it, which `main` prints in one line."""
    try:
        if path != ":memory:":
            make_private_dirs(Path(path).parent)
        store = await Store.open(path)
    except (StorageError, sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open database {path}: {_reason(exc)}") from None
    try:
        return await work(store)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot use database {path}: {_reason(exc)}") from None
    finally:
        await store.close()


def keys_create(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config.organization(args.org) is None:
        return _unknown_org(config, args.org)

    async def work(store: Store) -> tuple[str, str]:
        row, plaintext = await keys.create_key(store, SystemClock(), args.org, args.name)
        return row.id, plaintext

    key_id, plaintext = asyncio.run(_with_store(config.storage.path, work))
    print(f"created API key {key_id} for organization {args.org}; it is shown only once:")
    print(plaintext)
    return 0


def keys_list(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if args.org is not None and config.organization(args.org) is None:
        return _unknown_org(config, args.org)

    async def work(store: Store) -> list[ApiKeyRow]:
        return await store.list_api_keys(args.org)

    rows = asyncio.run(_with_store(config.storage.path, work))
    print(f"{'id':<18} {'organization':<20} {'prefix':<12} {'created':<21} revoked")
    for row in rows:
        print(
            f"{row.id:<18} {row.organization_id:<20} {row.prefix + '…':<12} "
            f"{_when(row.created_at):<21} {_when(row.revoked_at)}"
        )
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    config = _load(args.config)

    async def work(store: Store) -> bool:
        return await store.revoke_api_key(args.key_id, SystemClock().now())

    if asyncio.run(_with_store(config.storage.path, work)):
        print(f"revoked {args.key_id}")
        return 0
    print(f"error: no active key {args.key_id!r}", file=sys.stderr)
    return 1


# ------------------------------------------------------------------ do-not-call


def _unknown_org(config: configmod.Config, org: str) -> int:
    known = ", ".join(o.id for o in config.organizations) or "none"
    print(f"error: unknown organization {org!r} (configured: {known})", file=sys.stderr)
    return 2


def _dnc_org(args: argparse.Namespace) -> configmod.Config | None:
    config = _load(args.config)
    if config.organization(args.org) is None:
        _unknown_org(config, args.org)
        return None
    return config


def _dnc_failed(exc: ServiceError) -> int:
    print(f"error: {exc.message}", file=sys.stderr)
    return 1


def dnc_add(args: argparse.Namespace) -> int:
    config = _dnc_org(args)
    if config is None:
        return 2

    async def work(store: Store) -> dnc.Added:
        return await dnc.add(store, args.org, args.numbers, args.reason, "cli", time.time())

    try:
        added = asyncio.run(_with_store(config.storage.path, work))
    except ServiceError as exc:
        return _dnc_failed(exc)
    print(f"added {added.added}, already listed {added.already_listed}")
    return 0


def dnc_remove(args: argparse.Namespace) -> int:
    config = _dnc_org(args)
    if config is None:
        return 2

    async def work(store: Store) -> str:
        return await dnc.remove(store, args.org, args.number)

    try:
        removed = asyncio.run(_with_store(config.storage.path, work))
    except ServiceError as exc:
        return _dnc_failed(exc)
    print(f"removed {removed}")
    return 0


def dnc_list(args: argparse.Namespace) -> int:
    config = _dnc_org(args)
    if config is None:
        return 2

    try:
        number = None if args.number is None else dnc.number_to_find(args.number)
    except ServiceError as exc:
        return _dnc_failed(exc)

    async def work(store: Store) -> list[dict[str, Any]]:
        rows, _ = await store.dnc_page(args.org, number, -1, 0)
        return rows

    rows = asyncio.run(_with_store(config.storage.path, work))
    print(f"{'number':<17} {'source':<7} {'added':<21} reason")
    for row in rows:
        print(f"{row['number']:<17} {row['source']:<7} {row['addedAt']:<21} {row['reason'] or ''}")
    return 0


def dnc_import(args: argparse.Namespace) -> int:
    config = _dnc_org(args)
    if config is None:
        return 2
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2

    async def work(store: Store) -> tuple[dnc.Added, intake.ParsedContacts]:
        return await dnc.import_csv(
            store, args.org, data, args.reason, time.time(), args.phone_column, args.default_country
        )

    try:
        added, parsed = asyncio.run(_with_store(config.storage.path, work))
    except intake.IntakeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(
        f"added {added.added}, already listed {added.already_listed}, "
        f"invalid rows {parsed.invalid_count}, duplicate rows {parsed.duplicates}"
    )
    for row in parsed.invalid:
        print(f"  row {row.row}: {row.value!r} {row.reason}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ main


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not within 0-65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dialer", description="Batch outbound dialer")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            default=default_config_path(),
            help="TOML config file (default: $DIALER_CONFIG, ./config.toml, ./config.example.toml)",
        )

    p_serve = sub.add_parser("serve", help="run the API and the dialing engine")
    with_config(p_serve)
    p_serve.add_argument(
        "--port", type=_port, default=None, help="override [server] port (0: any free port)"
    )
    p_serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least level logged (default: info)",
    )
    p_serve.set_defaults(func=serve)

    p_bench = sub.add_parser("bench", help="measure the engine (simulated provider, file DB)")
    from dialer import bench

    bench.add_arguments(p_bench)
    p_bench.set_defaults(func=bench.main)

    p_chaos = sub.add_parser(
        "chaos", help="kill -9 the service and inject storage faults during a job, then audit"
    )
    from dialer import chaos

    chaos.add_arguments(p_chaos)
    p_chaos.set_defaults(func=chaos.main)

    p_keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = p_keys.add_subparsers(dest="keys_command", required=True)
    p_create = keys_sub.add_parser("create", help="create a key for an organization")
    p_create.add_argument("--org", required=True, help="organization id (from the config)")
    p_create.add_argument("--name", default=None, help="a label to tell keys apart")
    with_config(p_create)
    p_create.set_defaults(func=keys_create)
    p_list = keys_sub.add_parser("list", help="list keys (never their secret)")
    p_list.add_argument("--org", default=None, help="only this organization's keys")
    with_config(p_list)
    p_list.set_defaults(func=keys_list)
    p_revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    p_revoke.add_argument("key_id", help="the key's id (key_..., from keys list)")
    with_config(p_revoke)
    p_revoke.set_defaults(func=keys_revoke)

    p_dnc = sub.add_parser("dnc", help="manage an organization's do-not-call list")
    dnc_sub = p_dnc.add_subparsers(dest="dnc_command", required=True)
    p_add = dnc_sub.add_parser("add", help="list numbers (E.164)")
    p_add.add_argument("numbers", nargs="+", help="numbers to list, E.164 (+14155550123)")
    p_add.add_argument("--reason", default=None, help="kept with the listing")
    p_remove = dnc_sub.add_parser("remove", help="take a number off the list")
    p_remove.add_argument("number", help="the number, E.164")
    p_dnc_list = dnc_sub.add_parser("list", help="print the list")
    p_dnc_list.add_argument("--number", default=None, help="only this number")
    p_import = dnc_sub.add_parser("import", help="list the numbers of a CSV's phone column")
    p_import.add_argument("file", help="CSV file with a phone column")
    p_import.add_argument("--reason", default=None, help="kept with each listing")
    p_import.add_argument(
        "--phone-column",
        default=None,
        help="header of the column to read (default: phone, or a known synonym)",
    )
    p_import.add_argument(
        "--default-country",
        default=None,
        help="ISO 3166 alpha-2 (US, GB): read national numbers as dialed from that country",
    )
    for p, func in (
        (p_add, dnc_add),
        (p_remove, dnc_remove),
        (p_dnc_list, dnc_list),
        (p_import, dnc_import),
    ):
        p.add_argument("--org", required=True, help="organization id (from the config)")
        with_config(p)
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except StorageError as exc:  # a command's database cannot be used: one line, not a trace
        print(f"error: {_reason(exc)}", file=sys.stderr, flush=True)
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
