"""The slot where OSCORE / Group OSCORE plug into the endpoint, and what resources require.

The endpoint calls the hooks between the message layer and block-wise/application
processing, so block-wise runs on the plain messages (inner block-wise, RFC 8613 §4.1.3.4)
and the message layer deduplicates before any replay check runs.

Bindings are opaque to the transport: whatever ``protect_request`` or
``unprotect_request`` returns is handed back unchanged to ``unprotect_response`` /
``protect_response`` (for every response of a group request, every notification of an
Observe registration and every block of a block-wise transfer of that exchange).

What a verified message reports (e.g. the sender's ID, group or pairwise mode) travels on
the message itself: the hooks may return a :class:`~grouposcore.coap.Message` *subclass*
carrying extra fields, and the endpoint hands that object (or, after block-wise
reassembly, a ``dataclasses.replace`` copy of the last block, which keeps the subclass and
its fields) to the application unchanged. The transport attaches nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from grouposcore.coap import Message

__all__ = ["Binding", "ClientSecurity", "Protection", "ServerSecurity", "security_identity"]


class Binding(Protocol):
    """A security binding as the transport holds it: opaque, any object.

    The hooks return one with every protected request or verified request and get it back
    for the responses of that exchange; the transport only stores and returns it (and asks
    :func:`security_identity`). Typing what the transport holds as ``Binding`` rather than
    ``Any`` lets the type checker prove it never looks inside. The hooks' own parameters
    stay ``Any``: each implementation takes back its own binding type (an OSCORE
    ``RequestBinding``, a test's marker), and a protocol method whose parameter were
    ``Binding`` would refuse every such narrower implementation.
    """


@runtime_checkable
class ClientSecurity(Protocol):
    """Protects outgoing requests and verifies the responses to them."""

    def protect_request(self, request: Message) -> tuple[Message, Binding]:
        """The protected request and the binding to verify its response(s) with.

        ``request.remote`` is the destination: a group address for a group request, a
        unicast address otherwise (e.g. the Echo retry or block-wise follow-up of a group
        response), so the hook can choose group or pairwise mode.
        """
        ...

    def unprotect_response(self, response: Message, binding: Any) -> Message:
        """The plain response; raises a ``GroupOscoreError`` if it does not verify."""
        ...


@runtime_checkable
class ServerSecurity(Protocol):
    """Verifies incoming requests and protects the responses to them."""

    def unprotect_request(self, request: Message) -> tuple[Message, Binding] | None:
        """``(plain request, binding)``; ``None`` if the request is not protected for us.

        Raises a ``GroupOscoreError`` to reject the request. An ``OscoreError`` carries the
        CoAP code to answer with (``coap_code``, ``None``: stay silent); if its ``binding``
        is set the error response is protected with it (e.g. a replay).
        A ``FreshnessRequired`` carries the binding and Echo value for a protected 4.01,
        which is sent even to a group request (after the leisure for multicast), since the
        client needs it to retry. Every other refusal of a request that is or may be a group
        request (it came by multicast, or its OSCORE option has the Group Flag) is silent
        (RFC 10021 §7); each refusal is counted in ``Endpoint.rejections``.
        """
        ...

    def protect_response(self, response: Message, binding: Any) -> Message:
        """The protected response (also called for every Observe notification)."""
        ...


@dataclass(frozen=True)
class Protection:
    """What a secured resource accepts; a resource without one is plain CoAP.

    A request without a binding (not protected, or protected for nobody here) is refused:
    4.01 Unauthorized to a unicast request, silence to a multicast one (no amplification).
    ``accept`` further tests the binding (which context, which group, which mode); a
    binding it refuses is answered with a *protected* 4.01. ``oscore`` and ``group`` only
    say what ``/.well-known/core`` advertises (``osc``, ``gosc``).
    """

    oscore: bool = True
    group: bool = False
    accept: Callable[[Any], bool] | None = None

    def accepts(self, binding: Binding | None) -> bool:
        if binding is None:
            return False
        return self.accept is None or bool(self.accept(binding))


def security_identity(binding: Binding | None) -> Hashable:
    """What separates block-wise state of differently protected peers at one address.

    A binding may name its peer and security association through an ``identity``
    attribute; otherwise all protected requests of an address share state, apart from the
    plain ones.
    """
    if binding is None:
        return None
    ident = getattr(binding, "identity", None)
    return ("protected", ident)
