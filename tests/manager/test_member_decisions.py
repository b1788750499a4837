"""The member's decisions without an event loop: which installed context verifies a response,
who may send what, when to renew the Sender ID, which installation a material is, what a
notification makes the member do; and the installed contexts across rekeyings and their
grace time (grouposcore.manager.member_decisions, grouposcore.manager.member_contexts)."""

from __future__ import annotations

import dataclasses
from typing import NoReturn

import cbor2
import pytest

from grouposcore.cose import Credential, signature_by_id
from grouposcore.errors import ContextNotFound, RoleNotAuthorized
from grouposcore.manager.member import GroupKeyingMaterial, PeerInfo, group_context
from grouposcore.manager.member_contexts import MemberContexts
from grouposcore.manager.member_decisions import (
    Installed,
    InstallKind,
    NotificationStep,
    authorize,
    in_grace,
    install_kind,
    notification_step,
    renewal_due,
    renewal_near,
    renewal_threshold,
    response_contexts,
    same_keys,
    without_credential,
)
from grouposcore.manager.params import Param, Role, tperm
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.security import ServerSecurity

REQUESTER = tperm([Role.REQUESTER])
RESPONDER = tperm([Role.RESPONDER])


def credential(name: str) -> bytes:
    """A real CCS (a context preloads its peers' credentials)."""
    alg = signature_by_id(-8)
    return Credential.build_ccs(alg.generate_private_key().public_key(), alg.id, name).raw


def material(
    gid: bytes = b"\x11",
    *,
    num: int = 0,
    sid: bytes | None = None,
    peers: dict[bytes, PeerInfo] | None = None,
    secret: bytes = b"\x01" * 16,
) -> GroupKeyingMaterial:
    """Monitor-style material (no own key needed to build its context)."""
    return GroupKeyingMaterial(
        group="g", master_secret=secret, master_salt=b"\x02" * 8, gid=gid, hkdf_alg=5,
        aead_alg=10, group_enc_alg=10, sign_alg=-8, sign_params=None, ecdh_alg=None,
        ecdh_params=None, cred_fmt=14, gm_credential=b"", sender_id=sid, roles=8, num=num,
        exp=None, peers=peers or {},
    )  # fmt: skip


def installed(m: GroupKeyingMaterial, retire_at: float | None = None) -> Installed:
    return Installed(group_context(m), m, retire_at)


# --- same keys, installation kind, own credential ------------------------------------------


def test_same_keys_is_the_common_context_not_the_version_or_sender_id() -> None:
    a = material(num=1, sid=None)
    assert same_keys(a, material(num=7, sid=b"\x05"))
    assert not same_keys(a, material(gid=b"\x12"))
    assert not same_keys(a, material(secret=b"\x09" * 16))
    assert not same_keys(a, dataclasses.replace(a, master_salt=b"\x03" * 8))


def test_install_kind_tells_rekeying_renewal_and_peer_update_apart() -> None:
    old = material(num=3, sid=b"\x01")
    assert install_kind(None, old) is InstallKind.NEW_CONTEXT
    assert install_kind(old, material(gid=b"\x12", num=4, sid=b"\x01")) is InstallKind.NEW_CONTEXT
    assert install_kind(old, material(num=3, sid=b"\x02")) is InstallKind.NEW_SENDER_ID
    # another version under the same keys: a new Sender Context, its numbers from the store
    assert install_kind(old, material(num=4, sid=b"\x01")) is InstallKind.NEW_SENDER_ID
    joined = material(num=3, sid=b"\x01", peers={b"\x07": PeerInfo(b"c7", REQUESTER)})
    assert install_kind(old, joined) is InstallKind.UPDATE_PEERS


def test_without_credential_drops_only_peers_holding_the_own_credential() -> None:
    peers = {b"\x01": PeerInfo(b"own", RESPONDER), b"\x02": PeerInfo(b"other", RESPONDER)}
    m = material(peers=peers)
    assert set(without_credential(m, b"own").peers) == {b"\x02"}
    assert without_credential(m, None) is m
    assert without_credential(m, b"nobody") is m


# --- grace time and responses ---------------------------------------------------------------


def test_in_grace_keeps_only_contexts_whose_grace_time_is_still_running() -> None:
    running = installed(material(b"\x01"), retire_at=10.0)
    over = installed(material(b"\x02"), retire_at=5.0)
    assert in_grace([running, over], now=5.0) == [running]
    assert in_grace([running, over], now=10.0) == []


def test_response_to_a_request_under_the_old_context_tries_it_first_then_the_current() -> None:
    old = installed(material(b"\x01"), retire_at=10.0)
    current = installed(material(b"\x02", num=1))
    assert response_contexts(current, [old], old.context, None) == ([old, current], False)
    assert response_contexts(current, [old], current.context, None) == ([current], False)
    # a kid context names the Gid: only that context is tried
    assert response_contexts(current, [old], old.context, b"\x02") == ([current], False)
    assert response_contexts(current, [old], old.context, b"\x01") == ([old], False)


def test_response_to_a_request_whose_context_was_retired_says_so() -> None:
    retired = group_context(material(b"\x01"))
    current = installed(material(b"\x02", num=1))
    assert response_contexts(current, [], retired, None) == ([current], True)
    with pytest.raises(ContextNotFound):
        response_contexts(None, [], retired, None)


# --- roles ----------------------------------------------------------------------------------


def test_requests_only_from_requesters_and_responses_only_from_responders() -> None:
    peers = {b"\x01": PeerInfo(b"c1", REQUESTER), b"\x02": PeerInfo(b"c2", RESPONDER)}
    authorize(peers, b"\x01", is_request=True)
    authorize(peers, b"\x02", is_request=False)
    with pytest.raises(RoleNotAuthorized, match="not a Requester"):
        authorize(peers, b"\x02", is_request=True)
    with pytest.raises(RoleNotAuthorized, match="not a Responder"):
        authorize(peers, b"\x01", is_request=False)


def test_a_sender_of_unknown_roles_is_left_to_the_credential_provider() -> None:
    authorize({}, b"\x09", is_request=True)
    authorize({b"\x03": PeerInfo(b"c3", 0)}, b"\x03", is_request=False)


# --- renewing the Sender ID -----------------------------------------------------------------


def test_renewal_is_near_only_within_one_reservation_step_of_the_threshold() -> None:
    threshold = renewal_threshold(1000, 0.75)
    assert threshold == 750
    assert not renewal_near(685, 64, threshold)
    assert renewal_near(686, 64, threshold)  # its next reservation may reach 750


def test_renewal_counts_the_numbers_used_and_what_any_process_reserved() -> None:
    assert renewal_due(750, 750, None)  # reached by the numbers used
    assert not renewal_due(700, 750, 749)
    assert renewal_due(700, 750, 750)  # reserved up to the threshold (maybe by another run)
    assert not renewal_due(700, 750, None)


# --- notifications --------------------------------------------------------------------------


def test_only_a_rekeying_one_version_ahead_is_installed_from_a_notification() -> None:
    current = material(num=4)
    rekeying = cbor2.dumps({Param.STALE_NODE_IDS: [b"\x05"]})
    plain = cbor2.dumps({Param.NUM: 5})
    assert notification_step(current, material(num=5), rekeying) is NotificationStep.INSTALL
    assert notification_step(current, material(num=5), plain) is NotificationStep.CATCH_UP
    assert notification_step(current, material(num=6), rekeying) is NotificationStep.CATCH_UP
    assert notification_step(current, material(num=4), plain) is NotificationStep.INSTALL


# --- the installed contexts -----------------------------------------------------------------


def held(server: ServerSecurity) -> list[bytes]:
    return sorted(c.gid for c in server.contexts if isinstance(c, GroupContext))


def never(*_: object) -> NoReturn:
    raise AssertionError("this installation must not build that context")


def test_a_rekeying_keeps_the_old_context_for_responses_during_the_grace_time() -> None:
    ctxs = MemberContexts(grace=10.0)
    server = ServerSecurity()
    ctxs.attach(server)
    first = material(b"\x01", peers={b"\x07": PeerInfo(credential("p7"), RESPONDER)})
    assert (
        ctxs.install(first, 0.0, fresh=lambda: group_context(first), renewed=never)
        is InstallKind.NEW_CONTEXT
    )
    old = ctxs.current
    assert old is not None
    second = material(b"\x02", num=1)  # peer 7 went stale with the rekeying
    assert (
        ctxs.install(second, 1.0, fresh=lambda: group_context(second), renewed=never)
        is InstallKind.NEW_CONTEXT
    )
    assert held(server) == [b"\x02"]  # requests only under the current context
    assert b"\x07" not in old.context.recipients and not old.material.peers
    assert ctxs.for_response(old.context, None, 10.9)[0] == [old, ctxs.current]
    order, retired = ctxs.for_response(old.context, None, 11.0)  # grace over
    assert order == [ctxs.current] and retired and ctxs.previous == []


def test_a_new_sender_id_under_the_same_keys_keeps_the_recipient_contexts() -> None:
    ctxs = MemberContexts(grace=5.0)
    first = material(sid=None, peers={b"\x07": PeerInfo(credential("p7"), RESPONDER)})
    ctxs.install(first, 0.0, fresh=lambda: group_context(first), renewed=never)
    renewed_with: list[GroupContext] = []

    def renewed(old_context: GroupContext) -> GroupContext:
        renewed_with.append(old_context)
        return group_context(first)

    old = ctxs.current
    assert old is not None
    second = dataclasses.replace(first, roles=8, num=0, sender_id=b"\x09", peers={})
    kind = ctxs.install(second, 1.0, fresh=never, renewed=renewed)
    assert kind is InstallKind.NEW_SENDER_ID and renewed_with == [old.context]
    assert ctxs.current is not None and b"\x07" not in ctxs.current.context.recipients


def test_ending_the_membership_empties_every_server() -> None:
    ctxs = MemberContexts(grace=5.0)
    server = ServerSecurity()
    a, b = material(b"\x01"), material(b"\x02", num=1)
    ctxs.install(a, 0.0, fresh=lambda: group_context(a), renewed=never)
    ctxs.attach(server)
    ctxs.install(b, 1.0, fresh=lambda: group_context(b), renewed=never)
    ctxs.end()
    assert held(server) == [] and ctxs.previous == []
    late = ServerSecurity()
    ctxs.attach(late, active=False)
    assert held(late) == []
