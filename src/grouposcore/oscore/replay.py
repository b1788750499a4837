"""Replay protection: the sliding window of RFC 8613 §7.4 (RFC 4303 style).

Checking and updating are separate steps on purpose: a message is checked first and the
window is only updated after it fully verified, so a forged or broken message never moves
the window. A window can be *invalid* (RFC 10021 §2.6.1.2: e.g. a Recipient Context created
after another one was deleted, or after a reboot); it accepts nothing until it is
re-initialised from a message proven fresh (Echo).
"""

from __future__ import annotations

from grouposcore.errors import ReplayError

DEFAULT_WINDOW_SIZE = 32


class ReplayWindow:
    """Sliding window over sequence numbers; ``size`` >= 32 as RFC 8613 recommends."""

    __slots__ = ("_bitmap", "_top", "size", "valid")

    def __init__(self, size: int = DEFAULT_WINDOW_SIZE, *, valid: bool = True) -> None:
        if size < 1:
            raise ValueError("replay window size must be positive")
        self.size = size
        self.valid = valid
        self._top = -1  # highest sequence number accepted so far
        self._bitmap = 0  # bit i set: (top - i) was received

    def is_fresh(self, seq: int) -> bool:
        """True if ``seq`` has not been seen and is not older than the window."""
        if seq > self._top:
            return True
        offset = self._top - seq
        if offset >= self.size:
            return False
        return not (self._bitmap >> offset) & 1

    def check(self, seq: int) -> None:
        if not self.valid:
            raise ReplayError("replay window is not initialised")
        if not self.is_fresh(seq):
            raise ReplayError(f"sequence number {seq} already received or too old")

    def update(self, seq: int) -> None:
        """Record ``seq`` as received (call only after the message verified)."""
        if seq > self._top:
            shift = seq - self._top
            # A jump past the window drops every bit: shifting first would build an integer
            # as wide as the jump (a Partial IV near 2**40 would ask for ~128 GiB).
            if shift >= self.size:
                self._bitmap = 1
            else:
                self._bitmap = ((self._bitmap << shift) | 1) & ((1 << self.size) - 1)
            self._top = seq
        elif self._top - seq < self.size:
            self._bitmap |= 1 << (self._top - seq)

    def initialize_from(self, seq: int) -> None:
        """Make the window valid with ``seq`` as its lower limit and mark ``seq`` received.

        Used after an Echo exchange proved ``seq`` fresh (RFC 10021 §9 step 6): everything
        at or below it is treated as old.
        """
        self._top = seq
        self._bitmap = (1 << self.size) - 1
        self.valid = True

    def reset(self) -> None:
        """A brand new, valid window (new Security Context: lower limit 0)."""
        self._top = -1
        self._bitmap = 0
        self.valid = True

    @property
    def highest(self) -> int:
        return self._top

    def __repr__(self) -> str:
        state = "valid" if self.valid else "invalid"
        return f"<ReplayWindow {state} top={self._top} size={self.size}>"
