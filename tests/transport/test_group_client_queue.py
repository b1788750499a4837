"""A group request drains the responses already queued without waiting for each one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from grouposcore.coap import Code, Message
from grouposcore.transport import TransmissionParams
from grouposcore.transport.group_client import group_request


class _Burst:
    """Just enough of an Endpoint: sending the request delivers five responses at once,
    as a burst of datagrams read in one wake-up does."""

    params = TransmissionParams()
    multicast_interface = None

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop = self.loop
        self.deliver: Callable[[Message], None] | None = None
        self._ml = self
        self._sock = self

    def new_token(self) -> bytes:
        return b"\x01"

    def set_multicast_interface(self, group: str, interface: Any) -> None:
        pass

    def _now(self) -> float:
        return self.loop.time()

    def _listen(
        self,
        token: bytes,
        remote: Any,
        on_response: Callable[[Message], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.deliver = on_response

    def _unlisten(self, token: bytes) -> None:
        self.deliver = None

    def _send(self, wire: Message, target: tuple[str, int]) -> None:
        assert self.deliver is not None
        for i in range(5):
            self.deliver(
                Message(
                    Code.CONTENT,
                    token=wire.token,
                    payload=bytes([i]),
                    remote=("127.0.0.1", 6000 + i),
                )
            )


def test_group_request_takes_queued_responses_without_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five queued responses are yielded with one timed wait in all (the last, for the
    deadline), not a ``wait_for`` (a task and a timer) or a timer per response."""
    wait_fors = 0
    wait_for = asyncio.wait_for

    async def counting(aw: Any, timeout: float | None) -> Any:
        nonlocal wait_fors
        wait_fors += 1
        return await wait_for(aw, timeout)

    monkeypatch.setattr(asyncio, "wait_for", counting)
    timers = 0

    async def main() -> list[bytes]:
        nonlocal timers
        loop = asyncio.get_running_loop()
        call_later = loop.call_later

        def counting_timer(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            nonlocal timers
            timers += 1
            return call_later(delay, callback, *args)

        loop.call_later = counting_timer  # type: ignore[method-assign]
        ep: Any = _Burst()
        request = Message(Code.GET)
        request.options.uri_path = ["temp"]
        return [
            r.payload async for r in group_request(ep, request, ("224.0.1.187", 5683), timeout=0.05)
        ]

    assert asyncio.run(main()) == [bytes([i]) for i in range(5)]
    assert wait_fors == 0
    assert timers == 1
