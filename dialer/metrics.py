"""The Prometheus metrics: one collector that reads, when `/metrics` is scraped, what the engine
and the store already keep (live calls, slots, the counts of `dialer.stats`, write latency,
health), so that nothing on the hot path touches a prometheus object.

Every label is bounded by the configuration or the telephony standard: organization, caller
number id, outcome, SIP code. Never a job or contact id (one series per job would grow without
end).

More metrics join the same registry: the app keeps it at `api.metrics.REGISTRY`; a component
registers a collector of its own on it, or creates prometheus_client Counters and Histograms
with `registry=` that registry.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dialer.config import Config
from dialer.scheduler import Engine
from dialer.webhooks import SEND_RESULTS, WebhookSender
from storage.db import StorageError
from storage.latency import BucketCounts
from storage.store import Store

NUMBER_LABELS = ["organization", "phone_number_id"]


class ReadyContacts:
    """Contacts ready to dial per organization, from a SQL count sampled at most once every
    `ttl_seconds` (wall clock: this bounds what scrapes cost, whatever their rate), the due
    retries counted up to `MOST_PER_JOB` per job."""

    MOST_PER_JOB = 100_000

    def __init__(
        self, ttl_seconds: float = 5.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.by_org: dict[str, int] = {}
        self._monotonic = monotonic
        self._sampled = -math.inf
        self._lock = asyncio.Lock()

    async def refresh(self, store: Store, now: float) -> None:
        async with self._lock:  # scrapes at the same moment share one count
            if self._monotonic() - self._sampled < self.ttl_seconds:
                return
            try:
                self.by_org = await store.contacts_ready(now, self.MOST_PER_JOB)
            except StorageError:  # unavailable, or closed while the service stops
                return  # the last sample stays; dialer_storage_healthy says why
            self._sampled = self._monotonic()


Parts = Callable[[], tuple[Engine, Store] | None]
Sender = Callable[[], WebhookSender | None]


class DialerCollector(Collector):
    """The dialer's metric families, built at each scrape from the running engine and store
    (`parts()`: None before they start, then the families have no samples)."""

    def __init__(
        self, config: Config, parts: Parts, ready: ReadyContacts, sender: Sender = lambda: None
    ) -> None:
        self._config = config
        self._parts = parts
        self._ready = ready
        self._sender = sender

    def describe(self) -> Iterator[Metric]:
        """The families' names, so that the registry refuses a clashing metric."""
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        return self._families(self._parts())

    def _families(self, parts: tuple[Engine, Store] | None) -> Iterator[Metric]:
        yield from self._slots(parts[0] if parts else None)
        yield from self._engine(parts[0] if parts else None)
        yield from self._storage(parts[1] if parts else None)
        yield self._contacts_ready(parts is not None)
        yield from self._health(parts)
        yield self._webhook_sends(self._sender() if parts is not None else None)

    def _webhook_sends(self, sender: WebhookSender | None) -> Metric:
        sends = CounterMetricFamily(
            "dialer_webhook_deliveries",
            "Webhook sends by result: delivered (2xx), retry (failed, tried again later), "
            "failed (failed for good: a dead letter until replayed).",
            labels=["result"],
        )
        if sender is not None:
            for result in SEND_RESULTS:
                sends.add_metric([result], sender.sends[result])
        return sends

    def _slots(self, engine: Engine | None) -> Iterator[Metric]:
        live = GaugeMetricFamily(
            "dialer_live_calls", "Calls in progress (claimed, not yet ended).", labels=NUMBER_LABELS
        )
        free = GaugeMetricFamily(
            "dialer_free_slots",
            "Calls the running jobs could start now within their own, their organization's and "
            "the global concurrency limits (calls-per-second tokens and ready contacts aside).",
            labels=NUMBER_LABELS,
        )
        ahead = GaugeMetricFamily(
            "dialer_contacts_claimed_ahead",
            "Contacts claimed ahead for short calls, waiting for a slot (claimed on the disk, "
            "not dialed yet; a crash records them interrupted).",
            labels=NUMBER_LABELS,
        )
        if engine is not None:
            found = engine.slots()
            decks = engine.claimed_ahead_by_number()
            keys = {(n.organization, n.id) for n in self._config.phone_numbers} | found.keys()
            for key in sorted(keys | decks.keys()):
                n_live, n_free = found.get(key, (0, 0))
                live.add_metric(list(key), n_live)
                free.add_metric(list(key), n_free)
                ahead.add_metric(list(key), decks[key])
        yield live
        yield free
        yield ahead

    def _engine(self, engine: Engine | None) -> Iterator[Metric]:
        dials = CounterMetricFamily(
            "dialer_dials",
            "Call attempts that ended, by outcome and SIP code ('none' when there was none).",
            labels=["outcome", "sip_code"],
        )
        stats = engine.stats if engine is not None else None
        if stats is not None:
            for (outcome, sip_code), n in sorted(
                stats.dials.items(), key=lambda item: (item[0][0], item[0][1] or 0)
            ):
                dials.add_metric([outcome, "none" if sip_code is None else str(sip_code)], n)
        yield dials
        yield _histogram(
            "dialer_attempt_duration_seconds",
            "Attempts that placed a call: seconds from the attempt's start (its claim, or its dial "
            "for a contact claimed ahead) to the call's end.",
            stats.attempt_seconds if stats else None,
        )
        yield _histogram(
            "dialer_ring_seconds",
            "Answered calls: seconds from the attempt's start to the answer.",
            stats.ring_seconds if stats else None,
        )
        yield _histogram(
            "dialer_scheduler_cycle_seconds",
            "Scheduler cycles that wrote: record ended calls, claim contacts (one transaction) "
            "and start their calls.",
            stats.cycle_seconds if stats else None,
        )
        yield _histogram(
            "dialer_slot_refill_seconds",
            "Seconds from a call's end to the next call started in its slot, for jobs with "
            "contacts ready (calls-per-second waits included).",
            stats.refill_seconds if stats else None,
        )

    def _storage(self, store: Store | None) -> Iterator[Metric]:
        yield _histogram(
            "dialer_storage_write_seconds",
            "Write transactions that succeeded: seconds from asking until on the disk "
            "(queueing for the writer included).",
            store.write_seconds if store else None,
        )
        failures = CounterMetricFamily(
            "dialer_storage_write_failures",
            "Write transactions that failed because storage did (locked, full, I/O error).",
        )
        if store is not None:
            failures.add_metric([], store.write_failures)
        yield failures

    def _contacts_ready(self, started: bool) -> Metric:
        ready = GaugeMetricFamily(
            "dialer_contacts_ready",
            "Contacts ready to dial in running jobs (pending, or queued with their retry due); "
            "sampled at most every few seconds.",
            labels=["organization"],
        )
        if started:
            orgs = {o.id for o in self._config.organizations} | self._ready.by_org.keys()
            for org in sorted(orgs):
                ready.add_metric([org], self._ready.by_org.get(org, 0))
        return ready

    def _health(self, parts: tuple[Engine, Store] | None) -> Iterator[Metric]:
        families = (
            ("dialer_engine_running", "1 while the engine loop runs."),
            (
                "dialer_storage_healthy",
                "1 while the database takes writes; 0 during a storage outage or once the "
                "database files were replaced under the service.",
            ),
            (
                "dialer_provider_reachable",
                "1 unless dials stopped reaching the telephony provider.",
            ),
            (
                "dialer_call_limit",
                "Calls at once the engine allows itself over all jobs: [engine] "
                "max_concurrent_calls, or fewer while the provider refuses more at a limit of "
                "its project.",
            ),
            (
                "dialer_outcomes_held",
                "Outcomes of ended calls held in memory, not yet written (grows during a "
                "storage outage).",
            ),
            (
                "dialer_dial_log_kept",
                "1 while the dial log is kept (after a crash, contacts claimed and never "
                "dialed go back undialed); 0 before the engine starts it, once a write to it "
                "failed (the next start after a crash counts them interrupted), or with the "
                "database in memory.",
            ),
        )
        values: tuple[float, ...] = ()
        if parts is not None:
            engine, store = parts
            values = (
                float(engine.running),
                float(engine.storage_outage is None and store.storage_problem is None),
                float(engine.provider_outage is None),
                float(engine.call_limit()),
                float(engine.held_outcomes),
                float(engine.dial_log_kept),
            )
        for index, (name, documentation) in enumerate(families):
            gauge = GaugeMetricFamily(name, documentation)
            if values:
                gauge.add_metric([], values[index])
            yield gauge


def _histogram(name: str, documentation: str, counts: BucketCounts | None) -> Metric:
    if counts is None:
        return HistogramMetricFamily(name, documentation)
    return HistogramMetricFamily(
        name, documentation, buckets=counts.cumulative(), sum_value=counts.total
    )
