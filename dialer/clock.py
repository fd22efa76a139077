"""Time, injectable: the real clock for the service, a fake one that tests move by hand."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        """Wait for the event or the timeout; True if the event was set."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        if event.is_set():
            return True
        if timeout is not None and timeout <= 0:
            await _one_turn()
            return False
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True


class FakeClock:
    """A clock that only moves when `advance` is called. Sleepers wake in deadline order."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._sleeps: set[asyncio.Future[None]] = set()  # the timers of `sleep` calls

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        timer = self._timer(seconds)
        self._sleeps.add(timer)
        try:
            await timer
        finally:
            self._sleeps.discard(timer)

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        """A future that `advance` resolves `seconds` from now; on the clock as soon as made."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        return fut

    async def wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        if event.is_set():
            return True
        if timeout is not None and timeout <= 0:
            await _one_turn()
            return False
        waiter = asyncio.ensure_future(event.wait())
        tasks: set[asyncio.Future[object]] = {waiter}  # type: ignore[arg-type]
        if timeout is not None:
            # Registered now, not in a task's first step: a test that advances the clock right
            # after this call must already find the deadline (counted from this call).
            tasks.add(self._timer(timeout))  # type: ignore[arg-type]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return event.is_set()

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline has come, in order."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
            # Let the woken task run before the next deadline fires.
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
        for _ in range(5):
            await asyncio.sleep(0)

    @property
    def timers(self) -> int:
        """How many sleepers wait on this clock."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    @property
    def sleeping(self) -> int:
        """How many `sleep` calls wait on this clock (not the timeouts of `wait`: the engine's
        own wake-ups, which may come and go at any time)."""
        return sum(1 for f in self._sleeps if not f.done())

    @property
    def next_deadline(self) -> float | None:
        live = [d for d, _, f in self._sleepers if not f.done()]
        return min(live) if live else None


async def _one_turn() -> None:
    """Let the event loop turn once. A wait whose time has already come returns at once, but
    not before the loop has run what is ready: a caller that waits again and again for a time
    that is always now (a token due `now` that `take` would not grant, say) must still let
    requests be served, and never hold the loop in a loop of its own."""
    await asyncio.sleep(0)
