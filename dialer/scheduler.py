"""The dialing scheduler: one loop that claims contacts within every limit and records outcomes.

Event-driven: the loop sleeps until it is woken (a job was created, started, cancelled or changed;
a call ended) or until the next due time (a retry, a scheduled start, a rate-limit token). Each
pass is one transaction (a cycle, see Engine._cycle) that records the outcomes of the calls that
ended and claims contacts for every job with free slots; once it has committed, the claimed calls
are started. A job with short calls also holds contacts claimed ahead, which take its slots the
moment they free, without waiting for a transaction (see Engine._deck).

Limits, all enforced at once: per-job `concurrentCallLimit`, per-organization cap, the global
`max_concurrent_calls`, and per caller number `calls_per_second` (token bucket). A slot is taken
when a call starts and freed when it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from dialer import autopause, logs, results, retry, windows
from dialer.clock import Clock
from dialer.config import Config
from dialer.dialed import DialLog
from dialer.held import RESERVE_BYTES, RESERVE_BYTES_PER_OUTCOME, HeldOutcomes
from dialer.providers.base import (
    DIAL_LOG_STUCK,
    DialRequest,
    DialResult,
    Provider,
    sip_code,
)
from dialer.states import ContactStatus, JobStatus
from dialer.stats import EngineStats, dial_label
from storage.connection import StorageUnavailable
from storage.rows import ClaimedContact, JobRow, JobVerdict, Outcome
from storage.store import Store

log = structlog.get_logger("dialer.scheduler")

# At most this many outcomes recorded and calls started per cycle. The event loop serves the API
# between cycles: while requests are being served a cycle stays smaller, otherwise bigger cycles
# make fewer transactions. A big cycle's statements run on the writer's thread, and its work on
# the event loop comes in steps of a few milliseconds (the outcomes, then the calls started):
# under 32 clients hammering the API, cycles of 200 after a 5 ms deferral gave the engine
# 3.7-4.2k contacts/s at an API p99 of 17 ms, against 1.9-2.4k and 14-18 ms with cycles of 100
# after 10 ms (`dialer bench --scenario heavy`, alternated, 2026-12-01); cycles of 400 gave
# 3.6-4.5k (mean 4.1k) at p99 18-22 ms against 2.6-3.6k (mean 3.0k) at 15-21 ms for 200, and
# 600 no more than 400 (alternated, 2026-12-02).
CYCLE_MAX = 1000
CYCLE_MAX_SERVING = 400
# A cycle for at most this many ended calls runs at once even while requests are being served
# (see Foreground).
SMALL_CYCLE = 64
# Outcomes plus claims of a cycle written on the event loop's own connection (see
# Store._write_here): SMALL_CYCLE while requests are being served, QUIET_CYCLE while none are
# (a dashboard polling a few times a second): the hop to the writer's thread and back, and the
# GIL handed to it and back at every statement, then cost more than holding the loop for the
# transaction (a 100 + 100 cycle: ~10 ms). Bigger cycles always go to the writer.
QUIET_CYCLE = 256
# The longest call duration recorded (a week); a provider's figure beyond it is not kept.
MAX_DURATION_SECONDS = 7 * 24 * 3600
# While requests are being served, a big cycle starts its calls this many at a time and lets
# the event loop turn in between: starting a call and its first step cost ~15 us each, and 200
# at once held the requests that came in meanwhile for several ms (the in-process `api`
# scenario: p99 15.4-15.8 -> 12.6-13.9 ms, alternated).
START_CHUNK = 50
# The smallest share of free slots a job is offered in a cycle (see _plan).
MIN_SHARE = 32
# Claiming ahead (see Engine._deck): a job holds at most this many times its
# concurrentCallLimit of contacts claimed ahead, and one claimed longer ago than
# max(DECK_MAX_AGE_SECONDS, 2 x claim_ahead_seconds) is given back rather than dialed.
DECK_ROUNDS = 4
DECK_SHORTEST_CALL_SECONDS = 0.05
DECK_MAX_AGE_SECONDS = 1.0
# Outcomes of calls whose slots were handed over (see Engine._hand_over) are written together
# within this long (real time), unless the job's contacts claimed ahead run low: each ended
# call's own transaction cost 5x as many writes (a 0.3 s call: 87 cycles for 150 contacts).
WRITE_BATCH_SECONDS = 0.02
# How often the engine tries again to give the held-outcomes file its room on the disk, while it
# has none (and starts no call).
HELD_ROOM_RETRY_SECONDS = 1.0

# The reason recorded on the give-back of a contact claimed ahead that was not dialed.
CLAIMED_AHEAD_REASON = "claimed ahead, not dialed"
# The reason of a contact found `dialing` after a crash that the dial log says was never dialed.
NOT_DIALED_REASON = "claimed, not dialed before a restart"
# Weight of a cycle's ended calls in a job's moving average of call length.
CALL_SECONDS_WEIGHT = 0.3
# Numbers listed do-not-call from outside the service (the CLI writes to the database itself, so
# no route gives the contacts claimed ahead back): while jobs run, the engine looks for a new
# listing at most this often, and at least this often (real time) while it holds contacts
# claimed ahead (see Engine._check_listings).
LISTINGS_CHECK_SECONDS = 0.05

# After a dial that never reached the provider, no job dials for this long; the wait doubles
# with every probe that fails, up to PROVIDER_PROBE_MAX_SECONDS.
NOT_PLACED_BACKOFF_SECONDS = 10.0
PROVIDER_PROBE_MAX_SECONDS = 60.0
# A dial refused at a limit of the provider's project while calls of this service were live: the
# engine dials at most as many at once as were live then. After this long without another such
# refusal it allows one more, then two, four... (doubling while none comes) until the configured
# limit is back; a refusal starts again from one.
PROVIDER_CAP_RAISE_SECONDS = 10.0
# While storage fails, the engine tries again after a wait that doubles up to this.
STORAGE_RETRY_MIN_SECONDS = 0.25
STORAGE_RETRY_MAX_SECONDS = 5.0


@dataclass
class Outage:
    """An episode of storage or provider failure: since when, why, and the retries so far."""

    since: float
    error: str
    retries: int = 0
    held: int = 0  # storage: the outcomes held in memory during the episode
    next_probe: float = 0.0  # provider: when the next dial may test it again
    pause_at: float = math.inf  # provider: when the running jobs pause for it

    def backoff(self, least: float, most: float) -> float:
        self.retries += 1
        return float(min(most, least * 2 ** (self.retries - 1)))


@dataclass
class ProviderCap:
    """The provider refuses more calls at once than `calls` (a limit of its project, shared with
    whatever else uses it): the engine keeps within it, and tries more from `raise_at`."""

    calls: int
    since: float
    error: str
    raise_at: float
    step: int = 1


class Foreground:
    """Who goes first on the event loop: the API requests being served, or the engine.

    Big engine work yields to requests: the engine defers a cycle for more than `SMALL_CYCLE`
    ended calls by `defer_seconds` and keeps it small while requests are contending for the
    event loop: one is in flight, or at least `busy_requests` ended within the last
    `window_seconds` (a stream of requests: most handlers never wait, so "in flight" alone is
    rarely seen). A dashboard polling a few times a second, or two pollers at 20/s each, stay
    under that rate and cost the engine nothing; only real contention slows it.

    Small engine work goes first: refilling the slots of a few ended calls costs the loop a few
    milliseconds, while every millisecond a slot waits is lost on every round of a paced job. So
    the engine runs such a cycle at once, and a request that arrives meanwhile waits for it (at
    most `engine_wait_seconds`) before it starts. Wall-clock pacing of the event loop, not job
    time (so not the injectable clock).
    """

    def __init__(
        self,
        defer_seconds: float = 0.005,
        window_seconds: float = 0.05,
        busy_requests: int = 4,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        engine_wait_seconds: float = 0.01,
    ) -> None:
        self.defer_seconds = defer_seconds
        self.window_seconds = window_seconds
        self.active = 0
        self._ended: deque[float] = deque(maxlen=busy_requests)
        self._monotonic = monotonic
        self._sleep = sleep
        # Set while the engine owes nothing; cleared while it has a few ended calls whose slots
        # to refill, which new requests then let go first (for at most `engine_wait_seconds`).
        self._engine_done = asyncio.Event()
        self._engine_done.set()
        self.engine_wait_seconds = engine_wait_seconds

    def enter(self) -> None:
        self.active += 1

    def leave(self) -> None:
        self.active = max(0, self.active - 1)
        self._ended.append(self._monotonic())

    @property
    def serving(self) -> bool:
        if self.active > 0:
            return True
        ended = self._ended
        return len(ended) == ended.maxlen and self._monotonic() - ended[0] < self.window_seconds

    def engine_owes(self) -> None:
        """A few calls ended: their slots are to be refilled before new requests start."""
        self._engine_done.clear()

    def engine_paid(self) -> None:
        self._engine_done.set()

    async def let_engine_first(self) -> None:
        """A request arriving while the engine refills a few slots waits for it, briefly: a
        refill costs a few milliseconds, and a call whose slot waits for a stream of requests
        loses that time on every round."""
        done = self._engine_done
        if not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.engine_wait_seconds)

    async def yield_to_requests(self, work: int = SMALL_CYCLE + 1) -> None:
        """Let the requests being served run first for a moment, unless the cycle about to run
        is small: refilling the slots of `work` ended calls costs the loop a few milliseconds,
        less than the calls would lose waiting for the requests."""
        if work > SMALL_CYCLE and self.serving:
            await self._sleep(self.defer_seconds)


# A bucket's tokens are counted as whole this close below (their sum of refills in floats).
TOKEN_SLACK = 1e-9


class TokenBucket:
    """Calls-per-second limit of one caller number."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        elif now < self.updated:
            # The wall clock was stepped back (NTP, a resumed VM): count from the new time, so
            # that the step gives no token and does not hold the number until it is made up.
            self.updated = now

    def take(self, wanted: int, now: float) -> int:
        self._refill(now)
        granted = min(wanted, int(self.tokens + TOKEN_SLACK))
        self.tokens -= granted
        return granted

    def give_back(self, count: int) -> None:
        self.tokens = min(self.capacity, self.tokens + count)

    def next_token_at(self, now: float) -> float:
        """When `take` next grants a token: `now` only if it would grant one now. Never `now`
        otherwise, however little is missing: a token short by 1e-8 is due 1e-11 s later at
        1,000 CPS, which rounds to `now` itself at today's timestamps (their float steps are
        0.24 us), and an engine told to look again at `now` looked again at once, forever,
        under a clock that stood still (the tests')."""
        self._refill(now)
        if self.tokens + TOKEN_SLACK >= 1.0:
            return now
        return max(now + (1.0 - self.tokens) / self.rate, math.nextafter(now, math.inf))


@dataclass
class RunningJob:
    """What the scheduler keeps in memory about a job it dials for."""

    row: JobRow
    policy: retry.RetryPolicy
    idle_until: float = 0.0  # no contact is ready before this time (math.inf: none left)
    fatal_streak: int = 0
    agent_streak: int = 0  # attempts in a row whose agent did not join
    call_seconds: float | None = None  # its calls' typical length, dial to end (moving avg)
    first_dial_at: float | None = None  # clock time of its first dial by this engine
    guessed: bool = False  # claimed ahead before any of its calls ended (see _deck_target)


@dataclass
class LiveCall:
    contact: ClaimedContact
    job_id: str
    organization_id: str
    number_id: str
    request: DialRequest
    policy: retry.RetryPolicy
    resumed: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    windows_json: str | None = None  # the job's calling windows (None: always open)
    ended_perf: float = 0.0  # time.perf_counter() when the call ended (for slot refill)
    handed_over: bool = False  # its slot went to a contact claimed ahead when it ended
    outcome: Outcome | None = None  # decided when it ended, if its slot was handed over
    dialed_at: float = 0.0  # clock time its dial started
    ended_at: float = 0.0  # clock time it ended (not when the engine took it: that may lag)
    others_live: int = 0  # refused at the provider's limit: the other calls live then
    dial_ticket: int | None = None  # its line in the dial log (see DialLog.add)


# Room-name suffixes need uniqueness, not secrecy: a fast generator seeded from the OS.
_suffixes = random.Random(secrets.randbits(64))


def room_name(job_id: str, contact_id: int, attempt_no: int) -> str:
    """Unique per attempt, and readable: job, contact and attempt can be seen in it. The random
    suffix keeps a given-back attempt's number from naming a room that may still exist."""
    return f"{job_id}_c{contact_id}_a{attempt_no}_{_suffixes.getrandbits(24):06x}"


_ROOM = re.compile(r"^.{1,200}_c([0-9]{1,18})_a([0-9]{1,9})_[0-9a-f]{6}$")


def room_ids(name: str) -> tuple[int, int] | None:
    """(contact id, attempt number) a `room_name` names, or None when it is not one."""
    found = _ROOM.match(name)
    return None if found is None else (int(found.group(1)), int(found.group(2)))


class Engine:
    def __init__(self, config: Config, store: Store, provider: Provider, clock: Clock) -> None:
        self.config = config
        self.store = store
        store.set_credit_limits(config.credit_limits())  # pauses jobs when credits run out
        self.provider = provider
        self.clock = clock
        # Calling windows and per-number caps, which the store's claims apply.
        self.rules = windows.Rules(
            {o.id: o.max_attempts_per_number_per_day for o in config.organizations}
        )
        store.calling_rules = self.rules
        store.result_rules = results.ResultRules(self.rules)
        # Where agents post their results, and the secret of their per-attempt tokens (read
        # from the database when the loop starts). `serve` sets the URL once it listens.
        self.public_url = config.server.public_url or results.default_public_url(
            config.server.host, config.server.port
        )
        self._callback_secret = b""
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._jobs: dict[str, RunningJob] = {}
        self._jobs_dirty = True
        self._next_scheduled: float | None = None
        self._live: dict[int, LiveCall] = {}
        self._live_job: Counter[str] = Counter()
        self._live_org: Counter[str] = Counter()
        self._done: list[tuple[LiveCall, DialResult]] = []
        # Outcomes of ended calls and job verdicts, in order, until a transaction writes them:
        # a failing write leaves them here to be written first when storage is back.
        self._held: list[Outcome] = []
        self._held_verdicts: list[JobVerdict] = []
        self.storage_outage: Outage | None = None
        self.provider_outage: Outage | None = None
        self.provider_cap: ProviderCap | None = None
        self._reconciled = False
        # Its room on the disk: the outcomes it may have to hold at once, of every live call and
        # every contact claimed ahead (no call starts while storage fails).
        most_held = config.engine.max_concurrent_calls * (1 + DECK_ROUNDS)
        self._journal = (
            None
            if store.path == ":memory:"
            else HeldOutcomes(
                store.path + ".held", max(RESERVE_BYTES, RESERVE_BYTES_PER_OUTCOME * most_held)
            )
        )
        # Ended calls' outcomes for that file this turn: on it before any transaction takes them.
        self._unsaved: list[Outcome] = []
        # The attempts dialed, so that a restart after a crash tells the contacts claimed and
        # never dialed from the calls that may be live (see dialer.dialed).
        self._dial_log = (
            None if store.path == ":memory:" else DialLog(store.path + ".dialed", store.path)
        )
        # The provider works before it places a call (LiveKit: the agent's dispatch and wait):
        # its calls are written to the dial log as it places them (see DialRequest.before_dial).
        self._dials_late = bool(getattr(provider, "dials_late", False))
        self.wrote = False  # whether the last cycle wrote a transaction
        store.on_write_failed = self.notify
        self._buckets: dict[str, TokenBucket] = {}
        self._callers: dict[str, tuple[str, str, str]] = {}
        # Each organization's max_concurrent_calls (None: no limit of its own), looked up once.
        self._org_calls: dict[str, int | None] = {}
        self.foreground = Foreground()
        self._rr = 0
        self.max_live_observed = 0
        self.stats = EngineStats()  # counts for /metrics (dialer.metrics)
        self.running = False
        self.idle = asyncio.Event()  # set whenever the loop parks with nothing ready to do
        self._progress = asyncio.Event()
        self._failure_windows: dict[str, autopause.FailureWindow] = {}
        # Claimed ahead, per job: contacts claimed like any other (in `dialing`, their attempt
        # written and flushed) whose calls have not started yet. A slot of the job that frees
        # takes the first of them at once, without waiting for a transaction (a flush of the
        # disk may take 100 ms or more). Only for jobs whose calls end often (see _deck_wanted).
        # Any change to the jobs (pause, cancel, do-not-call...) gives them all back first.
        self._deck: dict[str, deque[ClaimedContact]] = {}
        self._deck_epoch = 0  # counts the times the decks were given back
        self._deck_org: dict[str, str] = {}  # job -> its organization
        # Contacts the database shows in `dialing` that are no live call: claimed ahead, given
        # back or ended with their outcome not yet written; the status they are shown in.
        self._not_live: dict[int, tuple[str, str]] = {}
        self._not_live_job: dict[str, Counter[str]] = {}
        self._claiming: Counter[str] = Counter()  # claims in the transaction in flight
        # Contacts claimed ahead whose attempt the database counts though they were not dialed
        # (until dialed, or their give-back is written), per (job, a retry): see shown_dials.
        self._undialed: Counter[tuple[str, bool]] = Counter()
        self._batch_timer: asyncio.TimerHandle | None = None  # see _wake_soon
        # The latest do-not-call listing seen, when it was looked for, and the timer that
        # wakes the loop to look again (see _check_listings).
        self._latest_listing: float | None = None
        self._listings_checked = -math.inf
        self._listings_timer: asyncio.TimerHandle | None = None
        self._auto_pause = autopause.AutoPauseRule(
            min_attempts=config.engine.auto_pause_min_attempts,
            window_seconds=config.engine.auto_pause_window_seconds,
            failure_ratio=config.engine.auto_pause_failure_ratio,
        )

    # ------------------------------------------------------------ control

    def notify(self) -> None:
        """Something changed in the jobs table (created, started, cancelled...): look again.
        The contacts claimed ahead are given back: they were claimed for the jobs as they were."""
        self.give_back_claimed_ahead()
        self._look_again()

    def _look_again(self) -> None:
        self._jobs_dirty = True
        self._wake.set()
        self._progressed()

    def give_back_claimed_ahead(self, job_id: str | None = None) -> int:
        """No contact claimed ahead (for this job, or any) is dialed any more: they are given
        back by the next transaction. Called before and after any change that may make a
        contact not to be called (a pause, a cancel, a number listed as do-not-call). Returns
        how many were given back."""
        jobs = list(self._deck) if job_id is None else [job_id]
        self._deck_epoch += 1
        now = self.clock.now()
        given = 0
        for jid in jobs:
            deck = self._deck.pop(jid, None)
            org = self._deck_org.pop(jid, "")
            if deck:
                self._hold([self._given_back(org, contact, now) for contact in deck])
                self._wake.set()
                given += len(deck)
        return given

    def progress_event(self) -> asyncio.Event:
        """An event set at the next change of any job's counts or status (for live progress)."""
        return self._progress

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def job_resumed(self, job_id: str) -> None:
        """An operator resumed or retried the job: forget its recent failures, dial for it."""
        self._failure_windows.pop(job_id, None)
        job = self._jobs.get(job_id)
        if job is not None:
            job.agent_streak = 0
        outage = self.provider_outage
        if outage is not None:  # try the provider again now; pause again only after a while
            outage.next_probe = 0.0
            outage.pause_at = (
                self.clock.now() + self.config.engine.provider_unreachable_pause_seconds
            )
        self.wake_job(job_id)

    def stop(self) -> None:
        """Stop claiming; live calls get `shutdown_grace_seconds` to finish."""
        self._stopping.set()
        self.give_back_claimed_ahead()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def held_outcomes(self) -> int:
        """Outcomes of ended calls not yet written."""
        return len(self._held) + len(self._done)

    @property
    def held_room_missing(self) -> str | None:
        """Why the held-outcomes file has no room on the disk (no call starts meanwhile)."""
        return self._journal.room_error if self._journal is not None else None

    @property
    def dial_log_kept(self) -> bool:
        """Attempts are being written to the dial log (see dialer.dialed)."""
        return self._dial_log is not None and self._dial_log.enabled

    def live_calls(self, job_id: str | None = None) -> int:
        return len(self._live) if job_id is None else self._live_job[job_id]

    def claimed_ahead(self, job_id: str | None = None) -> int:
        """Contacts claimed ahead, not yet dialed."""
        if job_id is not None:
            return len(self._deck.get(job_id, ()))
        return sum(len(deck) for deck in self._deck.values())

    def shown_counts(self, job_id: str, counts: dict[str, int]) -> dict[str, int]:
        """A job's status counts as read from the database, with `dialing` the live calls:
        the contacts it shows in `dialing` that are no live call (claimed ahead, being given
        back, or ended with their outcome not yet written) are shown in the status they are in
        or going to. The total is kept; when the read was older than what the engine knows,
        never more are moved than it shows dialing."""
        moved = self._not_live_job.get(job_id)
        claiming = self._claiming[job_id]
        dialing = counts.get(ContactStatus.DIALING.value, 0)
        if not (moved or claiming) or not dialing:
            return counts
        shown = dict(counts)
        for status, n in [*(moved or {}).items(), (ContactStatus.PENDING.value, claiming)]:
            take = min(n, dialing)
            if take > 0:
                shown[status] = shown.get(status, 0) + take
                dialing -= take
        shown[ContactStatus.DIALING.value] = dialing
        return shown

    def has_not_live(self, job_id: str) -> bool:
        """The database may show contacts of the job in `dialing` that are no live call."""
        return job_id in self._not_live_job

    def is_not_live(self, contact_id: int) -> bool:
        """The contact is in `dialing` in the database but no live call (claimed ahead, being
        given back, or ended with its outcome not yet written)."""
        return contact_id in self._not_live

    def shown_dials(self, job_id: str, dispatched: int, retries: int) -> tuple[int, int]:
        """A job's contacts dialed at least once and its dials after each contact's first, as
        read from the database (from the contacts' attempt counts), without the contacts
        claimed ahead: their attempt is counted from their claim, before they are dialed."""
        first = self._undialed.get((job_id, False), 0)
        again = self._undialed.get((job_id, True), 0)
        return max(0, dispatched - first), max(0, retries - again)

    def slots(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(organization, caller number id) -> (live calls, free slots): the calls the jobs
        dialed for could start now within their own, their organization's and the global
        limits (calls-per-second tokens and contacts ready aside). Counted when asked (a
        metrics scrape), in O(live calls + jobs): nothing is kept per call for it."""
        live: Counter[tuple[str, str]] = Counter(
            (c.organization_id, c.number_id) for c in self._live.values()
        )
        room: Counter[tuple[str, str]] = Counter()
        for job in self._jobs.values():
            row = job.row
            room[row.organization_id, row.phone_number_id] += max(
                0, row.concurrent_call_limit - self._live_job[row.id]
            )
        global_free = max(0, self.call_limit() - len(self._live))
        found: dict[tuple[str, str], tuple[int, int]] = {}
        for key in live.keys() | room.keys():
            free = min(room[key], global_free)
            org = self.config.organization(key[0])
            if org is not None and org.max_concurrent_calls is not None:
                free = min(free, max(0, org.max_concurrent_calls - self._live_org[key[0]]))
            found[key] = (live[key], free)
        return found

    def claimed_ahead_by_number(self) -> Counter[tuple[str, str]]:
        """(organization, caller number id) -> contacts claimed ahead, not yet dialed (each is
        recorded `interrupted` if the process dies before dialing it)."""
        found: Counter[tuple[str, str]] = Counter()
        for job_id, deck in self._deck.items():
            job = self._jobs.get(job_id)
            if job is not None:
                found[job.row.organization_id, job.row.phone_number_id] += len(deck)
        return found

    async def run(self) -> None:
        """Run until `stop()`; then drain live calls for the grace period.

        A storage fault never ends the loop: the step is tried again with a capped backoff, no
        call is started meanwhile, and the outcomes of calls that end are held until written.
        Any other exception is a bug and ends the loop (the service then exits).
        """
        self.running = True
        try:
            while not self._stopping.is_set():
                try:
                    await self._step()
                except StorageUnavailable as exc:
                    await self._storage_failed(exc)
            await self._drain()
            if self._dial_log is not None:
                # Stopped as asked: the next start asks the provider about any call left live
                # rather than trusting a file that a run of an older version (which keeps
                # none) could leave out of date.
                self._dial_log.remove()
        finally:
            self.running = False
            if self._dial_log is not None:
                self._dial_log.close()

    async def _step(self) -> None:
        """One pass of the loop: reconcile (once), activate jobs, one cycle, then wait."""
        if not self._reconciled:
            self._callback_secret = await self.store.callback_secret()
            await self._reconcile()
            self._reconciled = True
        self._wake.clear()
        now = self.clock.now()
        if self._jobs_dirty or (self._next_scheduled is not None and self._next_scheduled <= now):
            await self._activate(now)
        if self._jobs and self.config.engine.claim_ahead_seconds:
            await self._check_listings()
        await self.foreground.yield_to_requests(len(self._done))
        try:
            next_due = await self._cycle(self.clock.now())
        finally:
            if not self._done:
                self.foreground.engine_paid()
        # Contacts claimed ahead, and guesses to make (after the cycle: it may claim them).
        now = self.clock.now()
        next_due = _earliest(next_due, _earliest(self._deck_due(now), self._guess_at(now)))
        if self.storage_outage is not None or self.store.last_write_error is not None:
            if not self.wrote:
                # Nothing was written this pass: a write of its own tells that storage is back.
                await self.store.probe(self.clock.now())
            self._storage_recovered()
            return
        if (
            self._wake.is_set()
            or self._stopping.is_set()  # asked while the pass ran: `stop()`'s wake was cleared
            or self._held
            or not all(c.handed_over for c, _ in self._done)
        ):
            return
        # Only calls whose slots went to contacts claimed ahead ended, if any: their outcomes
        # are written together a little later (see _wake_soon).
        if not self._done:
            self.idle.set()
        if self._deck and self._listings_timer is None:
            self._listings_timer = asyncio.get_running_loop().call_later(
                LISTINGS_CHECK_SECONDS, self._listings_due
            )
        timeout = None if next_due is None else max(0.0, next_due - self.clock.now())
        await self.clock.wait(self._wake, timeout)
        self.idle.clear()

    async def _storage_failed(self, exc: StorageUnavailable) -> None:
        """Start or continue a storage outage: log its start once, wait before the next try."""
        outage = self.storage_outage
        if outage is None:
            outage = self.storage_outage = Outage(
                since=self.clock.now(), error=str(exc), held=len(self._held)
            )
            log.error("storage_unavailable", error=str(exc), held_outcomes=len(self._held))
        outage.error = str(exc)
        self._jobs_dirty = True  # what the jobs table says is read again once it can be
        self.give_back_claimed_ahead()  # no call starts until storage is back
        deadline = self.clock.now() + outage.backoff(
            STORAGE_RETRY_MIN_SECONDS, STORAGE_RETRY_MAX_SECONDS
        )
        while not self._stopping.is_set():
            self._wake.clear()
            if self._done:  # calls that end meanwhile: held (and kept on disk) at once
                done, self._done = self._done, []
                self._take_ended(done, self.clock.now())
            left = deadline - self.clock.now()
            if left <= 0:
                break
            await self.clock.wait(self._wake, left)

    def _storage_recovered(self) -> None:
        outage = self.storage_outage
        if outage is None:
            return
        self.storage_outage = None
        log.warning(
            "storage_recovered",
            seconds=round(self.clock.now() - outage.since, 3),
            held_outcomes=outage.held,
            retries=outage.retries,
        )
        self._wake.set()

    async def _drain(self) -> None:
        grace = self.config.engine.shutdown_grace_seconds
        deadline = self.clock.now() + grace
        log.info("engine_draining", live_calls=len(self._live), grace_seconds=grace)
        retry_wait = STORAGE_RETRY_MIN_SECONDS
        while True:
            self._wake.clear()
            written = await self._drain_cycle()
            remaining = deadline - self.clock.now()
            if not (self._live or self._done or self._held) or remaining <= 0:
                break
            if written:
                await self.clock.wait(self._wake, remaining)
            else:
                await self.clock.sleep(min(remaining, retry_wait))
                retry_wait = min(STORAGE_RETRY_MAX_SECONDS, retry_wait * 2)
        left = list(self._live.values())
        for call in left:
            if call.task is not None:
                call.task.cancel()
        for call in left:
            if call.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await call.task
        await self._drain_cycle()  # calls that ended while the others were cancelled
        if left:
            # Their contacts stay in `dialing`: the next start reconciles them, never re-dials.
            log.warning("engine_stopped_with_live_calls", live_calls=len(left))
        if self._held:
            # Storage still fails: the next start writes them first (see dialer.held).
            if self._journal is not None:
                self._journal.replace(self._held)
            for o in self._held:
                log.error(
                    "outcome_not_written",
                    job_id=o.job_id,
                    contact_id=o.contact_id,
                    attempt=o.attempt_no,
                    outcome=o.outcome,
                    next_status=o.next_status,
                    ended_at=o.ended_at,
                )
        elif self._journal is not None:
            self._journal.clear()  # everything written: no empty file left beside the database
        log.info("engine_stopped")

    async def _drain_cycle(self) -> bool:
        """One cycle while draining; False when storage failed it."""
        try:
            await self._cycle(self.clock.now())
        except StorageUnavailable as exc:
            if self.storage_outage is None:
                self.storage_outage = Outage(since=self.clock.now(), error=str(exc))
                log.error("storage_unavailable", error=str(exc), held_outcomes=len(self._held))
            return False
        self._storage_recovered()
        return True

    # ------------------------------------------------------------ jobs

    async def _activate(self, now: float) -> None:
        """Expire jobs past their end, start due jobs and refresh the set of jobs to dial for:
        one small transaction (see Store.activate)."""
        self._jobs_dirty = False
        found = await self.store.activate(now)
        for job_id in found.expired:
            log.info("job_expired", job_id=job_id)
            self._progressed()
        for job_id in found.started:
            log.info("job_started", job_id=job_id)
        fresh: dict[str, RunningJob] = {}
        for row in found.running:
            missing = self._unconfigured(row)
            if missing is not None:  # paused by the next cycle, never dialed meanwhile
                log.warning("job_paused_unconfigured", job_id=row.id, reason=missing)
                self._held_verdicts.append(JobVerdict(row.id, JobStatus.PAUSED, missing))
                self._wake.set()
                continue
            known = self._jobs.get(row.id)
            if known is not None:
                known.row = row
                known.policy = _policy(row)
                fresh[row.id] = known
            else:
                fresh[row.id] = RunningJob(row=row, policy=_policy(row))
        for job_id in [j for j in self._deck if j not in fresh]:
            self.give_back_claimed_ahead(job_id)
        self._jobs = fresh
        self._failure_windows = {j: w for j, w in self._failure_windows.items() if j in fresh}
        self.stats.dialing_for(fresh)
        self._next_scheduled = _earliest(found.next_scheduled, found.next_expiry)

    def _unconfigured(self, row: JobRow) -> str | None:
        """Why a running job cannot be dialed as it was created, if its organization, caller
        number or agent is gone from the config (a restart with a config that no longer names
        it): it dialed on with an empty caller number and trunk, or the agent's bare id, and
        nothing said why. None when all are there."""
        if self.config.organization(row.organization_id) is None:
            return f"Organization '{row.organization_id}' is no longer in the configuration"
        number = self.config.phone_number(row.phone_number_id)
        if number is None or number.organization != row.organization_id:
            return f"Caller number '{row.phone_number_id}' is no longer in the configuration"
        agent = self.config.agent(row.agent_id)
        if agent is None or agent.organization != row.organization_id:
            return f"Agent '{row.agent_id}' is no longer in the configuration"
        return None

    def wake_job(self, job_id: str) -> None:
        """Contacts of this job became ready (e.g. re-queued): dial for it again."""
        job = self._jobs.get(job_id)
        if job is not None:
            job.idle_until = 0.0
        self._look_again()

    # ------------------------------------------------------------ dispatch

    async def _cycle(self, now: float) -> float | None:
        """Record the calls that ended and claim contacts for the free slots, in one
        transaction; start the claimed calls. Return when the loop should look again.

        The ended calls' slots are free before the plan is made: those calls are over, and the
        live calls never exceed a limit. Without contacts claimed ahead, the transaction that
        records them is the one that claims their successors; with them, the database may show
        more in `dialing` than are live, and `shown_counts` says which are not. If the
        transaction fails, the outcomes stay held (in order) and are written first by the next
        one that succeeds.
        """
        began = time.perf_counter()
        most = CYCLE_MAX_SERVING if self.foreground.serving else CYCLE_MAX
        done, self._done = self._done[:most], self._done[most:]
        if done:
            self._take_ended(done, now)
        for job_id in list(self._deck):  # slots freed by calls that did not hand theirs over
            self._dial_from_deck(job_id, now)
        writing = self._held[:most]
        plan, next_due = self._plan(now, most)
        for job, _, _, ahead in plan.values():
            if ahead and job.call_seconds is None:
                job.guessed = True  # its first round claimed ahead on a guess, once
        claims = sum(granted + ahead for _, _, granted, ahead in plan.values())
        if claims >= most or len(self._held) > most:
            self._wake.set()  # capped by the cycle size, not by a limit: go again at once
        self.wrote = False
        if not (writing or self._held_verdicts or plan):
            return next_due
        wanted = {job_id: granted + ahead for job_id, (_, _, granted, ahead) in plan.items()}
        epoch = self._deck_epoch
        self._claiming.update(wanted)
        try:
            result = await self.store.cycle(
                writing,
                list(self._held_verdicts),
                wanted,
                now,
                room_name,
                here=len(writing) + claims
                <= (SMALL_CYCLE if self.foreground.serving else QUIET_CYCLE),
            )
        except StorageUnavailable:
            for _, bucket, granted, _ in plan.values():
                bucket.give_back(granted)
            raise
        finally:
            self._claiming -= Counter(wanted)  # (drops the jobs at 0)
        self.wrote = True
        self._written(writing, result.epoch)
        del self._held[: len(writing)]
        self._held_verdicts.clear()
        if self._journal is not None:  # what it holds beyond these is still to be written
            self._journal.written(self._held + [c.outcome for c, _ in self._done if c.outcome])
        for verdict in result.verdicts:  # paused or failed: nothing more is dialed for them
            self.give_back_claimed_ahead(verdict.job_id)
        started_at = time.perf_counter()
        chunk = START_CHUNK if claims > SMALL_CYCLE and self.foreground.serving else 0
        started = 0
        for job_id, (job, bucket, granted, _) in plan.items():
            got = result.claims[job_id]
            now_contacts = got.contacts[:granted]
            for contact in now_contacts:
                self._start_call(job, contact)
                started += 1
                if chunk and started % chunk == 0:
                    await asyncio.sleep(0)
            self.stats.slots_refilled(job_id, len(now_contacts), started_at)
            if len(got.contacts) > granted:
                self._claimed_ahead(job, got.contacts[granted:], epoch)
            if got.short:
                self.stats.slots_unwanted(job_id)
                bucket.give_back(granted - len(now_contacts))
                # Nothing more is ready now: sleep until its next retry is due, or it is done.
                job.idle_until = got.next_retry_due if got.next_retry_due is not None else math.inf
                # Slots it left unused may serve a job this pass capped to its share.
                self._wake.set()
            elif bucket.tokens < 1:
                next_due = _earliest(next_due, bucket.next_token_at(now))
        for o in result.refused:
            log.error(
                "call_outcome_refused",
                job_id=o.job_id,
                contact_id=o.contact_id,
                attempt=o.attempt_no,
                outcome=o.outcome,
            )
        for verdict in result.verdicts:
            if verdict.status == JobStatus.FAILED:
                log.error("job_failed", job_id=verdict.job_id, reason=verdict.reason)
            else:
                log.warning("job_auto_paused", job_id=verdict.job_id, reason=verdict.reason)
        for job_id in result.completed:
            self._job_finished(job_id)
        for applied in result.resulted:  # agents' results changed contacts: the final word
            log.info(
                "agent_result_applied",
                job_id=applied.job_id,
                contact_id=applied.contact_id,
                attempt=applied.attempt_no,
                disposition=applied.disposition,
                next_status=applied.status,
            )
        for job_id in {applied.job_id for applied in result.resulted}:
            self.wake_job(job_id)  # (a contact may wait again: look for it)
        self._progressed()
        self.stats.cycle_seconds.observe(time.perf_counter() - began)
        return next_due

    def _take_ended(self, done: list[tuple[LiveCall, DialResult]], now: float) -> None:
        """Turn ended calls into outcomes held for the next write; free their slots."""
        self._save_ended()  # on disk before any transaction may write (and forget) them
        outcomes = [call.outcome or self._outcome(call, result, now) for call, result in done]
        stats = self.stats
        for (call, _), outcome in zip(done, outcomes, strict=True):
            if call.handed_over:
                continue
            self._free_slot(call)
            if call.job_id in self._deck:  # its slot may be refilled before this is written
                self._not_live_add(call.contact.id, call.job_id, outcome.next_status)
            job = self._jobs.get(call.job_id)
            if job is not None and job.idle_until <= now:  # a contact waits for this slot
                stats.slot_freed(call.job_id, call.ended_perf)
        if self.config.engine.claim_ahead_seconds > 0:
            self._time_calls(done)
        stats.attempts_ended(outcomes, [result for _, result in done])
        self._held_verdicts.extend(self._judge(done, outcomes, now))
        self._log_attempts(done, outcomes)
        self._hold(outcomes)

    def _hold(self, outcomes: list[Outcome]) -> None:
        """Outcomes held for the next write (a call's is on disk already, see _keep_on_disk;
        the others are contacts given back undialed, which the dial log tells a restart)."""
        self._held.extend(outcomes)
        if self.storage_outage is not None:
            self.storage_outage.held += len(outcomes)

    def _free_slot(self, call: LiveCall) -> None:
        self._live.pop(call.contact.id, None)
        self._live_job[call.job_id] -= 1
        self._live_org[call.organization_id] -= 1

    # ------------------------------------------------------------ claimed ahead

    def _not_live_add(self, contact_id: int, job_id: str, status: str) -> None:
        """The contact shows in `dialing` in the database but is no live call (see
        shown_counts) until the outcome written for it is."""
        known = self._not_live.get(contact_id)
        if known is not None:
            if known[1] == status:
                return
            self._not_live_drop(contact_id)
        self._not_live[contact_id] = (job_id, status)
        counter = self._not_live_job.get(job_id)
        if counter is None:
            counter = self._not_live_job[job_id] = Counter()
        counter[status] += 1

    def _not_live_drop(self, contact_id: int) -> None:
        known = self._not_live.pop(contact_id, None)
        if known is None:
            return
        counter = self._not_live_job[known[0]]
        counter[known[1]] -= 1
        if counter[known[1]] <= 0:
            del counter[known[1]]
            if not counter:
                del self._not_live_job[known[0]]

    def _written(self, outcomes: list[Outcome], epoch: int | None) -> None:
        """These outcomes are in the database now: their contacts show as they are."""
        if self._dial_log is not None:
            self._dial_log.written(((o.contact_id, o.attempt_no) for o in outcomes), epoch)
        if self._not_live or self._undialed:
            for o in outcomes:
                self._not_live_drop(o.contact_id)
                if o.give_back and o.reason == CLAIMED_AHEAD_REASON:
                    self._dialed_or_back(o.job_id, o.attempt_no)

    def _dialed_or_back(self, job_id: str, attempt_no: int) -> None:
        """A contact claimed ahead was dialed, or its give-back written (see _undialed)."""
        key = (job_id, attempt_no > 1)
        left = self._undialed[key] - 1
        if left > 0:
            self._undialed[key] = left
        else:
            self._undialed.pop(key, None)

    def _time_calls(self, done: list[tuple[LiveCall, DialResult]]) -> None:
        """Keep each job's typical call length (from dial to end, moving average)."""
        lengths: dict[str, list[float]] = {}
        for call, _ in done:
            lengths.setdefault(call.job_id, []).append(call.ended_at - call.dialed_at)
        for job_id, seen in lengths.items():
            job = self._jobs.get(job_id)
            if job is not None:
                mean = sum(seen) / len(seen)
                last = job.call_seconds
                job.call_seconds = (
                    mean if last is None else last + CALL_SECONDS_WEIGHT * (mean - last)
                )

    def _deck_target(self, job: RunningJob, now: float) -> int:
        """How many contacts the job should hold claimed ahead: the calls its slots are likely
        to start within `claim_ahead_seconds` (concurrentCallLimit x that / its typical call
        length, and its caller number's calls_per_second x that), at most DECK_ROUNDS x its
        limit. None for a job whose calls last longer than that per slot (a 60 s call with a
        limit of 50: 0.8 contacts), nor for one whose calls end at once (they are bound by the
        writes, not by the refills; and a chain of instant calls would keep the event loop from
        the API's requests).

        Before any of its calls ended, its length is unknown, and its first round's refills
        would each wait for a write. So once its first call has lasted
        DECK_SHORTEST_CALL_SECONDS, one round (its limit) is claimed ahead, once: if its calls
        are long, they are given back undialed when they grow stale (see _dial_from_deck).
        """
        horizon = self.config.engine.claim_ahead_seconds
        if not horizon or self.provider_outage is not None:
            return 0
        limit = min(job.row.concurrent_call_limit, self.call_limit())
        length = job.call_seconds
        if length is None:
            if job.guessed or not self._guess_due(job, now):
                return 0
            likely = limit
        elif length < DECK_SHORTEST_CALL_SECONDS:
            return 0
        else:
            likely = int(limit * horizon / length)
        bucket = self._buckets.get(job.row.phone_number_id)
        if bucket is not None:  # nor more than its caller number may dial in that time
            likely = min(likely, int(bucket.rate * horizon))
        return min(DECK_ROUNDS * limit, likely)

    def _guess_at(self, now: float) -> float | None:
        """When a job's first round may be claimed ahead (see _deck_target), if one is to be."""
        if not self.config.engine.claim_ahead_seconds:
            return None
        due: float | None = None
        for job in self._jobs.values():
            first = job.first_dial_at
            if first is not None and job.call_seconds is None and not job.guessed:
                at = first + DECK_SHORTEST_CALL_SECONDS
                if now < at:
                    due = _earliest(due, at)
        return due

    @staticmethod
    def _guess_due(job: RunningJob, now: float) -> bool:
        """The job's first call has lasted long enough to claim its first round ahead."""
        first = job.first_dial_at
        return first is not None and now >= first + DECK_SHORTEST_CALL_SECONDS

    def _deck_wanted(self, job: RunningJob, most: int, now: float) -> int:
        """How many more contacts to claim ahead for the job in a cycle of at most `most`."""
        target = self._deck_target(job, now)
        return max(0, min(target, most) - len(self._deck.get(job.row.id, ())))

    def _claimed_ahead(self, job: RunningJob, contacts: list[ClaimedContact], epoch: int) -> None:
        """Contacts claimed ahead for the job: kept to be dialed as its slots free, or given
        back at once when the decks were given back while they were being claimed."""
        job_id = job.row.id
        now = self.clock.now()
        for contact in contacts:
            self._undialed[job_id, contact.attempt_no > 1] += 1
        if (
            epoch != self._deck_epoch
            or self._jobs.get(job_id) is not job
            or self._stopping.is_set()
            or self.storage_outage is not None
        ):
            self._hold([self._given_back(job.row.organization_id, c, now) for c in contacts])
            return
        deck = self._deck.get(job_id)
        if deck is None:
            deck = self._deck[job_id] = deque()
            self._deck_org[job_id] = job.row.organization_id
        deck.extend(contacts)
        for contact in contacts:
            self._not_live_add(contact.id, job_id, _waiting_status(contact))

    def _given_back(self, organization_id: str, contact: ClaimedContact, now: float) -> Outcome:
        """A contact claimed ahead that will not be dialed: back to where it was, the attempt
        not counted (as a dial that never reached the provider)."""
        outcome = _not_dialed(organization_id, contact, now, CLAIMED_AHEAD_REASON)
        self._not_live_add(contact.id, contact.job_id, outcome.next_status)
        return outcome

    def _room(self, job: RunningJob) -> int:
        """Calls the job may start now within its own, its organization's and the global
        limits."""
        row = job.row
        room = min(
            row.concurrent_call_limit - self._live_job[row.id],
            self.call_limit() - len(self._live),
        )
        org_id = row.organization_id
        try:
            most = self._org_calls[org_id]
        except KeyError:
            org = self.config.organization(org_id)
            most = self._org_calls[org_id] = org.max_concurrent_calls if org else None
        if most is not None:
            room = min(room, most - self._live_org[org_id])
        return room

    def _dial_from_deck(self, job_id: str, now: float) -> None:
        """Start calls for the job's free slots from the contacts claimed ahead for it (no
        write needed: their claim is on the disk). One claimed too long ago, or whose calling
        interval ended, is given back instead, free slot or not."""
        deck = self._deck.get(job_id)
        job = self._jobs.get(job_id)
        if (
            not deck
            or job is None
            or self._stopping.is_set()
            or self.storage_outage is not None
            or self.provider_outage is not None
        ):
            return
        room = self._room(job)
        row = job.row
        age = self._deck_max_age()
        if row.expires_at is not None and now >= row.expires_at:
            age = -math.inf  # the job has expired: none is dialed
        bucket = self._bucket(row.phone_number_id, now)
        stale: list[Outcome] = []
        started = 0
        while deck:
            contact = deck[0]
            if contact.started_at + age <= now or (
                contact.call_until is not None and now >= contact.call_until
            ):
                deck.popleft()
                stale.append(self._given_back(row.organization_id, contact, now))
                continue
            if started >= room or bucket.take(1, now) < 1:
                break
            deck.popleft()
            self._not_live_drop(contact.id)
            self._dialed_or_back(job_id, contact.attempt_no)
            # Its attempt starts now, not at the claim (its row is stamped so when it ends).
            self._start_call(job, contact.started(now))
            started += 1
        if not deck:
            del self._deck[job_id]
            del self._deck_org[job_id]
        if stale:
            self._hold(stale)
            self._wake.set()
        if started:
            self.stats.slots_refilled(job_id, started, time.perf_counter())

    def _deck_max_age(self) -> float:
        """A contact claimed ahead longer ago than this is given back rather than dialed."""
        return max(DECK_MAX_AGE_SECONDS, 2 * self.config.engine.claim_ahead_seconds)

    def _deck_due(self, now: float) -> float | None:
        """When the oldest contact claimed ahead grows stale, or the next calls-per-second
        token comes for a job whose contacts claimed ahead wait for one with a slot free."""
        due: float | None = None
        age = self._deck_max_age()
        for job_id, deck in self._deck.items():
            due = _earliest(due, deck[0].started_at + age)
            job = self._jobs.get(job_id)
            if job is not None and self._room(job) > 0:
                bucket = self._bucket(job.row.phone_number_id, now)
                if bucket.tokens < 1:
                    due = _earliest(due, bucket.next_token_at(now))
        return due

    def _wake_soon(self) -> None:
        """Run a cycle within WRITE_BATCH_SECONDS (real time), for the ended calls."""
        if self._batch_timer is None:
            self._batch_timer = asyncio.get_running_loop().call_later(
                WRITE_BATCH_SECONDS, self._batch_due
            )

    def _listings_due(self) -> None:
        self._listings_timer = None
        self._wake.set()

    async def _check_listings(self) -> None:
        """Give the contacts claimed ahead back if a number was listed do-not-call since the
        last look. The routes that list numbers give them back themselves; a listing made
        from outside the service (`dialer dnc add` or `import` while it runs) is seen here,
        within LISTINGS_CHECK_SECONDS. The first look is made before any contact is claimed
        ahead, and a claim never takes a number listed before it, so a listing is missed by
        neither."""
        at = time.monotonic()
        if at - self._listings_checked < LISTINGS_CHECK_SECONDS:
            return
        self._listings_checked = at
        latest = await self.store.latest_listing()
        if latest != self._latest_listing:
            self._latest_listing = latest
            if self._deck:
                log.info("claimed_ahead_given_back", reason="do-not-call listing")
                self.give_back_claimed_ahead()

    def _batch_due(self) -> None:
        self._batch_timer = None
        self._wake.set()

    def _keep_on_disk(self, outcome: Outcome) -> None:
        """A call's outcome, in the held-outcomes file at the end of this turn of the event
        loop (one write for all the calls that ended in it), or before, when a cycle takes it
        to write; until a transaction writes it (see dialer.held). A crash in between no longer
        loses how the call ended."""
        if self._journal is None:
            return
        if not self._unsaved:
            asyncio.get_running_loop().call_soon(self._save_ended)
        self._unsaved.append(outcome)

    def _save_ended(self) -> None:
        """Write the outcomes of the calls that ended this turn to the held-outcomes file."""
        if self._unsaved and self._journal is not None:
            unsaved, self._unsaved = self._unsaved, []
            self._journal.append(unsaved)

    def _hand_over(self, call: LiveCall, result: DialResult) -> None:
        """The call ended well: its slot goes at once to the job's next contact claimed
        ahead. Ended calls that may stop the job (a provider or carrier failure, an agent that
        did not join) wait for the next cycle to judge them first."""
        now = self.clock.now()
        if call.outcome is None:  # (decided when it ended, unless that failed)
            call.outcome = self._outcome(call, result, now)
        call.handed_over = True
        self._free_slot(call)
        self._not_live_add(call.contact.id, call.job_id, call.outcome.next_status)
        self.stats.slot_freed(call.job_id, call.ended_perf)
        self._dial_from_deck(call.job_id, now)

    def _plan(
        self, now: float, most: int
    ) -> tuple[dict[str, tuple[RunningJob, TokenBucket, int, int]], float | None]:
        """How many contacts each ready job may start now and claim ahead, and when to look
        again.

        Round-robin over the ready jobs, each within a fair share of the global slots, its
        organization's and its own caps, and its caller number's tokens (taken here; a contact
        claimed ahead takes its token when dialed).
        """
        next_due = self._next_scheduled
        plan: dict[str, tuple[RunningJob, TokenBucket, int, int]] = {}
        if self._stopping.is_set() or self.storage_outage is not None:
            return plan, next_due  # no call starts while storage cannot record it
        if self._journal is not None and not self._journal.reserved:
            # Nor while the outcome of a call could find no room on the disk (dialer.held).
            return plan, _earliest(next_due, now + HELD_ROOM_RETRY_SECONDS)
        provider = self.provider_outage
        if provider is not None:
            if now < provider.pause_at:
                next_due = _earliest(next_due, provider.pause_at)
            else:
                self._pause_for_provider(provider)
            if now < provider.next_probe:
                return plan, _earliest(next_due, provider.next_probe)
            # One dial tests whether the provider is back; none other until it tells.
            most = 1
            provider.next_probe = now + PROVIDER_PROBE_MAX_SECONDS
        limit = self.call_limit()
        ready = [j for j in self._jobs.values() if j.idle_until <= now]
        for job in self._jobs.values():
            if now < job.idle_until < math.inf:
                next_due = _earliest(next_due, job.idle_until)
        if not ready:
            return plan, next_due
        start = self._rr % len(ready)
        ready = ready[start:] + ready[:start]
        self._rr = start + 1
        global_free = min(limit - len(self._live), most)
        if self.provider_cap is not None:  # more may be tried then
            next_due = _earliest(next_due, self.provider_cap.raise_at)
        planned_org: Counter[str] = Counter()
        granted_to: Counter[str] = Counter()
        aheads: dict[str, int] = {}
        first_round = True
        while ready and global_free > 0:
            # Jobs held back only by their share: offered the slots left over, in a next round.
            held_back: list[RunningJob] = []
            for index, job in enumerate(ready):
                if global_free <= 0:
                    if first_round:  # the next cycle starts with the first job not served
                        self._rr = start + index
                    break
                # Fair share of the global slots among the jobs still to be served this round,
                # but not in crumbs: with many jobs a cycle serves some of them with useful
                # batches and the next cycle the others (a claim costs per job and per contact).
                share = min(
                    global_free, max(math.ceil(global_free / (len(ready) - index)), MIN_SHARE)
                )
                job_id, org_id = job.row.id, job.row.organization_id
                room = job.row.concurrent_call_limit - self._live_job[job_id] - granted_to[job_id]
                org = self.config.organization(org_id)
                if org is not None and org.max_concurrent_calls is not None:
                    org_room = org.max_concurrent_calls - self._live_org[org_id]
                    room = min(room, org_room - planned_org[org_id])
                ahead = aheads.get(job_id)
                if ahead is None:
                    ahead = aheads[job_id] = self._deck_wanted(job, most, now) if first_round else 0
                bucket = self._bucket(job.row.phone_number_id, now)
                granted = bucket.take(min(room, share), now) if room > 0 else 0
                if granted == 0:
                    if room > 0:
                        next_due = _earliest(next_due, bucket.next_token_at(now))
                    if ahead and job_id not in plan:  # (they take their tokens when dialed)
                        plan[job_id] = (job, bucket, 0, ahead)
                    continue
                granted_to[job_id] += granted
                if ahead:
                    # Its free slots first, in a small transaction; its contacts to claim ahead
                    # in the next cycle, at once (a first round's 50 refills waited 7-18 ms
                    # behind the 200 claimed ahead with them).
                    ahead = aheads[job_id] = 0
                    self._wake.set()
                plan[job_id] = (job, bucket, granted_to[job_id], ahead)
                planned_org[org_id] += granted
                global_free -= granted
                if granted == share < room:
                    held_back.append(job)
            ready, first_round = held_back, False
        return plan, next_due

    def _bucket(self, number_id: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(number_id)
        if bucket is None:
            number = self.config.phone_number(number_id)
            bucket = TokenBucket(number.calls_per_second if number else 1.0, now)
            self._buckets[number_id] = bucket
        return bucket

    def _caller(self, job: JobRow) -> tuple[str, str, str]:
        """(caller number, SIP trunk, agent name) of a job, looked up once per job."""
        found = self._callers.get(job.id)
        if found is None:
            number = self.config.phone_number(job.phone_number_id)
            agent = self.config.agent(job.agent_id)
            found = self._callers[job.id] = (
                number.number if number else "",
                number.sip_trunk_id if number else "",
                (agent.livekit_agent_name or agent.id) if agent else job.agent_id,
            )
        return found

    def _request(self, job: JobRow, contact: ClaimedContact) -> DialRequest:
        from_number, sip_trunk_id, agent_name = self._caller(job)
        return DialRequest(
            job_id=job.id,
            contact_id=contact.id,
            attempt_no=contact.attempt_no,
            room_name=contact.room_name,
            to_number=contact.phone,
            from_number=from_number,
            sip_trunk_id=sip_trunk_id,
            agent_name=agent_name,
            contact_data=contact.contact_data,
            started_at=contact.started_at,
            ringing_timeout_seconds=job.ringing_timeout_seconds,
            job_name=job.name,
            timezone=_zone(job, contact),
            callback_url=results.callback_url(self.public_url, contact.room_name),
            callback_secret=self._callback_secret,
            on_answered=self._answered,
            before_dial=self._before_dial if self._dials_late else None,
        )

    def _start_call(
        self, job: RunningJob, contact: ClaimedContact, *, resumed: bool = False
    ) -> None:
        call = LiveCall(
            contact=contact,
            job_id=job.row.id,
            organization_id=job.row.organization_id,
            number_id=job.row.phone_number_id,
            request=self._request(job.row, contact),
            policy=job.policy,
            resumed=resumed,
            windows_json=job.row.calling_windows,
            dialed_at=self.clock.now(),
        )
        if job.first_dial_at is None:
            job.first_dial_at = call.dialed_at
        if not resumed and self._dial_log is not None and not self._dials_late:
            # Written before its dial.
            call.dial_ticket = self._dial_log.add(contact.id, contact.attempt_no)
        self._live[contact.id] = call
        self._live_job[call.job_id] += 1
        self._live_org[call.organization_id] += 1
        self.max_live_observed = max(self.max_live_observed, len(self._live))
        call.task = asyncio.create_task(self._call(call), name=f"call-{contact.id}")

    def _before_dial(self, request: DialRequest) -> bool:
        """A provider that dials late is about to place this call: write it to the dial log
        first (see DialRequest.before_dial). False: no call may be placed."""
        if self._dial_log is None:
            return True
        return self._dial_log.flush(self._dial_log.add(request.contact_id, request.attempt_no))

    async def _call(self, call: LiveCall) -> None:
        structlog.contextvars.bind_contextvars(
            job_id=call.job_id, contact_id=call.contact.id, attempt=call.contact.attempt_no
        )
        try:
            if call.resumed:
                result = await self.provider.resume(call.request)
            elif (
                self._dial_log is not None
                and not self._dials_late
                and not self._dial_log.flush(call.dial_ticket)
            ):
                result = DialResult(
                    status=ContactStatus.FAILED,
                    reason=DIAL_LOG_STUCK,
                    not_placed=True,
                    ended_at=self.clock.now(),
                )
            else:
                result = await self.provider.dial(call.request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a provider bug must not lose the attempt
            log.exception("call_provider_error")
            result = DialResult(
                status=ContactStatus.FAILED,
                reason=f"provider error: {type(exc).__name__}",
                ended_at=self.clock.now(),
            )
        call.ended_perf = time.perf_counter()
        call.ended_at = self.clock.now()
        if result.at_limit:  # (rare: a scan of the live calls is fine)
            call.others_live = sum(1 for c in self._live.values() if not c.ended_at)
        try:
            call.outcome = self._outcome(call, result, call.ended_at)
        except Exception:  # a bug: decided again by the cycle, which stops the engine if so
            log.exception("call_outcome_failed")
        else:
            self._keep_on_disk(call.outcome)
        self._done.append((call, result))
        if call.job_id in self._deck and _ends_well(result) and not call.resumed:
            self._hand_over(call, result)
            job = self._jobs.get(call.job_id)
            left = len(self._deck.get(call.job_id, ()))
            if job is not None and 2 * left >= self._deck_target(job, call.ended_at):
                self._wake_soon()  # its successor runs: written with the next batch
                return
        if len(self._done) <= SMALL_CYCLE:
            self.foreground.engine_owes()
        else:  # a big cycle: the requests go first after all (see Foreground)
            self.foreground.engine_paid()
        self._wake.set()

    # ------------------------------------------------------------ outcomes

    def _judge(
        self, done: list[tuple[LiveCall, DialResult]], outcomes: list[Outcome], now: float
    ) -> list[JobVerdict]:
        """What the ended calls say about their jobs, before the next claims are planned: when
        each job has a contact ready again, and which jobs must stop (failed: the provider
        rejects its calls; paused: most of its recent attempts failed at the carrier)."""
        verdicts: list[JobVerdict] = []
        self._numbers_freed({call.organization_id for call, _ in done}, now)
        for (call, result), outcome in zip(done, outcomes, strict=True):
            if result.at_limit and call.others_live:
                self._provider_at_limit(call.others_live, result.reason or "at a limit", now)
            elif result.not_placed or result.provider_error:
                self._provider_unreachable(call, result.reason or "provider unreachable", now)
            elif not call.resumed:
                self._provider_reachable(now)
            job = self._jobs.get(call.job_id)
            if job is None:  # not dialing for it (finished, paused, or stopped just now)
                continue
            if outcome.next_status == ContactStatus.QUEUED and outcome.next_retry_at is not None:
                job.idle_until = min(job.idle_until, outcome.next_retry_at)
            if result.agent_not_joined:
                # Nobody was dialed: it tells about the agent, not the provider or the carrier.
                verdict = self._count_agent_not_joined(job, result)
            else:
                job.agent_streak = 0
                verdict = self._count_fatal(job, result)
                # Calls cut short by a restart say nothing about the carrier: not counted.
                if verdict is None and not (
                    result.not_placed or result.job_fatal or result.retryable
                ):
                    verdict = self._watch_failures(job, result.status, now)
            if verdict is not None:
                verdicts.append(verdict)
                self._stop_dialing(job.row.id)  # its live calls finish and are recorded
        return verdicts

    def _log_attempts(
        self, done: list[tuple[LiveCall, DialResult]], outcomes: list[Outcome]
    ) -> None:
        logs.info_many(
            log,
            "call_attempt_finished",
            (
                {
                    "job_id": call.job_id,
                    "contact_id": call.contact.id,
                    "attempt": call.contact.attempt_no,
                    "outcome": dial_label(outcome, result),
                    "sip_code": outcome.sip_code,
                    "next_status": outcome.next_status,
                    "reason": result.reason,
                    "duration": outcome.duration,
                }
                for (call, result), outcome in zip(done, outcomes, strict=True)
            ),
        )

    def _outcome(self, call: LiveCall, result: DialResult, now: float) -> Outcome:
        # What a provider reports is kept only when it fits: an outcome the database cannot
        # store would stop the engine at every start (its held outcome is written first).
        sip = result.sip_code if result.sip_code is None else sip_code(result.sip_code)
        duration = result.duration
        if duration is not None and not (
            isinstance(duration, int) and 0 <= duration <= MAX_DURATION_SECONDS
        ):
            duration = None
        charged = 0.0
        if duration:
            charged = duration / 60.0 * self.config.pricing.usd_per_minute
        give_back = result.not_placed or result.job_fatal or result.agent_not_joined
        next_retry_at: float | None
        if result.not_placed or result.agent_not_joined:
            # No call was placed (the provider was not reached, or the agent never came into
            # the room): try again a little later, without spending an attempt.
            status, next_retry_at = ContactStatus.QUEUED, now + NOT_PLACED_BACKOFF_SECONDS
        elif result.job_fatal:
            # Not the contact's fault: it goes back to where it was before this claim.
            first = call.contact.attempt_no == 1
            status = ContactStatus.PENDING if first else ContactStatus.QUEUED
            next_retry_at = None if first else now
        else:
            decision = retry.decide(
                result.status,
                call.contact.attempt_no,
                call.contact.max_attempts,
                call.policy,
                now,
                force_retryable=result.retryable,
            )
            status, next_retry_at = decision.status, decision.next_retry_at
        next_call_at: float | None = None
        call_until: float | None = None
        if status in (ContactStatus.PENDING, ContactStatus.QUEUED):
            # Waiting again: within its calling windows. A retry that would fall outside them
            # moves to their next opening.
            interval = self.rules.interval(
                call.windows_json, call.contact.zones, max(now, next_retry_at or now)
            )
            if interval is None:
                # Its zones share no open window any more (one vanished at a daylight-saving
                # change): its interval ends now, so the next claim cancels it as one without
                # a window (no_common_window). With no end it was dialed at any hour.
                call_until = now
            else:
                next_call_at = interval[0] if interval[0] > now else None
                call_until = interval[1]
                if next_retry_at is not None:
                    next_retry_at = max(next_retry_at, interval[0])
        return Outcome(
            contact_id=call.contact.id,
            job_id=call.job_id,
            organization_id=call.organization_id,
            attempt_no=call.contact.attempt_no,
            outcome=result.status.value,
            next_status=status.value,
            next_retry_at=next_retry_at,
            sip_code=sip,
            reason=result.reason,
            answered_at=result.answered_at,
            ended_at=result.ended_at or now,
            duration=duration,
            charged_usd=round(charged, 6),
            started_at=call.contact.started_at,
            give_back=give_back,
            next_call_at=next_call_at,
            call_until=call_until,
        )

    def _provider_unreachable(self, call: LiveCall, reason: str, now: float) -> None:
        """A dial never reached the provider, or the provider failed it: no job dials until a
        probe dial gets through."""
        outage = self.provider_outage
        if outage is None:
            outage = self.provider_outage = Outage(
                since=now,
                error=reason,
                pause_at=now + self.config.engine.provider_unreachable_pause_seconds,
            )
            log.error("provider_unreachable", error=reason)
            self.give_back_claimed_ahead()
            self.provider_cap = None  # none goes through: a limit on how many says nothing
        outage.error = reason
        # A probe is started after the outage began; a call started before it, or at that very
        # moment (several dials refused together), was already in flight: only a probe's
        # failure makes the next one wait longer.
        if call.contact.started_at > outage.since:
            wait = outage.backoff(NOT_PLACED_BACKOFF_SECONDS, PROVIDER_PROBE_MAX_SECONDS)
            outage.next_probe = now + wait
        else:
            outage.next_probe = max(outage.next_probe, now + NOT_PLACED_BACKOFF_SECONDS)

    def call_limit(self) -> int:
        """The most calls live at once: the configured global limit, or fewer while the
        provider refuses more (see _provider_at_limit). Raised on the way if no refusal at the
        provider's limit came for a while: one more after PROVIDER_CAP_RAISE_SECONDS, the step
        doubling each time (so an idle engine finds it lifted), the configured one back at the
        end."""
        limit = self.config.engine.max_concurrent_calls
        cap = self.provider_cap
        if cap is None:
            return limit
        now = self.clock.now()
        while now >= cap.raise_at and cap.calls < limit:
            cap.calls += cap.step
            cap.step *= 2
            cap.raise_at += PROVIDER_CAP_RAISE_SECONDS
            log.info("provider_limit_raised", calls=min(cap.calls, limit))
        if cap.calls >= limit:
            self.provider_cap = None
            log.warning("provider_limit_lifted", seconds=round(now - cap.since, 3))
            return limit
        return cap.calls

    def _provider_at_limit(self, live: int, reason: str, now: float) -> None:
        """The provider refused a dial at a limit of its project while `live` calls of this
        service were live: a limit on calls at once (or a rate that as many calls reach). Dial
        at most that many, instead of stopping every job as for an unreachable provider; when
        none is live, the refusal is an outage after all (a used-up quota, say)."""
        cap = self.provider_cap
        if cap is None:
            cap = self.provider_cap = ProviderCap(live, now, reason, now)
            log.warning("provider_at_limit", calls=live, error=reason)
        elif live < cap.calls:
            cap.calls = live
            log.info("provider_limit_lowered", calls=live)
        cap.error = reason
        cap.step = 1
        cap.raise_at = now + PROVIDER_CAP_RAISE_SECONDS

    def _answered(self) -> None:
        """A call was answered (the provider's hook, see DialRequest.on_answered): a probe's
        call ends a provider outage at its answer, so dialing resumes without waiting for it
        to end."""
        if self.provider_outage is not None:
            self._provider_reachable(self.clock.now())

    def _provider_reachable(self, now: float) -> None:
        outage = self.provider_outage
        if outage is None:
            return
        self.provider_outage = None
        log.warning("provider_recovered", seconds=round(now - outage.since, 3))
        self._wake.set()

    def _pause_for_provider(self, outage: Outage) -> None:
        """The provider stayed unreachable too long: the running jobs pause, saying why."""
        outage.pause_at = math.inf
        minutes = max(1, round((self.clock.now() - outage.since) / 60))
        reason = f"Telephony provider unreachable for {minutes} min: {outage.error}"
        for job_id in list(self._jobs):
            self._held_verdicts.append(JobVerdict(job_id, JobStatus.PAUSED, reason))
            self._stop_dialing(job_id)

    def _numbers_freed(self, organizations: set[str], now: float) -> None:
        """Calls of these organizations ended: their numbers may now be dialed by another of the
        organization's jobs, which may have been held back by such a call (claims skip a
        number in a live call of its organization). Those jobs look again."""
        if not organizations:
            return
        for job in self._jobs.values():
            if job.idle_until > now and job.row.organization_id in organizations:
                job.idle_until = now

    def _count_fatal(self, job: RunningJob, result: DialResult) -> JobVerdict | None:
        """Provider errors that are not the contacts' fault, in a row, fail the job."""
        if not result.job_fatal:
            job.fatal_streak = 0
            return None
        job.fatal_streak += 1
        if job.fatal_streak < self.config.engine.provider_failure_limit:
            return None
        return JobVerdict(
            job.row.id, JobStatus.FAILED, result.reason or "provider rejected the call"
        )

    def _count_agent_not_joined(self, job: RunningJob, result: DialResult) -> JobVerdict | None:
        """Attempts in a row whose agent did not join the room pause the job (the agent worker
        is down or overloaded: every further attempt would end the same way). Any other result
        ends the streak (see _judge)."""
        job.agent_streak += 1
        limit = self.config.telephony.livekit.agent_join_failure_limit
        if job.agent_streak < limit:
            return None
        reason = f"{result.reason or 'The agent did not join'}, {limit} times in a row"
        return JobVerdict(job.row.id, JobStatus.PAUSED, reason)

    def _watch_failures(
        self, job: RunningJob, outcome: ContactStatus, now: float
    ) -> JobVerdict | None:
        """Pause the job when most of its recent attempts failed for carrier/provider reasons."""
        window = self._failure_windows.get(job.row.id)
        if window is None:
            window = self._failure_windows[job.row.id] = autopause.FailureWindow(self._auto_pause)
        reason = window.record(outcome, now)
        return None if reason is None else JobVerdict(job.row.id, JobStatus.PAUSED, reason)

    def _stop_dialing(self, job_id: str) -> None:
        """Forget what the engine keeps about a job it no longer dials for."""
        self.give_back_claimed_ahead(job_id)
        self._jobs.pop(job_id, None)
        self._failure_windows.pop(job_id, None)
        self._callers.pop(job_id, None)
        self.stats.slots_unwanted(job_id)

    def _job_finished(self, job_id: str) -> None:
        self._stop_dialing(job_id)
        self._progressed()
        log.info("job_finished", job_id=job_id)

    # ------------------------------------------------------------ restart

    async def _reconcile(self) -> None:
        """Contacts left in `dialing` by a crash: first write the outcomes a storage outage
        held (their calls ended), then give back those the dial log says were never dialed,
        then ask the provider about the rest, never dial blindly. Then start this process's
        dial log, before any call is placed."""
        # The dial log is read before anything is written: a database older than it (a backup
        # restored onto the same file) must be told from it by the count the file names.
        dialed = self._dial_log.load() if self._dial_log is not None else None
        if dialed is not None and self._dial_log is not None:
            found = await self.store.dial_epoch()
            if self._dial_log.older_database(found):
                log.warning(
                    "dial_log_not_trusted",
                    reason="the database is older than the dial log (a backup restored?)",
                    database_epoch=found,
                    dial_log_epoch=self._dial_log.epoch,
                )
                dialed = None
        held = self._journal.load() if self._journal is not None else []
        if held:
            completed, refused = await self.store.record_outcomes(held, self.clock.now())
            log.warning(
                "held_outcomes_written", count=len(held) - len(refused), already=len(refused)
            )
            self._journal.clear()  # type: ignore[union-attr]
            for job_id in completed:
                self._job_finished(job_id)
        left = await self.store.dialing_contacts()
        rows: dict[str, JobRow | None] = {}
        for contact in left:
            if contact.job_id not in rows:
                rows[contact.job_id] = await self.store.get_job_by_id(contact.job_id)
        if dialed is not None:
            # The dial log of the last process can be trusted: who it does not list was
            # claimed and never dialed (a contact claimed ahead, a claim the crash came
            # before the call of).
            now = self.clock.now()
            never = [
                _not_dialed(row.organization_id, contact, now, NOT_DIALED_REASON)
                for contact in left
                if (contact.id, contact.attempt_no) not in dialed
                and (row := rows[contact.job_id]) is not None
            ]
            if never:
                completed, refused = await self.store.record_outcomes(never, now)
                log.warning("claimed_not_dialed_given_back", count=len(never) - len(refused))
                for job_id in completed:
                    self._job_finished(job_id)
            back = {(o.contact_id, o.attempt_no) for o in never}
            left = [c for c in left if (c.id, c.attempt_no) not in back]
        resumed: list[tuple[int, int]] = []
        if left:
            log.warning("reconciling_interrupted_calls", count=len(left))
        for contact in left:
            row = rows[contact.job_id]
            if row is None:
                continue
            job = self._jobs.get(row.id) or RunningJob(row=row, policy=_policy(row))
            self._start_call(job, contact, resumed=True)
            resumed.append((contact.id, contact.attempt_no))
        if self._dial_log is not None:
            self._dial_log.epoch = await self.store.dial_epoch()
            self._dial_log.start(resumed)


def _zone(job: JobRow, contact: ClaimedContact) -> str:
    """The zone the agent should speak in: the contact's own (its first, when its number spans
    several), else the one the job's windows are read in, else the job's."""
    if contact.zones:
        return contact.zones.split(",", 1)[0]
    if job.window_timezone != windows.RECIPIENT:
        return job.window_timezone
    return job.timezone


def _policy(row: JobRow) -> retry.RetryPolicy:
    return retry.RetryPolicy(
        max_attempts=row.max_attempts,
        retry_statuses=row.retry_statuses,
        delay_seconds=row.retry_delay_seconds,
        backoff=row.retry_backoff,
    )


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _not_dialed(organization_id: str, contact: ClaimedContact, now: float, reason: str) -> Outcome:
    """A contact claimed and never dialed goes back to where it was, the attempt not counted
    (as a dial that never reached the provider)."""
    status = _waiting_status(contact)
    first = status == ContactStatus.PENDING.value
    return Outcome(
        contact_id=contact.id,
        job_id=contact.job_id,
        organization_id=organization_id,
        attempt_no=contact.attempt_no,
        outcome="not_placed",
        next_status=status,
        next_retry_at=None if first else now,
        sip_code=None,
        reason=reason,
        answered_at=None,
        ended_at=now,
        duration=None,
        charged_usd=0.0,
        started_at=contact.started_at,
        give_back=True,
        call_until=contact.call_until,
    )


def _waiting_status(contact: ClaimedContact) -> str:
    """Where a contact claimed but not dialed goes back to: where it was (a retry: due now)."""
    return contact.was


def _ends_well(result: DialResult) -> bool:
    """An ended call that says nothing against its job (see Engine._judge)."""
    return not (
        result.not_placed
        or result.job_fatal
        or result.agent_not_joined
        or result.retryable
        or result.status in autopause.PROVIDER_FAILURES
    )
