"""`dialer serve`'s handling of SIGTERM / SIGINT around its start and its stop (in process)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialer import cli
from dialer.scheduler import Engine
from tests.conftest import make_config


@pytest.fixture
def signals_restored() -> Iterator[None]:
    """`_serve` installs its own handlers (and ignores the signals once stopping): put the test
    process's back."""
    kept = {signum: signal.getsignal(signum) for signum in cli.STOP_SIGNALS}
    yield
    for signum, handler in kept.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("signals_restored")
async def test_a_signal_while_starting_stops_it_before_its_engine_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM or SIGINT while the service opened its database (before the event loop's handlers)
    was a death by the signal or a KeyboardInterrupt traceback; it is noted, and the service
    stops once the database is open, exit 0, without starting its engine (no call)."""
    runs: list[Engine] = []

    async def run(engine: Engine) -> None:
        runs.append(engine)

    monkeypatch.setattr(Engine, "run", run)
    monkeypatch.setattr(cli, "_early_signals", [signal.SIGINT])
    config = make_config(tmp_path, server={"host": "127.0.0.1", "port": 0})
    assert await cli._serve(config, str(tmp_path / "config.toml")) == 0
    assert runs == []
    # Stopping, a repeated signal is ignored rather than killing it in its last steps.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
