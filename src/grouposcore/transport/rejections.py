"""What the client discarded and why, free of I/O.

A response that fails verification is discarded and the exchange keeps waiting (RFC 8613
§8.4): one forged datagram must not end it. What was discarded is kept in
:class:`VerificationFailures`, so that a timeout can say why nothing usable arrived.
"""

from __future__ import annotations

import logging
from collections import Counter

from grouposcore.coap import Message

__all__ = ["VerificationFailures"]

log = logging.getLogger("grouposcore.security")


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
