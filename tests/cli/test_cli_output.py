"""Output formats of the command line: one parseable line per group response, JSON records,
readable lines on a terminal."""

from __future__ import annotations

import io
import json

import pytest

from grouposcore.cli.output import Printer, record
from grouposcore.coap import Code, Message
from grouposcore.oscore import ResponseInfo
from grouposcore.oscore.security import VerifiedMessage


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def verified(payload: bytes, *, group_mode: bool = True) -> VerifiedMessage:
    return VerifiedMessage(
        code=Code.CONTENT,
        payload=payload,
        remote=("10.0.0.7", 5683),
        security=ResponseInfo(b"\x2a", group_mode, b"\x01"),
    )


def test_group_lines_stay_one_line_per_response() -> None:
    out = io.StringIO()
    printer = Printer(out=out, err=io.StringIO())
    printer.group_response(verified(b"a\tb\nc"))
    printer.group_response(verified(b"\xff\x00", group_mode=False))
    printer.group_response(Message(Code.NOT_FOUND, remote=("fe80::1%lo", 5683)))
    lines = out.getvalue().splitlines()
    assert [line.split("\t") for line in lines] == [
        ["10.0.0.7:5683", "2a", "2.05", "group", "a\\tb\\nc"],
        ["10.0.0.7:5683", "2a", "2.05", "pairwise", "hex:ff00"],
        ["[fe80::1%lo]:5683", "-", "4.04", "plain", ""],
    ]


def test_json_records() -> None:
    out = io.StringIO()
    printer = Printer(json_output=True, out=out, err=io.StringIO())
    msg = verified(b"\xff")
    msg.options.observe = 3
    msg.options.content_format = 60
    printer.group_response(msg)
    assert json.loads(out.getvalue()) == {
        "remote": "10.0.0.7:5683",
        "code": "2.05",
        "status": "Content",
        "verified": True,
        "sender_id": "2a",
        "mode": "group",
        "observe": 3,
        "content_format": 60,
        "payload_hex": "ff",
    }
    assert record(verified(b"x"), oscore=True)["mode"] == "oscore"


def test_terminal_output_is_readable() -> None:
    out = Tty()
    Printer(out=out, err=io.StringIO()).group_response(verified(b"on"))
    assert out.getvalue() == "10.0.0.7:5683 [Sender ID 2a, group mode] 2.05 Content: on\n"


def test_unicast_payload_on_stdout_and_status_on_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    Printer(out=out, err=err).response(verified(b"dim 3\n", group_mode=False))
    assert out.getvalue() == "dim 3\n"
    assert err.getvalue() == (
        "2.05 Content from 10.0.0.7:5683 (verified: Sender ID 2a, pairwise mode)\n"
    )
    quiet_err = io.StringIO()
    Printer(quiet=True, out=io.StringIO(), err=quiet_err).response(verified(b"x"))
    assert quiet_err.getvalue() == ""


def test_logging_set_up_twice_keeps_one_cli_handler_and_foreign_ones() -> None:
    """main() may run more than once in a process (tests, embedding): the CLI's own stderr
    handler is recognised by its class and replaced, a handler someone else added stays."""
    import argparse
    import logging

    from grouposcore.cli.main import _logging

    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    foreign = logging.StreamHandler(io.StringIO())
    root.addHandler(foreign)
    try:
        for _ in range(3):
            _logging(argparse.Namespace(quiet=False, verbose=1))
        added = [h for h in root.handlers if h not in saved]
        assert len(added) == 2 and foreign in added
        assert root.level == logging.INFO
    finally:
        for h in [h for h in root.handlers if h not in saved]:
            root.removeHandler(h)
        root.setLevel(level)


def test_command_results_one_json_line_or_text_or_nothing_and_failures_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The one shared emit/fail/role_names of the manager, join and EDHOC commands: the
    JSON line is sorted and compact as before, -q prints nothing, a failure is one stderr
    line and exit status 1, and roles are spelled as the options take them."""
    import argparse

    from grouposcore.cli.output import emit, fail, role_names

    result = {"num": 3, "group": "g1", "gid": b"\x01"}
    emit(argparse.Namespace(json=True, quiet=False), result, "text")
    emit(argparse.Namespace(json=False, quiet=False), result, "created g1")
    emit(argparse.Namespace(json=False, quiet=True), result, "hidden")
    assert fail("manager allow", "no group 'x'") == 1
    out, err = capsys.readouterr()
    assert out == '{"gid": "b\'\\\\x01\'", "group": "g1", "num": 3}\ncreated g1\n'
    assert err == "grouposcore manager allow: no group 'x'\n"
    assert role_names(0b110) == "requester,responder"
    assert role_names(1) == "1"  # not a valid role set: the number as given
