"""Cancelling a task that waits for an Observe registration ends the task, also when the
answer arrives in the same instant (asyncio.wait_for on Python 3.11 could swallow that
cancellation; a GroupMember's close() then waited forever for its watch task)."""

from __future__ import annotations

import asyncio
import socket

from grouposcore.coap import Code, Message
from grouposcore.transport import Endpoint


def test_cancel_racing_with_the_registration_answer_still_cancels() -> None:
    async def scenario() -> bool:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never answers
        silent.bind(("127.0.0.1", 0))
        try:
            async with await Endpoint.create(("127.0.0.1", 0)) as client:
                request = Message(Code.GET)
                request.options.uri_path = ["time"]
                observation = client.observe(request, silent.getsockname(), timeout=30)
                task = asyncio.create_task(anext(observation))
                while observation._token is None:  # registration sent, now waiting
                    await asyncio.sleep(0)
                await asyncio.sleep(0)
                # the answer and the cancellation in the same instant
                answer = Message(Code.CONTENT, token=observation._token)
                observation._queue.put_nowait(answer)
                task.cancel()
                await asyncio.wait([task], timeout=5)
                return task.cancelled()
        finally:
            silent.close()

    assert asyncio.run(scenario())
