"""The demo's switch: a group member whose client security keeps a copy of each protected
command as it went out (what an eavesdropper on the group records), for the replay step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grouposcore.coap import Message
from grouposcore.manager.runtime import GroupMember
from grouposcore.transport import Endpoint
from grouposcore.transport.security import ClientSecurity

__all__ = ["Capture", "Switch"]


class Capture:
    """The switch's client security, keeping each protected command as it went out (what
    an eavesdropper on the group would record, for the replay step)."""

    def __init__(self, inner: ClientSecurity) -> None:
        self.inner = inner
        #: (command, protected request, destination) in the order sent
        self.sent: list[tuple[str, Message, Any]] = []

    def protect_request(self, request: Message) -> tuple[Message, Any]:
        wire, binding = self.inner.protect_request(request)
        if request.options.uri_path == ["light"]:
            self.sent.append((request.payload.decode("utf-8", "replace"), wire, request.remote))
        return wire, binding

    def commands(self, round_index: int) -> list[tuple[Message, Any]]:
        """The protected requests of one command round (-1: the latest, 0: the first)."""
        rounds: list[list[tuple[Message, Any]]] = []
        last_text = None
        for text, wire, remote in self.sent:
            if text != last_text or not rounds or any(r == remote for _, r in rounds[-1]):
                rounds.append([])
            rounds[-1].append((wire, remote))
            last_text = text
        return rounds[round_index] if rounds else []

    def unprotect_response(self, response: Message, binding: Any) -> Message:
        return self.inner.unprotect_response(response, binding)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Switch:
    member: GroupMember
    endpoint: Endpoint
    capture: Capture
