"""What the endpoint refused and why, free of I/O: server-side rejection records and
counters, client-side tallies of responses that failed verification.

A rejected request is invisible to the client when the server stays silent (group requests,
RFC 10021 §7), so the operator is the only one who can notice an attack or a
misconfiguration: every rejection is logged on the ``grouposcore.security`` logger (INFO,
shown by ``serve -v``) and counted per reason in :class:`RejectionStats`.

On the client, a response that fails verification is discarded and the exchange keeps
waiting (RFC 8613 §8.4): one forged datagram must not end it. What was discarded is kept in
:class:`VerificationFailures`, so that a timeout can say why nothing usable arrived.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grouposcore.coap import Message, OptionNumber
from grouposcore.errors import (
    ContextNotFound,
    CredentialNotFound,
    FreshnessRequired,
    ModeNotSupported,
    OscoreDecodeError,
    ProtectionError,
    ReplayError,
    RoleNotAuthorized,
)
from grouposcore.oscore.option import FLAG_GROUP, decode_option

__all__ = [
    "Rejection",
    "RejectionStats",
    "VerificationFailures",
    "may_be_group_request",
    "reason_of",
    "request_mode",
]

log = logging.getLogger("grouposcore.security")

#: Reason names, most specific class first (CredentialNotFound is a ContextNotFound).
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (FreshnessRequired, "echo-challenge"),
    (ReplayError, "replay"),
    (CredentialNotFound, "no-credential"),
    (RoleNotAuthorized, "role-not-authorized"),
    (ContextNotFound, "unknown-context"),
    (OscoreDecodeError, "malformed"),
    (ProtectionError, "verification-failed"),
    (ModeNotSupported, "mode-not-supported"),
)


def reason_of(exc: BaseException) -> str:
    """A short, stable name for why ``exc`` refused a message (the counter's key)."""
    for cls, name in _REASONS:
        if isinstance(exc, cls):
            return name
    return "other:" + type(exc).__name__


def may_be_group_request(request: Message, multicast: bool) -> bool:
    """Whether ``request`` is or may be a group request (RFC 10021 §7).

    A request that arrived by multicast is one; so is every request with the Group Flag set,
    however it arrived: the server cannot know whether the client (or a proxy) sent it to
    the whole group. The flag is read from the raw first byte, so a request whose OSCORE
    option is otherwise malformed still counts.
    """
    if multicast:
        return True
    value = request.options.get(OptionNumber.OSCORE)
    return value is not None and len(value) > 0 and bool(value[0] & FLAG_GROUP)


def request_mode(
    request: Message, group_ids: Iterable[bytes | None] = ()
) -> tuple[str, bytes | None]:
    """``(mode, kid)`` of a protected request as far as its outer OSCORE option tells.

    ``mode`` is ``group`` (Group Flag set), ``pairwise`` (flag clear, kid context names one
    of ``group_ids``), ``oscore`` (any other protected request), ``plain`` (no OSCORE option)
    or ``malformed``.
    """
    value = request.options.get(OptionNumber.OSCORE)
    if value is None:
        return "plain", None
    try:
        opt = decode_option(value)
    except OscoreDecodeError:
        return ("group" if value and value[0] & FLAG_GROUP else "malformed"), None
    if opt.group:
        return "group", opt.kid
    if opt.kid_context is not None and opt.kid_context in set(group_ids):
        return "pairwise", opt.kid
    return "oscore", opt.kid


@dataclass(frozen=True)
class Rejection:
    """One refused request: why, from where, by whom (as claimed), in which mode."""

    reason: str
    remote: Any
    kid: bytes | None
    mode: str
    detail: str = ""
    #: whether an error response went back (False: silence)
    answered: bool = False

    def __str__(self) -> str:
        kid = "-" if self.kid is None else self.kid.hex() or "''"
        text = f"rejected {self.mode} request from {self.remote} kid {kid}: {self.reason}"
        if self.detail:
            text += f" ({self.detail})"
        return text + ("" if self.answered else ", not answered")


class RejectionStats:
    """Counters per reason of the requests a server refused, and the log of each.

    ``counts`` is a :class:`collections.Counter` keyed by reason (see :func:`reason_of`,
    plus ``unprotected``, ``not-authorized`` and ``bad-option`` for refusals above the
    security layer); ``last`` is the most recent rejection, for a quick look.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.last: Rejection | None = None

    def record(self, rejection: Rejection) -> None:
        self.counts[rejection.reason] += 1
        self.last = rejection
        log.info("%s", rejection)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return ", ".join(f"{reason} {n}" for reason, n in self.counts.most_common())


class VerificationFailures:
    """Responses to one operation that were discarded because they did not verify."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()

    def add(self, response: Message, exc: BaseException) -> None:
        self.reasons[str(exc) or type(exc).__name__] += 1
        log.info("discarding response from %s: %s", response.remote, exc)

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def summary(self) -> str:
        """E.g. ``2 responses failed verification: pairwise decryption failed (2)``."""
        n = self.count
        why = "; ".join(
            reason if times == 1 else f"{reason} ({times})"
            for reason, times in self.reasons.most_common()
        )
        return f"{n} response{'s' if n != 1 else ''} failed verification: {why}"

    def explain(self, message: str) -> str:
        """``message`` with the summary appended when anything was discarded."""
        return f"{message}; {self.summary()}" if self else message
