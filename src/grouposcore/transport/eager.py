"""Start a coroutine at once and make a task of it only if it has to wait.

Most resources answer without awaiting anything (a lamp reports its state): for them a task
per request is pure overhead (creating it, a loop turn to start it, finishing it), a good
part of the Python a member spends per request besides the crypto. :func:`start_eagerly`
runs the coroutine's first step in the caller, in a copy of the caller's context as a task
would; if it finishes there, no task exists at all, and if it suspends, a task takes over
from the point where it stopped, so a resource that does await anything behaves as before.
(Python 3.12's ``asyncio.eager_task_factory`` does the same for every task of a loop; this
is the one place we want it, and 3.11 is supported.)
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["start_eagerly"]


def start_eagerly(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, None],
    tasks: set[asyncio.Task[None]],
) -> None:
    """Run ``coro`` until it first suspends; if it did not finish, the task that finishes
    it is in ``tasks`` until it is done (so that its owner can cancel it), without a done
    callback. What ``coro`` raises in its first step propagates to the caller."""
    context = contextvars.copy_context()
    try:
        waiting_on = context.run(coro.send, None)
    except StopIteration:
        return
    tasks.add(loop.create_task(_Continued(coro, waiting_on).run(tasks), context=context))


class _Continued:
    """The rest of a started coroutine, as an awaitable: hands the task the future the
    coroutine suspended on, then passes on what the task sends or throws in."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    async def run(self, tasks: set[asyncio.Task[None]]) -> None:
        try:
            await self
        finally:
            task = asyncio.current_task()
            if task is not None:
                tasks.discard(task)

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except BaseException as exc:  # cancellation, or the awaited future's error
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration:
                    return
