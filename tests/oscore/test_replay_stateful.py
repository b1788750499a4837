"""Stateful property test of the OSCORE replay window (RFC 8613 §7.4) against a reference.

The reference is :class:`tests.model.world.ModelWindow`, the group model's own statement of
what a receiver must remember: a set of every sequence number accepted, a lower limit set
by Echo, and the window rule (fresh = above the limit, not seen, and within ``size`` of the
highest seen). Hypothesis interleaves checks (followed by the update, as the OSCORE layer
does once a message verified), rejected checks, Echo initialisation, resets and
invalidation; a rejected check must leave the window exactly as it was.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from grouposcore.errors import ReplayError
from grouposcore.oscore.replay import ReplayWindow
from tests.model import world
from tests.model.world import ModelWindow

#: numbers near the top of the window, plus jumps well past it (kept moderate: the
#: bitmap shift costs memory in proportion to the jump)
SEQS = st.one_of(st.integers(0, 80), st.integers(0, 5000))


class ReplayMachine(RuleBasedStateMachine):
    @initialize(valid=st.booleans())
    def setup(self, valid: bool) -> None:
        self.window = ReplayWindow(world.WINDOW, valid=valid)
        self.model = ModelWindow(valid)

    def _snapshot(self) -> tuple[int, int, bool]:
        return self.window._top, self.window._bitmap, self.window.valid

    @rule(seq=SEQS)
    def receive(self, seq: int) -> None:
        """A message with ``seq`` arrives: accepted (and recorded) exactly when fresh."""
        fresh = self.model.fresh(seq)
        before = self._snapshot()
        try:
            self.window.check(seq)
        except ReplayError:
            assert not fresh, f"fresh {seq} rejected"
            assert self._snapshot() == before, "a rejected check changed the window"
            return
        assert fresh, f"replayed or too old {seq} accepted"
        self.window.update(seq)
        self.model.accept(seq)

    @rule(seq=SEQS)
    def verification_fails(self, seq: int) -> None:
        """The check passes but the message does not verify: no update, nothing changes."""
        before = self._snapshot()
        try:
            self.window.check(seq)
        except ReplayError:
            pass
        assert self._snapshot() == before

    @rule(seq=SEQS)
    def echo_proves_fresh(self, seq: int) -> None:
        self.window.initialize_from(seq)
        self.model.initialise(seq)

    @rule()
    def new_context(self) -> None:
        self.window.reset()
        self.model = ModelWindow(True)

    @rule()
    def invalidated(self) -> None:
        self.window.valid = False
        self.model.valid = False

    @invariant()
    def agrees_with_the_reference(self) -> None:
        assert self.window.valid == self.model.valid
        top = max(self.model.seen, default=-1)
        assert self.window.highest == max(top, self.model.floor)
        if self.model.valid:
            for seq in range(max(0, self.window.highest - 40), self.window.highest + 3):
                assert self.window.is_fresh(seq) == self.model.fresh(seq), seq


ReplayMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestReplayWindowStateful = ReplayMachine.TestCase


def test_window_size_matches_the_model() -> None:
    assert ReplayWindow().size == world.WINDOW


@pytest.mark.parametrize("seq", [0, 31, 32, 100])
def test_initialised_window_rejects_everything_up_to_the_proven_number(seq: int) -> None:
    w = ReplayWindow(valid=False)
    w.initialize_from(seq)
    assert not any(w.is_fresh(s) for s in range(seq + 1))
    assert w.is_fresh(seq + 1)
