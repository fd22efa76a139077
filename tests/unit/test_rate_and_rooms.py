"""Scheduler helpers: the per-number token bucket and room names."""

from __future__ import annotations

import asyncio
import re

import pytest

from dialer.scheduler import SMALL_CYCLE, Foreground, TokenBucket, room_name
from tests.unit.conftest import T0


def drained(rate: float, at: float = T0) -> TokenBucket:
    """A bucket of `rate` CPS whose every token was taken at time `at`."""
    bucket = TokenBucket(rate, at)
    bucket.take(1_000_000, at)
    return bucket


def test_bucket_starts_full_at_its_rate() -> None:
    """A 5 CPS bucket grants a burst of 5, then nothing more in the same instant."""
    bucket = TokenBucket(5, T0)
    assert bucket.take(10, T0) == 5
    assert bucket.take(1, T0) == 0


def test_bucket_below_one_cps_still_holds_one_token() -> None:
    """A 0.5 CPS number can dial once at once, then once every 2 s."""
    assert TokenBucket(0.5, T0).take(3, T0) == 1
    bucket = drained(0.5)
    assert [bucket.take(1, T0 + t) for t in (1.9, 2.0, 2.1)] == [0, 1, 0]


def test_bucket_refills_at_rate_and_caps_at_capacity() -> None:
    """Tokens come back at `rate` per second but never beyond the burst size."""
    bucket = drained(2)
    assert bucket.take(5, T0 + 0.5) == 1
    assert bucket.take(5, T0 + 1000) == 2


def test_bucket_long_run_rate_is_respected() -> None:
    """Greedy taking every 0.1 s for 10 s at 2 CPS grants the burst plus 2 per second."""
    bucket = TokenBucket(2, T0)
    granted = sum(bucket.take(100, T0 + step / 10) for step in range(101))
    assert granted == 2 + 2 * 10


def test_bucket_after_the_clock_steps_back_neither_gains_nor_stalls() -> None:
    """An earlier `now` than the last refill (the wall clock stepped back) adds no token, and
    the bucket refills from the new time on at its rate, not once the clock is back where it
    was (a 10 s step does not hold the number for 10 s)."""
    bucket = drained(1, at=T0 + 10)
    assert bucket.take(1, T0) == 0
    assert bucket.take(1, T0 + 0.5) == 0
    assert bucket.take(1, T0 + 1) == 1
    assert bucket.take(1, T0 + 1.5) == 0


def test_bucket_give_back_restores_unused_tokens_up_to_capacity() -> None:
    """Tokens taken but not used are returned, never above the capacity."""
    bucket = drained(3)
    bucket.give_back(2)
    assert bucket.take(5, T0) == 2
    bucket.give_back(10)
    assert bucket.take(5, T0) == 3


@pytest.mark.parametrize(("rate", "wait"), [(1.0, 1.0), (4.0, 0.25), (0.2, 5.0)])
def test_bucket_next_token_at(rate: float, wait: float) -> None:
    """When empty, the next token is 1/rate away; with a token available it is now."""
    assert TokenBucket(rate, T0).next_token_at(T0) == T0
    bucket = drained(rate)
    assert bucket.next_token_at(T0) == pytest.approx(T0 + wait)
    assert bucket.next_token_at(T0 + wait / 2) == pytest.approx(T0 + wait)


def test_room_name_shows_job_contact_and_attempt() -> None:
    """A room name starts with the job id, the contact id and the attempt number."""
    name = room_name("batch_0123abcd", 42, 3)
    assert re.fullmatch(r"batch_0123abcd_c42_a3_[0-9a-f]{6}", name)


def test_room_names_are_unique_per_call() -> None:
    """Different attempts differ, and even the same attempt named twice gets two rooms."""
    names = [room_name("job", c, a) for c in (1, 2, 12) for a in (1, 2)]
    names += [room_name("job", 1, 1) for _ in range(20)]
    assert len(set(names)) == len(names)


# ------------------------------------------------------------------ API first


class Sleeps:
    """Records the pauses asked for instead of taking them."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


async def test_foreground_defers_the_engine_under_a_stream_of_requests() -> None:
    """A request in flight, or busy_requests ended within the window: the engine waits."""
    now = [100.0]
    sleeps = Sleeps()
    fg = Foreground(
        defer_seconds=0.01,
        window_seconds=0.05,
        busy_requests=4,
        monotonic=lambda: now[0],
        sleep=sleeps,
    )
    await fg.yield_to_requests()
    assert not fg.serving and sleeps.asked == []
    fg.enter()
    assert fg.serving
    await fg.yield_to_requests()
    assert sleeps.asked == [0.01]
    fg.leave()
    fg.leave()  # an extra leave never goes below zero
    assert fg.active == 0 and not fg.serving  # two requests in the window: not a stream
    for _ in range(3):
        now[0] += 0.01
        fg.enter()
        fg.leave()
    assert fg.serving  # five ended within 50 ms
    now[0] += 0.049
    assert not fg.serving  # the oldest of the last four is now out of the window
    await fg.yield_to_requests()
    assert sleeps.asked == [0.01]


async def test_foreground_light_polling_costs_the_engine_nothing() -> None:
    """Two pollers at 20 requests/s each (40/s): the engine never waits for them."""
    now = [0.0]
    sleeps = Sleeps()
    fg = Foreground(monotonic=lambda: now[0], sleep=sleeps)
    for _ in range(200):
        now[0] += 0.025
        fg.enter()
        fg.leave()
        await fg.yield_to_requests()
    assert sleeps.asked == []


async def test_foreground_small_engine_work_is_not_deferred() -> None:
    """Under a stream of requests the engine defers big cycles only: a few ended calls' slots
    are refilled at once."""
    sleeps = Sleeps()
    fg = Foreground(monotonic=lambda: 0.0, sleep=sleeps)
    fg.enter()
    assert fg.serving
    await fg.yield_to_requests(SMALL_CYCLE)
    assert sleeps.asked == []
    await fg.yield_to_requests(SMALL_CYCLE + 1)
    assert sleeps.asked == [fg.defer_seconds]


async def test_requests_let_a_small_engine_refill_go_first_briefly() -> None:
    """A request waits while the engine owes a refill: until it is paid, at most the bound."""
    fg = Foreground(engine_wait_seconds=5.0)
    await asyncio.wait_for(fg.let_engine_first(), 1.0)  # nothing owed: no wait
    fg.engine_owes()
    waiting = asyncio.create_task(fg.let_engine_first())
    await asyncio.sleep(0)
    assert not waiting.done()
    fg.engine_paid()
    await asyncio.wait_for(waiting, 1.0)
    bounded = Foreground(engine_wait_seconds=0.0)
    bounded.engine_owes()
    await asyncio.wait_for(bounded.let_engine_first(), 1.0)  # never longer than the bound


def test_a_token_missing_by_a_hair_is_due_later_than_now() -> None:
    """A token short by less than a float step of today's timestamps (1e-8 of a token at
    1,000 CPS is 1e-11 s) was said to be due `now`, and `take` then granted none: the engine
    looked again at once, forever, while the clock stood still. It is due strictly later, and
    granted then."""
    bucket = drained(1000)
    bucket.tokens = 1.0 - 1e-8
    due = bucket.next_token_at(T0)
    assert due > T0
    assert bucket.take(1, T0) == 0
    assert bucket.take(1, due) == 1


def test_a_whole_token_is_due_now() -> None:
    """A token within the slack of whole is granted now, and said to be due now."""
    bucket = drained(1000)
    bucket.tokens = 1.0 - 1e-12
    assert bucket.next_token_at(T0) == T0
    assert bucket.take(1, T0) == 1
