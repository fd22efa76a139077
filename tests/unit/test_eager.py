"""dialer.eager: a coroutine's first step runs at once, the rest as a task would run it."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from dialer.eager import start_eagerly

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="outside")


async def test_a_coroutine_that_never_suspends_runs_whole_and_makes_no_task() -> None:
    steps: list[str] = []

    async def instant() -> None:
        steps.append("ran")

    assert start_eagerly(instant()) is None
    assert steps == ["ran"]  # before any turn of the event loop


async def test_the_first_step_runs_now_and_the_rest_when_what_it_awaits_is_done() -> None:
    steps: list[str] = []
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def call() -> None:
        steps.append("dialed")
        steps.append(await gate)
        await asyncio.sleep(0)  # a bare yield to the loop goes through too
        steps.append("ended")

    task = start_eagerly(call(), name="call-1")
    assert task is not None and task.get_name() == "call-1"
    assert steps == ["dialed"]
    for _ in range(3):
        await asyncio.sleep(0)
    assert steps == ["dialed"] and not task.done()
    gate.set_result("answered")
    await task
    assert steps == ["dialed", "answered", "ended"]


async def test_it_runs_in_a_context_of_its_own_as_a_task_does() -> None:
    seen: list[str] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def call() -> None:
        where.set("inside")
        await gate
        seen.append(where.get())

    task = start_eagerly(call())
    assert where.get() == "outside"  # the first step's binding stays in its own context
    gate.set_result(None)
    assert task is not None
    await task
    assert seen == ["inside"]


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    steps: list[str] = []
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def call() -> None:
        try:
            await never
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise
        finally:
            steps.append("cleaned up")

    task = start_eagerly(call())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled() and steps == ["cancelled", "cleaned up"]


async def test_an_error_of_the_first_step_comes_out_of_start_eagerly() -> None:
    async def broken_at_once() -> None:
        raise ValueError("first step")

    with pytest.raises(ValueError, match="first step"):
        start_eagerly(broken_at_once())


async def test_errors_after_the_first_step_come_out_of_the_task() -> None:
    loop = asyncio.get_running_loop()
    failing: asyncio.Future[None] = loop.create_future()
    gate: asyncio.Future[None] = loop.create_future()

    async def awaits_a_failure() -> None:
        await failing  # the future's exception is thrown into the coroutine

    async def raises_later() -> None:
        await gate
        raise ValueError("later")

    first, second = start_eagerly(awaits_a_failure()), start_eagerly(raises_later())
    assert first is not None and second is not None
    failing.set_exception(KeyError("thrown in"))
    gate.set_result(None)
    with pytest.raises(KeyError):
        await first
    with pytest.raises(ValueError, match="later"):
        await second
