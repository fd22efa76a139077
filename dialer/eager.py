"""Start a coroutine at once, as Python 3.12's eager tasks do (this project runs on 3.11).

`asyncio.create_task` runs a coroutine's first step on a later turn of the event loop, after
everything already queued: under a stream of API requests that turn can be milliseconds away, and
a call's first step is where it is dialed. `start_eagerly` runs that first step now, in a context
of its own (as a task would), and hands the rest to a task only if the coroutine suspends.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any


class _Resume:
    """Awaitable that goes on with a coroutine already run by hand up to `pending`, what it
    suspended on: each value the task sends or throws in is passed to the coroutine, each value
    the coroutine yields is passed up to the task, as `await coroutine` would."""

    def __init__(self, coro: Coroutine[Any, Any, None], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, None]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    pending = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration:
                    return


async def _go_on(resume: _Resume) -> None:
    await resume


def start_eagerly(
    coro: Coroutine[Any, Any, None], name: str | None = None
) -> asyncio.Task[None] | None:
    """Run `coro` now up to its first suspension, then on as a task (returned); None when it
    finished within that first step. An exception raised by that first step propagates."""
    context = contextvars.copy_context()
    try:
        pending = context.run(coro.send, None)
    except StopIteration:
        return None
    loop = asyncio.get_running_loop()
    return loop.create_task(_go_on(_Resume(coro, pending)), name=name, context=context)
