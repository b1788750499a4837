"""start_eagerly: a coroutine that needs no waiting runs to the end at once, without a
task; one that waits is finished by a task that its owner holds and can cancel."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from grouposcore.transport.eager import start_eagerly

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="caller")


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_a_coroutine_that_never_waits_runs_at_once_without_a_task() -> None:
    async def main() -> None:
        done: list[str] = []

        async def quick() -> None:
            VAR.set("inside")
            done.append("quick")

        tasks: set[asyncio.Task[None]] = set()
        start_eagerly(asyncio.get_running_loop(), quick(), tasks)
        assert done == ["quick"] and not tasks
        assert VAR.get() == "caller"  # it ran in a copy of the caller's context

    run(main())


def test_a_coroutine_that_waits_is_finished_by_a_task_in_the_set() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[int] = loop.create_future()
        trace: list[Any] = []

        async def slow() -> None:
            VAR.set("inside")
            trace.append("started")
            trace.append(await gate)
            await asyncio.sleep(0)  # a bare yield, as asyncio.sleep(0) does
            trace.append(VAR.get())  # the same context after the hand-over

        tasks: set[asyncio.Task[None]] = set()
        start_eagerly(loop, slow(), tasks)
        assert trace == ["started"] and len(tasks) == 1
        gate.set_result(7)
        await asyncio.gather(*tasks)
        assert trace == ["started", 7, "inside"] and not tasks

    run(main())


def test_errors_and_cancellation_reach_the_coroutine() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        failing: asyncio.Future[None] = loop.create_future()
        never: asyncio.Future[None] = loop.create_future()
        seen: list[str] = []

        async def catches() -> None:
            try:
                await failing
            except ValueError:
                seen.append("caught")

        async def cleans_up() -> None:
            try:
                await never
            finally:
                seen.append("cleaned up")

        tasks: set[asyncio.Task[None]] = set()
        start_eagerly(loop, catches(), tasks)
        start_eagerly(loop, cleans_up(), tasks)
        assert len(tasks) == 2
        failing.set_exception(ValueError("bad"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert seen == ["caught"] and len(tasks) == 1
        (pending,) = tasks
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert seen == ["caught", "cleaned up"] and not tasks

    run(main())


def test_an_error_in_the_first_step_reaches_the_caller() -> None:
    async def main() -> None:
        async def broken() -> None:
            raise KeyError("first step")

        with pytest.raises(KeyError):
            start_eagerly(asyncio.get_running_loop(), broken(), set())

    run(main())
