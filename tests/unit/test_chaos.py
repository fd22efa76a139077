"""`dialer chaos`: the audit of a dial ledger against the database, on synthetic data; the plan
and the report."""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dialer import chaos
from dialer.cli import build_parser
from storage import db as dbmod

JOB = "job_chaos"
T0 = 1_767_225_600.0


class Synth:
    """A migrated database holding one job, and the ledger of what the provider dialed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        dbmod.migrate(self.conn)
        self.ledger: list[dict[str, Any]] = []
        self.contacts = 0

    def job(self, total: int) -> None:
        self.conn.execute(
            "INSERT INTO jobs (id, organization_id, name, status, agent_id, phone_number_id,"
            " concurrent_call_limit, max_attempts, retry_statuses, retry_delay_seconds,"
            " retry_backoff, created_at, updated_at, total_contacts)"
            " VALUES (?, 'o', 'n', 'completed', 'a', 'p', 5, 3, '[]', 0, 1, 0, 0, ?)",
            (JOB, total),
        )

    def contact(self, status: str, attempts: int) -> int:
        self.contacts += 1
        cur = self.conn.execute(
            "INSERT INTO contacts (job_id, seq, phone, contact_data, status, attempt_count,"
            " max_attempts, updated_at) VALUES (?, ?, ?, '{}', ?, ?, 3, 0)",
            (JOB, self.contacts, f"+1202555{self.contacts:04d}", status, attempts),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def attempt(
        self,
        contact: int,
        attempt_no: int,
        outcome: str | None = "completed",
        *,
        ended: bool = True,
        reason: str | None = None,
        started_at: float = T0,
    ) -> None:
        self.conn.execute(
            "INSERT INTO attempts (contact_id, job_id, attempt_no, room_name, started_at,"
            " outcome, ended_at, reason) VALUES (?, ?, ?, 'room', ?, ?, ?, ?)",
            (
                contact,
                JOB,
                attempt_no,
                started_at,
                outcome,
                started_at + 1 if ended else None,
                reason,
            ),
        )

    def dial(self, contact: int, attempt_no: int, job: str = JOB) -> None:
        self.ledger.append({"job": job, "contact": contact, "attempt": attempt_no, "to": "+1"})

    def called(self, status: str = "completed", outcomes: tuple[str, ...] = ("completed",)) -> int:
        """A contact dialed once per attempt, each attempt recorded: the normal case."""
        cid = self.contact(status, len(outcomes))
        for no, outcome in enumerate(outcomes, start=1):
            self.attempt(cid, no, outcome)
            self.dial(cid, no)
        return cid

    def audit(self, **kwargs: Any) -> chaos.Audit:
        return chaos.audit(self.ledger, self.path, JOB, **kwargs)


@pytest.fixture
def synth(tmp_path: Path) -> Iterator[Synth]:
    """A clean run of five contacts: two answered, one busy twice then answered, one no answer
    three times, one given back once (not placed) then answered."""
    s = Synth(tmp_path / "dialer.db")
    s.job(5)
    s.called()
    s.called()
    s.called("completed", ("busy", "busy", "completed"))
    s.called("no_answer", ("no_answer", "no_answer", "no_answer"))
    cid = s.contact("completed", 1)
    s.attempt(cid, 1, "not_placed")
    s.attempt(cid, 1, "completed")
    s.dial(cid, 1)
    yield s
    s.conn.close()


def test_a_clean_run_passes(synth: Synth) -> None:
    """One dial per attempt, every outcome recorded, every contact final: nothing is flagged."""
    result = synth.audit(breakdown={"completed": 4, "no_answer": 1}, total_contacts=5)
    assert result.ok, result
    assert (result.contacts, result.dials, result.attempts_placed) == (5, 9, 9)
    assert (result.double_dials, result.lost, result.stuck) == (0, 0, 0)
    assert result.counter_errors == [] and result.job_status == "completed"


def test_the_same_attempt_dialed_twice_is_a_double_dial(synth: Synth) -> None:
    """A (contact, attempt) that appears twice in the ledger is one double dial."""
    synth.dial(1, 1)
    result = synth.audit()
    assert not result.ok
    assert result.double_dials == 1 and result.double_dialed_contacts == [1]
    assert result.dials == 10 and result.lost == 0


def test_more_dials_than_placed_attempts_is_a_double_dial(synth: Synth) -> None:
    """A dial under a new attempt number that has no attempt row counts as a second call."""
    synth.dial(2, 2)  # contact 2 has one attempt row; the ledger shows attempts 1 and 2
    result = synth.audit()
    assert result.double_dials == 1 and result.double_dialed_contacts == [2]
    assert result.lost_attempts == [(2, 2)]


def test_an_attempt_counted_with_no_dial_is_reported_not_failed(synth: Synth) -> None:
    """An attempt row for a call never placed (claimed, then a kill before the dial, on a
    start that could not trust the dial log) is counted apart, and is no failure."""
    assert synth.audit().undialed_attempts == 0
    cid = synth.contact("failed", 1)
    synth.attempt(cid, 1, "failed", reason="interrupted")
    synth.conn.execute("UPDATE jobs SET total_contacts = 6")
    result = synth.audit()
    assert result.undialed_attempts == 1
    assert result.ok, result


def test_a_dial_with_no_recorded_outcome_is_lost(synth: Synth) -> None:
    """Dialed attempts whose row is missing, open, without an end time or not_placed are lost."""
    open_ = synth.contact("completed", 1)
    synth.attempt(open_, 1, None, ended=False)
    synth.dial(open_, 1)
    no_end = synth.contact("completed", 1)
    synth.attempt(no_end, 1, "completed", ended=False)
    synth.dial(no_end, 1)
    given_back = synth.contact("completed", 0)
    synth.attempt(given_back, 1, "not_placed")
    synth.dial(given_back, 1)
    missing = synth.contact("completed", 0)
    synth.dial(missing, 1)
    synth.conn.execute("UPDATE jobs SET total_contacts = 9")
    result = synth.audit()
    assert result.lost == 4
    assert result.lost_attempts == [(open_, 1), (no_end, 1), (given_back, 1), (missing, 1)]
    # The given-back and the missing row also mean more dials than placed attempts.
    assert result.double_dials == 2
    assert not result.ok


def test_a_contact_left_open_is_stuck(synth: Synth) -> None:
    """Contacts still pending, queued or dialing at the end are stuck."""
    pending = synth.contact("pending", 0)
    queued = synth.called("queued", ("busy",))
    dialing = synth.contact("dialing", 1)
    synth.attempt(dialing, 1, None, ended=False)
    synth.conn.execute("UPDATE jobs SET total_contacts = 8")
    result = synth.audit()
    assert result.stuck == 3 and result.stuck_contacts == [pending, queued, dialing]
    assert result.lost == 0 and result.double_dials == 0
    assert not result.ok


def test_an_interrupted_attempt_needs_a_kill_while_it_could_be_live(synth: Synth) -> None:
    """`interrupted` is explained by a kill during the call (plus slack), else flagged."""
    cid = synth.contact("completed", 2)
    synth.attempt(cid, 1, "failed", reason="interrupted", started_at=T0)
    synth.attempt(cid, 2, "completed", started_at=T0 + 20)
    synth.dial(cid, 1)
    synth.dial(cid, 2)
    synth.conn.execute("UPDATE jobs SET total_contacts = 6")
    assert synth.audit().interrupted == 1  # no kills given: not judged
    during = synth.audit(kills=[T0 + 0.5], longest_call=1.0)
    assert during.ok and during.unexplained_interrupted == 0
    slack = chaos.INTERRUPT_SLACK_SECONDS
    late = synth.audit(kills=[T0 + 1.0 + slack + 0.1], longest_call=1.0)
    assert late.unexplained_interrupted == 1 and late.unexplained_attempts == [(cid, 1)]
    before = synth.audit(kills=[T0 - 1], longest_call=1.0)
    assert before.unexplained_interrupted == 1 and not before.ok
    # A fault episode the service recovered from holds outcomes in memory until its end.
    kill = [T0 + 14]
    assert synth.audit(kills=kill, longest_call=1.0).unexplained_interrupted == 1
    held = synth.audit(kills=kill, longest_call=1.0, faults=[(T0 + 2, T0 + 12)])
    assert held.ok and held.unexplained_interrupted == 0
    after = synth.audit(kills=kill, longest_call=1.0, faults=[(T0 + 1.0 + slack + 1, T0 + 12)])
    assert after.unexplained_interrupted == 1  # the episode began after the call had ended


def test_counters_that_do_not_add_up_are_reported(synth: Synth) -> None:
    """The API's breakdown, the per-job counters and each contact's attempt count are checked."""
    wrong = synth.audit(breakdown={"completed": 4, "no_answer": 2}, total_contacts=5)
    assert any("adds up to 6" in e for e in wrong.counter_errors)
    assert not wrong.ok
    synth.conn.execute("UPDATE job_status_counts SET n = n + 1 WHERE status = 'completed'")
    assert any("per-job status counts" in e for e in synth.audit().counter_errors)
    synth.conn.execute("UPDATE job_status_counts SET n = n - 1 WHERE status = 'completed'")
    synth.conn.execute("UPDATE contacts SET attempt_count = 2 WHERE id = 1")
    assert any("attempt count differs" in e for e in synth.audit().counter_errors)
    synth.conn.execute("UPDATE contacts SET attempt_count = 1 WHERE id = 1")
    synth.conn.execute("UPDATE jobs SET total_contacts = 7")
    assert any("total_contacts 7" in e for e in synth.audit().counter_errors)


def test_other_jobs_and_unknown_contacts_in_the_ledger(synth: Synth) -> None:
    """Lines of other jobs are ignored; a line for a contact the job does not have is flagged."""
    synth.dial(1, 1, job="another_job")
    assert synth.audit().ok
    synth.dial(999, 1)
    result = synth.audit()
    assert result.unknown_dials == 1 and result.dials == 10 and not result.ok


def test_read_ledger_skips_a_torn_last_line(tmp_path: Path) -> None:
    """A line cut short by kill -9 is not an entry; a missing ledger is empty."""
    path = tmp_path / "ledger.jsonl"
    assert chaos.read_ledger(path) == []
    whole = {"job": "j", "contact": 1, "attempt": 1, "to": "+1"}
    path.write_text(json.dumps(whole) + "\n\n" + '{"job": "j", "cont')
    assert chaos.read_ledger(path) == [whole]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"ok": True, "checks": {"engine": "ok", "storage": "ok", "provider": "ok"}}, True),
        (503, {"ok": False, "checks": {"storage": "database is locked"}}, False),
        (200, {"ok": True, "engineRunning": True, "liveCalls": 3}, True),
        (200, {"ok": True, "engineRunning": False}, False),
        (200, None, False),
        (0, None, False),
    ],
)
def test_healthy_reads_both_health_shapes(status: int, body: Any, expected: bool) -> None:
    """/healthz is healthy only on 200 with ok true and no stopped engine."""
    assert chaos.healthy(status, body) is expected


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["chaos", *argv])


def test_plan_quick_defaults_and_overrides() -> None:
    """--quick picks the small plan; explicit options override it; nonsense is refused."""
    quick = chaos.plan_from(parse("--quick"))
    assert quick == chaos.QUICK
    assert (quick.kills, quick.lock_episodes, quick.disk_full_episodes) == (3, 0, 0)
    mixed = chaos.plan_from(parse("--quick", "--lock-episodes", "1", "--seed", "7"))
    assert (mixed.contacts, mixed.lock_episodes, mixed.seed) == (quick.contacts, 1, 7)
    full = chaos.plan_from(parse())
    assert (full.contacts, full.kills, full.lock_episodes) == (2000, 20, 5)
    assert full.timeout >= chaos.FULL.timeout
    with pytest.raises(chaos.ChaosError, match="--kills must not be negative"):
        chaos.plan_from(parse("--kills", "-1"))
    with pytest.raises(chaos.ChaosError, match="--contacts must be at least 1"):
        chaos.plan_from(parse("--contacts", "0"))


def test_main_exit_status_follows_the_audit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Exit 0 on a clean audit, 1 when anything is found, 2 when the run cannot be made."""
    report: dict[str, Any] = {"ok": True, "counter_errors": [], "notes": [], "kills": 3}

    class FakeRunner:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def run(self) -> dict[str, Any]:
            return report

    monkeypatch.setattr(chaos, "Runner", FakeRunner)
    assert chaos.main(parse("--quick", "--json")) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["kills"] == 3
    report.update(ok=False, double_dials=1)
    assert chaos.main(parse("--quick")) == 1
    out = capsys.readouterr().out
    assert "double dials               1" in out and out.rstrip().endswith("result: FAIL")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").touch()
    assert chaos.main(parse("--quick", "--keep", str(tmp_path / "busy"))) == 2
    assert "not empty" in capsys.readouterr().err


def test_format_report_names_every_figure() -> None:
    """The table shows each figure the issue asks for, the counters and the notes."""
    report = {key: 0 for key, _ in chaos.ROWS} | {
        "max_recovery_seconds": None,
        "ok": True,
        "counter_errors": [],
        "notes": ["disk-full episodes skipped: cannot mount (x)"],
    }
    text = chaos.format_report(report)
    for label in ("kills", "lock episodes", "disk-full episodes", "dials", "double dials"):
        assert f"\n{label} " in f"\n{text}"
    assert "lost outcomes" in text and "stuck contacts" in text and "wall time" in text
    assert "attempts with no dial" in text
    assert "counters                   add up" in text
    assert "slowest recovery (s)       -" in text
    assert "note: disk-full episodes skipped: cannot mount (x)" in text
    assert text.endswith("result: PASS")


# ---------------------------------------------------------------- the runner's waits, faked


class FakeTime:
    """Monotonic time that moves only when slept."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeService:
    """Answers the job detail route from a script of (status, done) and /healthz from `health`."""

    def __init__(self, script: list[tuple[str, int]], total: int = 100) -> None:
        self.script = script
        self.total = total
        self.started_at = 0.0
        self.polls = 0

    def revive_if_dead(self) -> None:
        pass

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        status, done = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        breakdown = {"completed": done, "pending": self.total - done}
        return 200, {"status": status, "totalContacts": self.total, "statusBreakdown": breakdown}


def runner(tmp_path: Path, clock: FakeTime) -> chaos.Runner:
    return chaos.Runner(chaos.QUICK, tmp_path, clock=clock, sleep=clock.sleep)


def test_an_event_waits_for_its_point_of_progress_and_the_settle_time(tmp_path: Path) -> None:
    """The event comes once the job has done its share and the service has run long enough."""
    clock = FakeTime()
    r = runner(tmp_path, clock)
    service = FakeService([("running", n) for n in (0, 10, 20, 30, 40, 50, 60)])
    service.started_at = clock.now
    at = r._wait_for(service, 0.45, settle=0.0, deadline=clock.now + 100)
    assert at is not None and at.done == 50 and at.total == 100
    service = FakeService([("running", 60)])
    service.started_at = clock.now
    at = r._wait_for(service, 0.45, settle=1.0, deadline=clock.now + 100)
    assert at is not None and clock.now - service.started_at >= 1.0
    done = FakeService([("running", 10), ("completed", 100)])
    assert r._wait_for(done, 0.45, 0.0, clock.now + 100) is None


def test_a_stalled_job_lets_events_come_and_ends_the_wait(tmp_path: Path) -> None:
    """No progress for STALL_SECONDS: the next event comes anyway; the final wait gives up."""
    clock = FakeTime()
    r = runner(tmp_path, clock)
    service = FakeService([("running", 10)])
    start = clock.now
    at = r._wait_for(service, 0.9, 0.0, clock.now + 1000)
    assert at is not None and at.done == 10
    assert chaos.STALL_SECONDS < clock.now - start < chaos.STALL_SECONDS + 1
    last = r._wait_until_done(service, clock.now + 1000)
    assert last is not None and last.done == 10
    assert r.notes == [f"the job made no progress for {chaos.STALL_SECONDS:.0f} s"]


def test_a_lock_episode_holds_the_write_lock_and_times_the_recovery(tmp_path: Path) -> None:
    """Writers are locked out for the episode; recovery is timed from its end to a healthy
    /healthz; an episode never followed by a healthy answer is marked unrecovered."""
    clock = FakeTime()
    r = runner(tmp_path, clock)
    r.data.mkdir()
    setup = sqlite3.connect(r.db, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE t (x)")
    setup.close()

    class Health:
        def __init__(self, after_release: list[bool]) -> None:
            self.after_release = after_release
            self.locked_seen = 0

        def health(self) -> bool:
            writer = sqlite3.connect(r.db, timeout=0, isolation_level=None)
            try:
                writer.execute("INSERT INTO t VALUES (1)")
            except sqlite3.OperationalError as exc:
                assert "locked" in str(exc)
                self.locked_seen += 1
                return False
            finally:
                writer.close()
            return self.after_release.pop(0) if self.after_release else True

    service = Health([False, False, True])
    episode = r._episode(service, "lock")
    low, high = chaos.QUICK.lock_seconds
    assert low <= episode.held_seconds <= high + 0.2
    assert service.locked_seen >= low / 0.2 - 1
    assert episode.unhealthy_seen and episode.note is None
    assert episode.recovered_after == pytest.approx(0.2)

    never = Health([False] * 1000)
    episode = r._episode(never, "lock")
    assert episode.recovered_after is None and episode.unhealthy_seen


def test_audit_needs_the_database(tmp_path: Path) -> None:
    """A missing database is an error, not an empty (and passing) audit, and none is created."""
    with pytest.raises(FileNotFoundError):
        chaos.audit([], tmp_path / "absent.db", JOB)
    assert not (tmp_path / "absent.db").exists()
