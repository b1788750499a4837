"""The shrunk counterexamples the group model found, replayed as regression tests.

Each replays one shrunk sequence of model steps and asserts that no invariant is violated.
A bug listed in KNOWN_BUG_RULES is replayed as a strict xfail: a fix turns it into an
unexpected pass (then delete the mark and the entry). The Echo-after-answer finding is
covered in the transport (tests/wire/test_forged_responses.py), which the model does not run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.model.test_group_model import GroupModel

Steps = Callable[[GroupModel], None]


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, bool], GroupModel]]:
    made: list[GroupModel] = []

    def make(rule: str, backward: bool) -> GroupModel:
        monkeypatch.setenv("GROUPOSCORE_MODEL_ENABLE", rule)
        m = GroupModel()
        made.append(m)
        m.setup(backward=backward)
        return m

    yield make
    for m in made:
        m.teardown()


def test_sender_id_renewal_keeps_replay_windows(model: Callable[[str, bool], GroupModel]) -> None:
    m = model("renew_sender_id", False)
    m.group_request_held(i=0)  # a's group request, held by the network
    m.deliver(k=0)  # b, c and mon deliver it
    m.renew_sender_id(i=1)  # b gets a new Sender ID
    m.deliver(k=0)  # the same datagram again
    assert not m.violations, m.violations


def test_rejoin_after_total_state_loss_rekeys_so_a_replay_is_not_delivered_again(
    model: Callable[[str, bool], GroupModel],
) -> None:
    """Found by the model: a member that lost RAM and disk joined again under the same Gid
    (no backward security) with valid replay windows, and delivered a captured request a
    second time. The GM now rekeys on the re-join of a current member."""
    m = model("rejoin_without_rekey", False)
    assert m.gm is not None
    num = m.gm.group("g").num  # type: ignore[union-attr]
    m.group_request_held(i=0)
    m.deliver(k=0)
    m.lose_disk_and_rejoin(i=1)  # b loses RAM and disk and joins again: new keys
    assert m.gm.group("g").num == num + 1  # type: ignore[union-attr]
    m.deliver(k=0)
    assert not m.violations, m.violations


def test_a_refused_rejoin_leaves_the_node_down_until_it_may_join(
    model: Callable[[str, bool], GroupModel],
) -> None:
    """Beyond its join budget a node that lost its disk is refused (5.03) and stays
    down, still a member at the GM, with no keys; its later join after the wait rekeys."""
    m = model("rejoin_without_rekey", False)
    assert m.gm is not None
    m.lose_disk_and_rejoin(i=1)  # b (the budget: 2 joins at once, its first one included)
    num = m.gm.group("g").num  # type: ignore[union-attr]
    m.lose_disk_and_rejoin(i=1)
    b = m.nodes["b"]
    assert not b.alive and b.kept_context is None and "b" in m._members()
    assert m.gm.group("g").num == num  # type: ignore[union-attr]
    m.group_request(i=0, route=True, observe=False)  # the others go on
    m.time_passes(60.0)
    m.join(i=0)  # b, the only node down
    assert b.alive and m.gm.group("g").num == num + 1  # type: ignore[union-attr]
    m.group_request(i=0, route=True, observe=False)
    assert not m.violations, m.violations


def test_notifications_after_a_rekeying_are_accepted(
    model: Callable[[str, bool], GroupModel],
) -> None:
    m = model("notify_across_rekey", True)
    m.pairwise_request(i=0, j=0, route=True, observe=True)  # a observes b
    m.notify(i=0, j=0, route=True)
    m.rekey()
    m.notify(i=0, j=0, route=True)  # b's Partial IVs start again at 0 under the new Gid
    assert not m.violations, m.violations


def test_context_loaded_from_a_state_file_refuses_replays(
    model: Callable[[str, bool], GroupModel],
) -> None:
    m = model("one_shot_tool", True)
    m.group_request_held(i=0)
    m.deliver(k=0)  # b delivers and answers without a Partial IV
    m.one_shot_tool(i=1, k=0)  # a tool on b's state file gets the replay
    assert not m.violations, m.violations


def test_a_lagging_member_renews_its_sender_id_under_the_current_gid(
    model: Callable[[str, bool], GroupModel],
) -> None:
    """Found by the long run: a member that missed rekeyings renewed its Sender ID and paired
    the new ID (unique under the GM's current Gid) with its old Gid, where another member
    had used it: its answers then failed verification at a peer on that old Gid."""
    m = model("renew_sender_id", True)
    m.group_request_held(i=0)
    m.join(i=0)
    m.group_request_held(i=2)
    for _ in range(3):
        m.rekey()
    m.deliver(k=0)
    m.lose_notifications(i=0)
    m.renew_sender_id(i=2)
    m.group_request_held(i=0)
    m.lose_notifications(i=0)
    m.deliver(k=0)
    for _ in range(4):
        m.rekey()
    m.deliver(k=0)
    for _ in range(3):
        m.rekey()
    m.renew_sender_id(i=1)
    for _ in range(3):
        m.rekey()
    m.deliver(k=2)
    assert not m.violations, m.violations


def test_a_notification_never_goes_to_a_new_holder_of_the_observers_sender_id(
    model: Callable[[str, bool], GroupModel],
) -> None:
    """Found by a long run: the observer left and its Sender ID was handed out again after
    the rekeying; the server's next pairwise notification must not be protected for the
    new holder of that Sender ID: the observation ends with the observer's membership."""
    m = model("renew_sender_id", False)
    m.pairwise_request(i=0, j=0, observe=False, route=False)
    m.pairwise_request(i=0, j=0, observe=True, route=True)
    m.remove(evict=False, i=0)
    m.join(i=0)
    m.group_request(i=0, observe=False, route=True)
    m.notify(i=0, j=0, route=False)
    assert not m.violations, m.violations
    assert not m.nodes["b"].observations
