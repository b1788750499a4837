"""How the command line shows responses: readable on a terminal, one record per line
otherwise, JSON Lines with ``--json``.

Plain line format (not a terminal), one line per response, tab-separated:
``ADDRESS  SENDER_ID|-  CODE  MODE  PAYLOAD`` where MODE is ``group``, ``pairwise``,
``oscore`` or ``plain`` and the payload is text with backslash escapes (or ``hex:...``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from grouposcore.coap import Message, code_name, code_str
from grouposcore.errors import GroupOscoreError
from grouposcore.manager.params import roles_from_tperm
from grouposcore.oscore.security import VerifiedMessage
from grouposcore.transport import sockets

if TYPE_CHECKING:
    from grouposcore.manager.runtime import GroupMember


def emit(args: argparse.Namespace, result: object, text: str) -> None:
    """A command's result: ``result`` as one JSON line with ``--json``, else ``text``, and
    nothing with ``-q``. A value JSON cannot hold is written as its ``str()``."""
    if getattr(args, "json", False):
        print(json.dumps(result, sort_keys=True, default=str), flush=True)
    elif not getattr(args, "quiet", False):
        print(text, flush=True)


def fail(what: str, message: str) -> int:
    """Report a failed command ``grouposcore WHAT`` on stderr; the exit status (1)."""
    print(f"grouposcore {what}: {message}", file=sys.stderr)
    return 1


def role_names(tperm: int) -> str:
    """The roles a Tperm grants, as ``manager`` options spell them (``requester,responder``);
    the number itself when it is not a valid role set."""
    try:
        return ",".join(r.name.lower() for r in sorted(roles_from_tperm(tperm)))
    except GroupOscoreError:
        return str(tperm)


def report_joined(
    args: argparse.Namespace, node: str, member: GroupMember, *, how: str = "", **extra: Any
) -> None:
    """What ``join`` and ``edhoc join`` print: one JSON record or one line."""
    m = member.material
    record = {
        "group": args.group, "node": node, "started": member.started,
        "sender_id": None if m.sender_id is None else m.sender_id.hex(),
        "gid": m.gid.hex(), "num": m.num, "roles": role_names(member.roles),
        "peers": {sid.hex(): role_names(p.roles) for sid, p in sorted(m.peers.items())},
        "state": str(args.state), **extra,
    }  # fmt: skip
    sid = record["sender_id"] or "- (monitor)"
    emit(
        args,
        record,
        f"{member.started} {args.group} as {node}{how}: Sender ID {sid}, "
        f"Gid {m.gid.hex()}, num {m.num}, {len(m.peers)} peer(s); state {args.state}",
    )


def format_address(remote: Any) -> str:
    """``host:port`` of a message's peer, ``-`` when there is none."""
    return "-" if remote is None else sockets.format_address(remote)


def security_of(msg: Message, oscore: bool = False) -> tuple[str | None, str]:
    """(Sender ID in hex, mode) of a response; mode ``plain`` when it was not protected,
    ``oscore`` when it was verified with an RFC 8613 context (``oscore``)."""
    if isinstance(msg, VerifiedMessage) and msg.security is not None:
        info = msg.security
        if oscore:
            return info.sender_id.hex(), "oscore"
        return info.sender_id.hex(), "group" if info.group_mode else "pairwise"
    return None, "plain"


def payload_text(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def record(msg: Message, oscore: bool = False) -> dict[str, Any]:
    """A response as a JSON-ready dictionary."""
    sender_id, mode = security_of(msg, oscore)
    text = payload_text(msg.payload)
    out: dict[str, Any] = {
        "remote": format_address(msg.remote),
        "code": code_str(msg.code),
        "status": code_name(msg.code).partition(" ")[2] or code_str(msg.code),
        "verified": mode != "plain",
        "sender_id": sender_id,
        "mode": mode,
    }
    if msg.options.observe is not None:
        out["observe"] = msg.options.observe
    if msg.options.content_format is not None:
        out["content_format"] = msg.options.content_format
    if text is not None:
        out["payload"] = text
    else:
        out["payload_hex"] = msg.payload.hex()
    return out


def _escaped(payload: bytes) -> str:
    text = payload_text(payload)
    if text is None:
        return "hex:" + payload.hex()
    return text.encode("unicode_escape").decode("ascii")


@dataclass
class Printer:
    """Writes responses in the chosen style; status lines go to stderr."""

    json_output: bool = False
    quiet: bool = False
    #: responses are verified with an RFC 8613 context (no group modes)
    oscore: bool = False
    out: TextIO | None = None
    err: TextIO | None = None

    @property
    def _out(self) -> TextIO:
        return self.out if self.out is not None else sys.stdout

    @property
    def _err(self) -> TextIO:
        return self.err if self.err is not None else sys.stderr

    @property
    def tty(self) -> bool:
        return bool(getattr(self._out, "isatty", lambda: False)())

    def _emit(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    def status(self, msg: Message) -> str:
        sender_id, mode = security_of(msg, self.oscore)
        origin = f"from {format_address(msg.remote)}"
        if sender_id is None:
            return f"{code_name(msg.code)} {origin} (not protected)"
        return f"{code_name(msg.code)} {origin} (verified: Sender ID {sender_id}, {mode} mode)"

    def response(self, msg: Message) -> None:
        """One unicast response: the payload on stdout, its status on stderr."""
        if self.json_output:
            self._emit(json.dumps(record(msg, self.oscore)))
            return
        if not self.quiet:
            self._err.write(self.status(msg) + "\n")
            self._err.flush()
        text = payload_text(msg.payload)
        if text is None and not self.tty:
            self._out.flush()
            self._out.buffer.write(msg.payload)
            self._out.buffer.flush()
            return
        shown = text if text is not None else "hex:" + msg.payload.hex()
        if shown:
            self._emit(shown.rstrip("\n"))

    def group_response(self, msg: Message) -> None:
        """One of several responses to a group request, with its sender."""
        if self.json_output:
            self._emit(json.dumps(record(msg, self.oscore)))
            return
        sender_id, mode = security_of(msg, self.oscore)
        if self.tty:
            who = "not protected" if sender_id is None else f"Sender ID {sender_id}, {mode} mode"
            text = payload_text(msg.payload)
            body = text if text is not None else "hex:" + msg.payload.hex()
            self._emit(f"{format_address(msg.remote)} [{who}] {code_name(msg.code)}: {body}")
            return
        self._emit(
            "\t".join(
                (
                    format_address(msg.remote),
                    sender_id or "-",
                    code_str(msg.code),
                    mode,
                    _escaped(msg.payload),
                )
            )
        )

    def note(self, text: str) -> None:
        if not self.quiet:
            self._err.write(text + "\n")
            self._err.flush()
