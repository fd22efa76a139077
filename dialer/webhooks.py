"""Outbound webhooks: the event types, endpoint URL checks, signing, the retry schedule, and the
sender task that delivers the outbox.

Events are written by triggers (migrations 0009, 0011) in the same transaction as the change
each one reports, as one small row per change; the deliveries of an event to the endpoints that
take its type are pending from then on. The sender takes the deliveries it is about to send (an
event gets its sequence and a delivery its row only then, outside the engine's transactions),
posts them signed with the Standard Webhooks scheme (the `standardwebhooks` library), and
writes what came of each send. It runs beside the engine with its own HTTP session, its own
tasks and reads off the event loop: a slow endpoint holds only its own slots and costs nothing
more, never the engine or the other endpoints. Delivery is at least once (a crash between a send
and its record sends again, with the same webhook-id, so receivers drop the duplicate).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import ipaddress
import json
import math
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks.webhooks import Webhook
from yarl import URL

from dialer.clock import Clock
from dialer.config import WebhooksConfig
from dialer.service import iso
from storage.connection import StorageUnavailable
from storage.rows import DeliveryAttempt, DueDelivery
from storage.store import Store

log = structlog.get_logger("webhooks")

EVENT_TYPES = (
    "job.started",
    "job.paused",
    "job.resumed",
    "job.completed",
    "job.cancelled",
    "job.failed",
    "contact.attempt_finished",
    "contact.finished",
    "contact.result",
)

# After the n-th failed send (n = 1..7) the delivery is tried again this long after; after the
# 8th it is failed (a dead letter, until replayed).
RETRY_SCHEDULE_SECONDS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
# A failed send (any answer but a 2xx, a refused or reset connection, a timeout, a name that
# does not resolve) pauses its endpoint: after its n-th failed step in a row it gets no send
# for this long (the last one from then on), then one send at a time until one is answered 2xx,
# which ends the pause. Sends that were in flight when it was paused and fail too take no
# step. Without it a failed send freed its slot at once, and an endpoint that refused
# connections was sent every pending delivery as fast as they could be taken.
ENDPOINT_PAUSE_SECONDS = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0)
DELIVERY_STATUSES = ("pending", "delivered", "failed")
SEND_RESULTS = ("delivered", "retry", "failed")

# After a storage failure the sender waits at most this long before it tries again. (With nothing
# pending it waits on no timer at all: every change that writes an event is followed by the
# engine's progress event, which wakes it.)
MAX_STORAGE_BACKOFF_SECONDS = 30.0
# The sender reads the endpoints again when told they changed (endpoints_changed), and at least
# this often: not on every round (a round follows each of the engine's cycles).
ENDPOINTS_REFRESH_SECONDS = 5.0
# Events older than `keep_days` that no delivery needs are forgotten at most this often (at the
# first round after it, so an idle service wakes for nothing), this many at a time, and at most
# this many batches a round (the rest at the next round).
PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BATCH = 1000
PRUNE_BATCHES_PER_ROUND = 20
MAX_ERROR_CHARS = 300
# Of an answer's body at most this much is read (and dropped: nothing of it is kept), so that a
# small answer leaves its connection to the next send; a longer one closes the connection unread.
# A receiver answering 400 MB must cost no memory.
MAX_RESPONSE_BODY_BYTES = 64 * 1024
USER_AGENT = "batch-dialer-webhooks/1"


class InvalidWebhookUrl(ValueError):
    """The URL cannot be a webhook endpoint."""


def new_secret() -> str:
    """A signing secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_endpoint_id() -> str:
    return "whep_" + secrets.token_hex(12)


# ----------------------------------------------------------------- URLs


def check_url(raw: str, allow_private: bool) -> str:
    """The URL as given when it may be an endpoint: http or https with a host (a name, or an
    address in its usual form) and a port it can be sent to, no spaces nor control characters,
    and unless `allow_private`, not a loopback, link-local or private address (nor
    `localhost`). Names are checked again on every send, on the addresses they resolve to."""
    if any(c.isspace() or not c.isprintable() for c in raw):
        raise InvalidWebhookUrl("the URL must not contain spaces or control characters")
    try:
        url = URL(raw)
        host = url.host  # (an `xn--` label that is no punycode fails only when decoded)
    except (ValueError, TypeError):  # (UnicodeError is a ValueError)
        raise InvalidWebhookUrl("not a URL") from None
    if url.scheme not in ("http", "https") or not host or not url.is_absolute():
        raise InvalidWebhookUrl("the URL must be http:// or https:// with a host")
    if url.user is not None or url.password is not None:
        raise InvalidWebhookUrl("the URL must not carry credentials")
    if url.explicit_port == 0:
        raise InvalidWebhookUrl("the port must be 1-65535")
    if not _address(host) and not _host_name(url.raw_host or ""):
        raise InvalidWebhookUrl(
            "the host must be a name or an IP address in its usual form (like 192.0.2.1)"
        )
    if not allow_private:
        host = host.rstrip(".").lower()
        if host == "localhost" or host.endswith(".localhost"):
            raise InvalidWebhookUrl("loopback addresses are not allowed")
        try:
            public = public_address(host)
        except ValueError:
            public = True  # a name: checked on every send, on the addresses it resolves to
        if not public:
            raise InvalidWebhookUrl("loopback, link-local and private addresses are not allowed")
    return raw


# A label of a host name as resolvers take it (IDNA-encoded: ASCII); underscores are not valid
# in host names but are found in DNS names and resolve.
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
# A last label like these makes the host an IPv4 address in another form (`127.1`, `2130706433`,
# `0x7f000001`), which resolvers and URL parsers read differently, or a name no one can have.
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")


def _address(host: str) -> bool:
    """Whether the host is an IP address in its usual form (dotted quad without leading zeros,
    or IPv6)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_name(raw_host: str) -> bool:
    """Whether the (IDNA-encoded) host is a name: dot-separated labels, the last not a number."""
    name = raw_host.lower()
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    return (
        len(name) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not _NUMBER.fullmatch(labels[-1])
    )


def public_address(address: str) -> bool:
    """Whether an IP address is one a webhook may be sent to (ValueError: not an address): a
    global one (not loopback, private, link-local, shared `100.64.0.0/10`, reserved,
    multicast...), and so is every IPv4 address it carries (6to4, Teredo); an IPv4-mapped
    address is its IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _global(ip)
    if ip.ipv4_mapped is not None:
        return _global(ip.ipv4_mapped)
    return _global(ip) and all(_global(inner) for inner in _carried_ipv4(ip))


# IETF protocol assignments (RFC 6890): not globally reachable, but Python 3.11's is_global
# says 192.0.0.8 is (an endpoint there was accepted and sent to: found from outside).
_IETF_PROTOCOL = ipaddress.ip_network("192.0.0.0/24")


def _global(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global alone lets multicast, and IPv6's reserved and site-local ranges, through.
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local
    protocol = isinstance(ip, ipaddress.IPv4Address) and ip in _IETF_PROTOCOL
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or site_local or protocol)


def _carried_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: 6to4's, Teredo's server and client. (NAT64's
    well-known prefix 64:ff9b::/96 is in ::/8, reserved.)"""
    carried = []
    if ip.sixtofour is not None:
        carried.append(ip.sixtofour)
    if ip.teredo is not None:
        carried.extend(ip.teredo)
    return carried


def refused_address(url: str) -> str | None:
    """Why a send to `url` is refused before it is made: its host is an IP address that is not
    public. (None: it may be sent. aiohttp connects to an address without asking the resolver,
    so PublicResolver checks only names; an endpoint created while `allow_private_urls` was
    true is checked here.)"""
    try:
        host = URL(url).host or ""
    except ValueError:  # (an `xn--` label that is no punycode: refused at create)
        return "the URL's host cannot be decoded"
    try:
        public = public_address(host)
    except ValueError:
        return None  # a name: PublicResolver checks the addresses it resolves to
    return None if public else f"{host} is not a public address"


# Threads of the webhook sender's own for name lookups (see OwnThreadsResolver).
RESOLVER_THREADS = 4


class OwnThreadsResolver(AbstractResolver):
    """Resolves names as aiohttp's ThreadedResolver does, but on threads of its own: that one
    uses the event loop's default executor (6 threads on 2 CPUs), which the API parses uploads
    and bodies and writes exports on. Receivers whose DNS hangs (each lookup up to the
    resolver's timeouts, tens of seconds) would hold every one of those threads, and job
    creation with them; here they wait for each other only."""

    def __init__(self, threads: int = RESOLVER_THREADS) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="webhook-dns"
        )

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        infos = await loop.run_in_executor(
            self._executor,
            functools.partial(
                socket.getaddrinfo,
                host,
                port,
                family=family,
                type=socket.SOCK_STREAM,
                flags=socket.AI_ADDRCONFIG,
            ),
        )
        found: list[ResolveResult] = []
        for family_of, _, proto, _, address in infos:
            if family_of == socket.AF_INET6:
                if len(address) < 4:
                    continue  # (IPv6 not supported by this build)
                if address[3]:  # a scope id: link-local, named with its interface
                    name, service = await loop.run_in_executor(
                        self._executor,
                        socket.getnameinfo,
                        address,
                        socket.NI_NUMERICHOST | socket.NI_NUMERICSERV,
                    )
                    resolved, at_port = name, int(service)
                else:
                    resolved, at_port = str(address[0]), int(address[1])
            elif family_of == socket.AF_INET:
                resolved, at_port = str(address[0]), int(address[1])
            else:
                continue
            found.append(
                ResolveResult(
                    hostname=host,
                    host=resolved,
                    port=at_port,
                    family=family_of,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        return found

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class NotPublic(OSError):
    """A name that resolves to no public address (aiohttp wraps it in a ClientConnectorError
    whose text drops the message: `_error_text` shows it as it is)."""


class PublicResolver(AbstractResolver):
    """Resolves names (on the sender's own threads), then refuses private addresses (so a name
    that points at the internal network is not posted to)."""

    def __init__(self) -> None:
        self._inner = OwnThreadsResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if public_address(r["host"])]
        if not allowed:
            addresses = ", ".join(dict.fromkeys(r["host"] for r in found))
            raise NotPublic(f"{host} resolves only to addresses that are not public: {addresses}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


# ----------------------------------------------------------------- signing


def body(delivery: DueDelivery) -> str:
    """The exact body posted (and signed): the same on every retry."""
    return json.dumps(
        {
            "type": delivery.type,
            "timestamp": iso(delivery.created_at),
            "sequence": delivery.sequence,
            "data": delivery.data,
        },
        separators=(",", ":"),
    )


def signed_headers(secret: str, webhook_id: str, timestamp: int, payload: str) -> dict[str, str]:
    """The Standard Webhooks headers of one send."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": Webhook(secret).sign(webhook_id, when, payload),
    }


# ----------------------------------------------------------------- outcomes


def after_failure(attempts_made: int, gone: bool, now: float) -> tuple[str, float | None]:
    """(status, next attempt time) of a delivery whose send number `attempts_made` failed."""
    if gone or attempts_made > len(RETRY_SCHEDULE_SECONDS):
        return "failed", None
    return "pending", now + RETRY_SCHEDULE_SECONDS[attempts_made - 1]


def endpoint_pause(failed_steps: int) -> float:
    """How long an endpoint gets no send after its `failed_steps`-th failed step in a row."""
    return ENDPOINT_PAUSE_SECONDS[min(failed_steps, len(ENDPOINT_PAUSE_SECONDS)) - 1]


@dataclass
class _Paused:
    """An endpoint whose sends fail: `steps` failed in a row, no send before `until`."""

    steps: int
    until: float


@dataclass
class _Sent:
    status: int | None
    error: str | None


# ----------------------------------------------------------------- the sender


class WebhookSender:
    """Delivers the outbox: a loop that starts a task per due delivery (at most
    `max_in_flight_per_endpoint` per endpoint; none to an endpoint paused after a failed send,
    then one at a time until one is delivered: see ENDPOINT_PAUSE_SECONDS), then writes the
    sends' results in batches.

    The retry schedule and the request timeout run on the injected clock; the signature's
    timestamp is wall time (the receiver compares it with its own clock). Storage failures
    never end the loop: results stay in memory until they are written.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: WebhooksConfig,
        *,
        changes: Callable[[], asyncio.Event] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self._changes = changes
        self._wall = wall
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[int, tuple[str, asyncio.Task[None]]] = {}
        self._results: list[DeliveryAttempt] = []
        # Sends by result, for /metrics: delivered (2xx), retry (failed, tried again later),
        # failed (failed for good: a dead letter until replayed).
        self.sends: dict[str, int] = dict.fromkeys(SEND_RESULTS, 0)
        self._endpoints: dict[str, tuple[str, str]] = {}
        # Endpoints whose last send failed (see ENDPOINT_PAUSE_SECONDS), by id: in memory only.
        self._paused: dict[str, _Paused] = {}
        self._endpoints_changes = 0  # endpoints_changed() calls
        self._endpoints_read: tuple[int, float] | None = None  # (changes seen, clock time)
        self._session: aiohttp.ClientSession | None = None
        self.storage_error: str | None = None
        # The clock time the loop waits until for its next round (None: working), for tests.
        self.parked_until: float | None = None
        self._pruned_at: float | None = None  # clock time of the last look for old events
        self.pruned = 0  # changes forgotten (each one or two events), for tests and logs

    def wake(self) -> None:
        """Look for due deliveries now (a replay was asked for)."""
        self._wake.set()

    def endpoints_changed(self) -> None:
        """An endpoint was added or removed: read them again, and look for deliveries now."""
        self._endpoints_changes += 1
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self) -> None:
        resolver: AbstractResolver = (
            OwnThreadsResolver() if self.config.allow_private_urls else PublicResolver()
        )
        connector = aiohttp.TCPConnector(resolver=resolver, limit=0)
        try:
            # No decompression: the answer's body is dropped, and a small compressed one could
            # inflate to any size.
            async with aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": USER_AGENT}, auto_decompress=False
            ) as session:
                self._session = session
                try:
                    await self._loop()
                finally:
                    await self._shutdown()
        finally:
            await resolver.close()  # (the connector closes only a resolver it made)

    async def _loop(self) -> None:
        backoff = 0.0
        while not self._stopping:
            self._wake.clear()
            watcher = self._watch_changes()
            try:
                until: float | None = None  # the clock time of the next round
                try:
                    await self._flush()
                    until = await self._fill()
                    await self._prune()
                    backoff = 0.0
                    self.storage_error = None
                except Exception as exc:  # storage failing (or a bug): never end the loop
                    backoff = min(max(1.0, backoff * 2), MAX_STORAGE_BACKOFF_SECONDS)
                    until = self.clock.now() + backoff
                    if not isinstance(exc, StorageUnavailable):
                        log.error("webhook_sender_error", exc_info=exc)
                    elif self.storage_error is None:
                        log.warning("webhook_storage_unavailable", error=str(exc))
                    self.storage_error = str(exc)
                if not self._wake.is_set():
                    # (From the clock's time now, not the round's start: the round's reads
                    # take time, the clock moves meanwhile.)
                    timeout = None if until is None else max(0.0, until - self.clock.now())
                    self.parked_until = math.inf if timeout is None else self.clock.now() + timeout
                    try:
                        await self.clock.wait(self._wake, timeout)
                    finally:
                        self.parked_until = None
            finally:
                if watcher is not None:
                    watcher.cancel()

    async def _prune(self) -> None:
        """Forget the events older than `keep_days` that no delivery needs any more (see
        Store.prune_webhooks), at most every PRUNE_EVERY_SECONDS, in batches."""
        keep, now = self.config.keep_days, self.clock.now()
        if not keep or (
            self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_SECONDS
        ):
            return
        self._pruned_at = now
        before = now - keep * 86400
        for _ in range(PRUNE_BATCHES_PER_ROUND):
            gone = await self.store.prune_webhooks(before, PRUNE_BATCH)
            self.pruned += gone
            if gone:
                log.info("webhook_events_pruned", changes=gone, before=before)
            if gone < PRUNE_BATCH:
                return
            await asyncio.sleep(0)  # the API and the engine between batches
        self._pruned_at = None  # more are left: the next round goes on

    def _watch_changes(self) -> asyncio.Task[None] | None:
        """A task that wakes the loop at the engine's next change (new events may be due)."""
        if self._changes is None or self._stopping:
            return None
        event = self._changes()

        async def watch() -> None:
            await event.wait()
            self._wake.set()

        return asyncio.create_task(watch(), name="webhook-changes")

    async def _flush(self) -> None:
        """Write the results of finished sends (kept if the write fails, tried again). A sent
        delivery keeps its slot until then, so that it is not picked and sent again."""
        if not self._results:
            return
        batch = list(self._results)
        await self.store.record_webhook_attempts(batch)
        del self._results[: len(batch)]
        for result in batch:
            self._in_flight.pop(result.delivery_id, None)

    async def _fill(self) -> float | None:
        """Start a send for each due delivery with a free slot; return the clock time the next
        delivery is due or a pause ends (None: nothing pending)."""
        now = self.clock.now()
        changes, last = self._endpoints_changes, self._endpoints_read
        if last is None or last[0] != changes or not 0 <= now - last[1] < ENDPOINTS_REFRESH_SECONDS:
            self._endpoints = await self.store.webhook_sender_endpoints()
            self._endpoints_read = (changes, now)
            for gone in self._paused.keys() - self._endpoints.keys():
                del self._paused[gone]
        slots = self.config.max_in_flight_per_endpoint
        busy: dict[str, list[int]] = {}
        for delivery_id, (endpoint_id, _) in self._in_flight.items():
            busy.setdefault(endpoint_id, []).append(delivery_id)
        free: dict[str, int] = {}
        resume: float | None = None  # the earliest end of a pause
        for endpoint_id in self._endpoints:
            sending = len(busy.get(endpoint_id, ()))
            paused = self._paused.get(endpoint_id)
            if paused is None:
                free[endpoint_id] = max(0, slots - sending)
            elif now < paused.until:
                free[endpoint_id] = 0
                resume = paused.until if resume is None else min(resume, paused.until)
            else:
                free[endpoint_id] = 0 if sending else 1  # one send at a time
        due, earliest = await self.store.take_webhook_deliveries(free, busy, now)
        for delivery in due:
            if delivery.id not in self._in_flight:  # finished meanwhile: recorded, not resent
                self._start(delivery)
        # (A pause's end wakes the loop whether or not its endpoint has deliveries waiting:
        # once a step, and only for an endpoint that failed.)
        if resume is not None and (earliest is None or resume < earliest):
            earliest = resume
        return earliest

    def _start(self, delivery: DueDelivery) -> None:
        endpoint = self._endpoints.get(delivery.endpoint_id)
        if endpoint is None:
            return
        url, secret = endpoint
        task = asyncio.create_task(self._deliver(delivery, url, secret), name="webhook-delivery")
        self._in_flight[delivery.id] = (delivery.endpoint_id, task)

    async def _deliver(self, delivery: DueDelivery, url: str, secret: str) -> None:
        try:
            sent = await self._send(delivery, url, secret)
        except Exception as exc:  # a bug in a send must not end the sender
            log.error("webhook_send_crashed", delivery_id=delivery.id, exc_info=exc)
            sent = _Sent(None, f"internal error: {type(exc).__name__}")
        now = self.clock.now()
        attempts = delivery.attempts + 1
        ok = sent.status is not None and 200 <= sent.status < 300
        if ok:
            status, next_at = "delivered", None
        else:
            status, next_at = after_failure(attempts, sent.status == 410, now)
        self.sends["retry" if status == "pending" else status] += 1
        self._results.append(
            DeliveryAttempt(
                delivery.id, delivery.attempts, status, next_at, sent.status, sent.error, now
            )
        )
        fields = {
            "delivery_id": delivery.id,
            "endpoint_id": delivery.endpoint_id,
            "event_type": delivery.type,
            "attempt": attempts,
            "http_status": sent.status,
            "error": sent.error,
            "next_status": status,
        }
        if ok:
            if self._paused.pop(delivery.endpoint_id, None) is not None:
                log.info("webhook_endpoint_resumed", endpoint_id=delivery.endpoint_id)
            log.info("webhook_delivery_delivered", **fields)
        elif (pause := self._pause(delivery.endpoint_id, now)) is not None:
            # One line a step: the send that paused the endpoint (or made its pause longer).
            log.info("webhook_delivery_failed", **fields, endpoint_paused_seconds=pause)
        elif status == "failed":
            log.info("webhook_delivery_failed", **fields)  # a dead letter: each one
        else:
            log.debug("webhook_delivery_failed", **fields)  # in flight when it was paused
        self._wake.set()

    def _pause(self, endpoint_id: str, now: float) -> float | None:
        """A send to the endpoint failed: pause it for its next step, and return the pause
        (None: it is paused already, and the send was in flight since before)."""
        paused = self._paused.get(endpoint_id)
        if paused is not None and now < paused.until:
            return None
        steps = 1 if paused is None else paused.steps + 1
        pause = endpoint_pause(steps)
        self._paused[endpoint_id] = _Paused(steps, now + pause)
        return pause

    async def _send(self, delivery: DueDelivery, url: str, secret: str) -> _Sent:
        """One POST, answered within the timeout (on the injected clock) or abandoned."""
        assert self._session is not None
        if not self.config.allow_private_urls and (refused := refused_address(url)):
            return _Sent(None, refused)
        payload = body(delivery)
        headers = signed_headers(secret, delivery.webhook_id, int(self._wall()), payload)
        headers["Content-Type"] = "application/json"
        session = self._session
        answered = asyncio.Event()
        outcome: list[_Sent] = []

        async def post() -> None:
            try:
                async with session.post(
                    url, data=payload.encode("utf-8"), headers=headers, allow_redirects=False
                ) as resp:
                    await _drop_body(resp)
                    error = None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
                    outcome.append(_Sent(resp.status, error))
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                outcome.append(_Sent(None, _error_text(exc)))
            finally:
                answered.set()

        request = asyncio.create_task(post(), name="webhook-post")
        try:
            if not await self.clock.wait(answered, self.config.request_timeout_seconds):
                return _Sent(None, f"timed out after {self.config.request_timeout_seconds:g} s")
        finally:
            if not request.done():
                request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request
        return outcome[0]

    async def _shutdown(self) -> None:
        """Abandon the sends in flight (sent again after the restart) and write what finished."""
        tasks = [task for _, task in self._in_flight.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._in_flight.clear()
        with contextlib.suppress(StorageUnavailable):
            await self._flush()


async def _drop_body(resp: aiohttp.ClientResponse) -> None:
    """Read the answer's body and drop it, at most MAX_RESPONSE_BODY_BYTES: a longer one closes
    the connection unread (the send's timeout bounds a body that comes slowly)."""
    left = MAX_RESPONSE_BODY_BYTES
    while left > 0:
        chunk = await resp.content.read(left)
        if not chunk:
            return  # all of it: the connection can serve the next send
        left -= len(chunk)
    resp.close()


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, NotPublic):
        return str(exc.os_error)[:MAX_ERROR_CHARS]
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]
