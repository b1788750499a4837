"""How long ``get`` to a multicast URI listens, and what it says when nothing verified:
the group collection is driven through a stand-in endpoint (no network needed)."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from grouposcore.cli import client
from grouposcore.cli.main import build_parser
from grouposcore.cli.output import Printer
from grouposcore.coap import Code, Message, parse_uri
from grouposcore.coap.constants import ACK_TIMEOUT, DEFAULT_LEISURE
from grouposcore.errors import OscoreError
from grouposcore.oscore.common import ResponseInfo
from grouposcore.oscore.security import VerifiedMessage


class GroupStandIn:
    """Yields prepared answers as ``Endpoint.group_request`` would, through the security
    (a ``None`` answer is one that fails verification)."""

    def __init__(self, answers: list[tuple[bytes | None, tuple[str, int]]]) -> None:
        self.answers = answers
        self.timeout: float | None = None
        self.yielded = 0

    async def group_request(
        self, request: Message, group: Any, *, timeout: float, security: Any, interface: Any
    ) -> AsyncIterator[Message]:
        self.timeout = timeout
        for sid, remote in self.answers:
            raw = Message(Code.CONTENT, payload=b"on", remote=remote)
            raw.options.set(9, b"")
            try:
                verified = (
                    security.unprotect_response(raw, None)
                    if sid is None
                    else VerifiedMessage(
                        code=Code.CONTENT,
                        payload=b"on",
                        remote=remote,
                        security=ResponseInfo(sid, True, b"\x01"),
                    )
                )
            except OscoreError:
                continue
            self.yielded += 1
            yield verified
            await asyncio.sleep(0)


class Failing:
    context = None

    def unprotect_response(self, response: Message, binding: Any) -> Message:
        raise OscoreError("signature does not verify")


def _args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["get", "coap://224.0.1.187/light", *extra])


def _printer() -> tuple[Printer, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Printer(out=out, err=err), out, err


def test_group_get_listens_as_long_as_servers_may_wait_by_default() -> None:
    """The servers' leisure (up to 5 s) plus an ACK_TIMEOUT, not the 3 s that missed
    about half of the answers."""
    assert client.DEFAULT_GROUP_TIMEOUT == DEFAULT_LEISURE + ACK_TIMEOUT
    stand_in = GroupStandIn([])
    printer, _out, _err = _printer()
    asyncio.run(
        client._group(
            stand_in, Message(Code.GET), parse_uri("coap://224.0.1.187/"), _args(), None, printer
        )
    )  # type: ignore[arg-type]
    assert stand_in.timeout is not None and stand_in.timeout >= DEFAULT_LEISURE + ACK_TIMEOUT


def test_group_get_stops_once_every_known_member_answered(tmp_path: Path) -> None:
    from grouposcore.cli.main import main

    assert main(["group", "provision", "switch", "l1", "l2", "--out", str(tmp_path), "-q"]) == 0
    args = _args("--security", str(tmp_path / "switch.json"))
    security = asyncio.run(_security_of(args))
    expected = client.expected_responders(security)
    assert len(expected) == 2
    a, b = sorted(expected)
    stand_in = GroupStandIn(
        [(a, ("10.0.0.1", 5701)), (b, ("10.0.0.2", 5702)), (b"\x77", ("10.0.0.3", 5703))]
    )
    printer, _out, err = _printer()
    status = asyncio.run(
        client._group(
            stand_in,
            Message(Code.GET),  # type: ignore[arg-type]
            parse_uri("coap://224.0.1.187/"),
            args,
            security,
            printer,
        )
    )
    assert status == 0
    assert stand_in.yielded == 2  # did not wait for a third answer
    assert "2 responses (verified)" in err.getvalue()


async def _security_of(args: argparse.Namespace) -> Any:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        return await client._security(args, True, stack, _printer()[0])


def test_empty_group_answer_says_how_long_and_how_many_failed_verification(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stand_in = GroupStandIn([(None, ("10.0.0.1", 5701)), (None, ("10.0.0.2", 5702))])
    printer, _out, err = _printer()
    with caplog.at_level(logging.INFO, logger="grouposcore.cli"):
        status = asyncio.run(
            client._group(
                stand_in,
                Message(Code.GET),
                parse_uri("coap://224.0.1.187/"),  # type: ignore[arg-type]
                _args("--timeout", "0.5"),
                Failing(),
                printer,
            )
        )  # type: ignore[arg-type]
    assert status == client.EXIT_ERROR_RESPONSE
    note = err.getvalue()
    assert "no response in" in note
    assert "2 answers failed verification (reasons with -v)" in note
    assert "10.0.0.2:5702 failed verification: signature does not verify" in caplog.text
