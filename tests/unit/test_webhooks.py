"""Outbound webhook helpers: the retry schedule, signing, URL checks."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from dialer import webhooks


def test_retry_schedule_is_5s_5min_30min_2h_5h_10h_10h_then_failed() -> None:
    """After each of the first 7 failed sends the next comes after its delay; the 8th fails."""
    delays = [webhooks.after_failure(n, False, 1000.0) for n in range(1, 8)]
    assert [at - 1000.0 for _, at in delays if at is not None] == [
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
    ]
    assert {status for status, _ in delays} == {"pending"}
    assert webhooks.after_failure(8, False, 1000.0) == ("failed", None)


def test_gone_fails_at_once() -> None:
    """A 410 makes the delivery failed on its first send."""
    assert webhooks.after_failure(1, True, 0.0) == ("failed", None)


def test_an_endpoint_pause_doubles_from_5s_to_5min() -> None:
    """After the n-th failed step in a row an endpoint gets no send for 5 s, 10 s, ... then 5 min
    from then on; the first pause is no longer than a delivery's first retry."""
    pauses = [webhooks.endpoint_pause(n) for n in range(1, 10)]
    assert pauses == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert webhooks.ENDPOINT_PAUSE_SECONDS[0] <= webhooks.RETRY_SCHEDULE_SECONDS[0]


def test_signed_headers_verify_with_the_standardwebhooks_library() -> None:
    """The headers verify with the official library; a changed body does not."""
    secret = webhooks.new_secret()
    now = int(time.time())
    headers = webhooks.signed_headers(secret, "msg_1", now, '{"a":1}')
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify('{"a":1}', headers) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify('{"a":2}', headers)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.5",
        "192.168.1.1",
        "169.254.1.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "100.100.100.200",  # Alibaba Cloud's metadata service, in it
        "::ffff:100.100.100.200",
        "198.18.0.1",  # benchmarking
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fec0::1",  # site-local
        "ff0e::1",  # global multicast
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "192.0.0.8",  # IETF protocol assignments (Python 3.11 calls it global)
        "::ffff:192.0.0.8",
    ],
)
def test_private_addresses_are_not_public(address: str) -> None:
    """Loopback, private, link-local, shared, unspecified, multicast addresses, and those that
    wrap one (mapped, 6to4, Teredo, NAT64), are refused."""
    assert not webhooks.public_address(address)


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34", "2002:5db8:d822::1"],
)
def test_global_addresses_are_public(address: str) -> None:
    """Global addresses pass, also mapped or in 6to4 when the IPv4 inside is global."""
    assert webhooks.public_address(address)


def test_public_addresses_and_names() -> None:
    """A public address passes; a host name is left to the send-time resolver check."""
    assert webhooks.public_address("93.184.216.34")
    assert webhooks.check_url("https://hooks.example.com/x", False) == "https://hooks.example.com/x"
    with pytest.raises(webhooks.InvalidWebhookUrl):
        webhooks.check_url("http://api.localhost/x", False)
    assert webhooks.check_url("http://127.0.0.1:9/x", True) == "http://127.0.0.1:9/x"


@pytest.mark.parametrize(
    "url",
    [
        "http://bücher.de/x",
        "http://xn--bcher-kva.de/x",
        "http://hooks.example.com./x",
        "http://a_b.example.com/x",
        "http://[2606:4700::1111]:8443/x",
        "https://93.184.216.34/x?a=1#f",
        "http://example.com:65535/x",
    ],
)
def test_names_and_usual_addresses_are_valid_hosts(url: str) -> None:
    """IDNA names, a trailing dot, underscores, IPv6 and dotted-quad addresses, any port from
    1 are accepted as given."""
    assert webhooks.check_url(url, False) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://0x7F000001/x",
        "http://example.123/x",
        "http://a..b/x",
        "http://%65xample.com/x",
        "http://" + "a" * 64 + ".com/x",
        "http://" + "a." * 127 + "com/x",
        "http://ex\u200bample.com/x",
        "http://xn--/x",  # punycode that decodes to nothing: a 500 before
        "https://xn--zz.com/x",
    ],
)
def test_hosts_that_are_no_name_are_refused(url: str) -> None:
    """A last label that is a number, empty or too long labels, escapes, invisible characters
    and punycode that is none make no host name."""
    with pytest.raises(webhooks.InvalidWebhookUrl):
        webhooks.check_url(url, True)


def test_a_send_to_a_host_that_cannot_be_decoded_is_refused_not_raised() -> None:
    assert webhooks.refused_address("http://xn--/x") == "the URL's host cannot be decoded"


async def test_send_time_resolver_refuses_names_of_private_addresses() -> None:
    """A name that resolves only to loopback (from /etc/hosts) is not connected to."""
    resolver = webhooks.PublicResolver()
    try:
        with pytest.raises(webhooks.NotPublic, match="addresses that are not public: "):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_names_resolve_on_the_senders_own_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Receivers whose DNS hangs hold only the sender's threads: the default executor, which
    the API parses uploads and writes exports on, stays free. (The lookups ran there: a few
    hanging names held all of its 6 threads, and job creation with them.)"""
    released = threading.Event()
    real = socket.getaddrinfo

    def lookup(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "hangs.example":
            released.wait(30)
        return real("127.0.0.1" if host == "hangs.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    resolver = webhooks.OwnThreadsResolver()
    hanging = [asyncio.create_task(resolver.resolve("hangs.example", 443)) for _ in range(20)]
    try:
        await asyncio.sleep(0)
        # The API's work on the default executor is not held behind them (bounded, not timed).
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 10) == 42
        assert not any(task.done() for task in hanging)
    finally:
        released.set()
        found = await asyncio.gather(*hanging)
        await resolver.close()
    assert {r["host"] for results in found for r in results} == {"127.0.0.1"}
