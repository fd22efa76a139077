"""FakeClock: time moves only when advanced; sleepers and waits wake in deadline order."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from dialer.clock import FakeClock, SystemClock
from tests.unit.conftest import T0

R = TypeVar("R")


async def started(coro: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
    """Run `coro` as a task up to its first real wait, so its deadline is taken from now."""
    task = asyncio.create_task(coro)
    await asyncio.sleep(0)
    return task


async def test_now_moves_only_when_advanced() -> None:
    """now() starts where told and changes only by advance()."""
    clock = FakeClock(T0)
    await asyncio.sleep(0)
    assert clock.now() == T0
    await clock.advance(12.5)
    assert clock.now() == T0 + 12.5


async def test_sleeper_wakes_only_at_its_deadline() -> None:
    """A 10 s sleep is still asleep after 9.99 s and awake at 10 s."""
    clock = FakeClock(T0)
    task = await started(clock.sleep(10))
    await clock.advance(9.99)
    assert not task.done()
    await clock.advance(0.01)
    assert task.done()


async def test_sleepers_wake_in_deadline_order_seeing_their_own_deadline() -> None:
    """One big advance wakes sleepers by deadline, each seeing now() equal to its deadline."""
    clock = FakeClock(T0)
    woken: list[tuple[int, float]] = []

    async def sleeper(seconds: int) -> None:
        await clock.sleep(seconds)
        woken.append((seconds, clock.now() - T0))

    tasks = [await started(sleeper(s)) for s in (30, 10, 20)]
    assert clock.next_deadline == T0 + 10
    await clock.advance(100)
    assert woken == [(10, 10.0), (20, 20.0), (30, 30.0)]
    assert clock.now() == T0 + 100
    assert clock.next_deadline is None
    await asyncio.gather(*tasks)


async def test_zero_sleep_returns_without_advancing() -> None:
    """sleep(0) and negative sleeps only yield to the loop."""
    clock = FakeClock(T0)
    await asyncio.wait_for(clock.sleep(0), timeout=1)
    await asyncio.wait_for(clock.sleep(-5), timeout=1)
    assert clock.now() == T0


async def test_wait_returns_true_when_event_is_set_before_timeout() -> None:
    """wait(event, timeout) returns True as soon as the event is set, without time passing."""
    clock = FakeClock(T0)
    event = asyncio.Event()
    task = await started(clock.wait(event, 60))
    event.set()
    assert await task is True
    assert clock.now() == T0
    assert clock.next_deadline is None  # the timeout timer was cancelled, not left behind


async def test_wait_returns_false_on_timeout() -> None:
    """wait(event, timeout) returns False once the clock passes the timeout."""
    clock = FakeClock(T0)
    event = asyncio.Event()
    task = await started(clock.wait(event, 60))
    await clock.advance(59)
    assert not task.done()
    await clock.advance(1)
    assert task.done()
    assert task.result() is False


async def test_wait_without_timeout_only_ends_on_the_event() -> None:
    """wait(event, None) ignores time entirely."""
    clock = FakeClock(T0)
    event = asyncio.Event()
    task = await started(clock.wait(event, None))
    await clock.advance(10**6)
    assert not task.done()
    event.set()
    assert await task is True


async def test_wait_shortcuts_set_event_and_expired_timeout() -> None:
    """An already-set event gives True; a non-positive timeout on an unset event gives False."""
    clock = FakeClock(T0)
    done = asyncio.Event()
    done.set()
    assert await clock.wait(done, 0) is True
    assert await clock.wait(asyncio.Event(), 0) is False
    assert await clock.wait(asyncio.Event(), -1) is False


async def test_wait_timeout_counts_from_the_call_not_from_a_later_loop_step() -> None:
    """A test that advances right after the engine parks still fires the engine's timeout.

    This is how the scheduler is driven: it sets `idle`, then calls wait(wake, timeout); the test,
    woken by `idle`, advances the clock at once. The timeout must already be on the clock then.
    """
    clock = FakeClock(T0)
    idle, wake = asyncio.Event(), asyncio.Event()

    async def park() -> bool:
        idle.set()
        return await clock.wait(wake, 60)

    task = asyncio.create_task(park())
    await idle.wait()
    await clock.advance(60)
    assert task.done()
    assert task.result() is False


async def test_a_wait_whose_time_has_come_lets_the_loop_turn() -> None:
    """A wait with no time left returns False at once, but only after what else was ready ran:
    an engine told to look again `now`, again and again, held the event loop (every request
    with it) for as long as that lasted."""
    for clock in (FakeClock(T0), SystemClock()):
        ran: list[bool] = []
        ready = asyncio.get_running_loop().call_soon(ran.append, True)
        assert await clock.wait(asyncio.Event(), 0) is False
        assert ran == [True], type(clock).__name__
        ready.cancel()
