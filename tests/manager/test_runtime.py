"""GroupMember over real UDP on 127.0.0.1: join, group traffic, rekeying, roles, restarts."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from grouposcore.coap import Code, Message
from grouposcore.errors import (
    ContextNotFound,
    FreshnessRequired,
    GroupOscoreError,
    ModeNotSupported,
    OscoreError,
    ProtectionError,
    ReplayError,
    RequestTimeout,
    RoleNotAuthorized,
)
from grouposcore.manager import member as mb
from grouposcore.manager import member_state as ms
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.core import GroupManager
from grouposcore.manager.fetchlimit import FetchLimiter
from grouposcore.manager.params import Role, tperm
from grouposcore.manager.runtime import context_from_state_file
from grouposcore.manager.service import GroupManagerService
from grouposcore.oscore.common import ResponseInfo
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.option import decode_option
from grouposcore.oscore.security import ClientSecurity, VerifiedMessage
from tests.manager.helpers import RS, Harness
from tests.manager.runtime_net import Net, Peer, get, run, start_net


def _sid(p: Peer) -> bytes:
    sid = p.member.sender_id
    assert sid is not None
    return sid


async def _ask(
    src: Peer, dst: Peer, *, pairwise: bool = False, payload: bytes = b"", timeout: float = 5
) -> bytes:
    """One request from ``src`` to ``dst`` through the endpoints; the response must verify
    as coming from ``dst`` in the expected mode."""
    sec = src.member.client_security(pairwise_with=_sid(dst) if pairwise else None)
    msg = get("light", payload, Code.POST if payload else Code.GET)
    resp = await src.endpoint.request(msg, dst.address, timeout=timeout, security=sec)
    assert isinstance(resp, VerifiedMessage) and resp.security is not None
    assert resp.security.sender_id == _sid(dst)
    if resp.code == Code.CONTENT or resp.code == Code.CHANGED:
        return resp.payload
    raise AssertionError(f"unexpected {resp.code}")


def _net_test(tmp_path: Path, body, **group_kw) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        net = await start_net(tmp_path, **group_kw)
        try:
            await body(net)
        finally:
            await net.close()

    run(main())


def test_three_members_join_and_talk(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        a, b, c = [await net.member(n) for n in ("a", "b", "c")]
        assert a.member.started == b.member.started == c.member.started == "joined"
        sids = {_sid(p) for p in (a, b, c)}
        assert len(sids) == 3
        num = net.gm.store.group("g").num  # type: ignore[union-attr]
        for p in (a, b, c):
            await p.member.wait_for(num)
            assert p.member.material.num == num
        for src in (a, b, c):
            for dst in (a, b, c):
                if src is dst:
                    continue
                assert await _ask(src, dst) == dst.name.encode()
                assert await _ask(src, dst, pairwise=True, payload=b"on") == (
                    dst.name.encode() + b":on"
                )
        assert all(len(p.light.requests) == 4 for p in (a, b, c))
        # Every member knows every other's credential and roles from the GM.
        assert a.member.peer_roles(_sid(b)) == tperm(RS)
        for p in (a, b, c):
            for path in (net.state(p.name), Path(str(net.state(p.name)) + ".seq")):
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    _net_test(tmp_path, body)


def test_forward_security_after_eviction(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        a, b, c = [await net.member(n) for n in ("a", "b", "c")]
        old_c = c.member.context
        num = net.gm.store.group("g").num  # type: ignore[union-attr]
        net.svc.evict("g", "c")
        await a.member.wait_for(num + 1)
        await b.member.wait_for(num + 1)
        await c.member.wait_terminated()
        assert not net.state("c").exists()
        assert _sid(c) not in a.member.material.peers
        with pytest.raises(ContextNotFound):
            c.member.context  # noqa: B018
        # New group traffic: c's old context can neither verify nor decrypt it.
        wire, _ = a.member.context.protect_request(get("light").copy(remote=b.address))
        with pytest.raises(OscoreError):
            old_c.unprotect_request(wire)
        assert await _ask(a, b) == b"b"
        # c's requests with the context it kept are refused, b's handler never runs.
        before = len(b.light.requests)
        with pytest.raises(RequestTimeout):  # group mode: refused in silence
            await c.endpoint.request(
                get("light"), b.address, timeout=1, security=ClientSecurity(old_c)
            )
        assert len(b.light.requests) == before

    _net_test(tmp_path, body)


def test_backward_security_for_a_late_joiner(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        recorded, _ = a.member.context.protect_request(get("light", b"secret", Code.POST))
        assert await _ask(a, b, payload=b"x") == b"b:x"
        num = a.member.material.num
        c = await net.member("c")  # backward security (default): the join rekeys
        assert c.member.material.num == num + 1
        await a.member.wait_for(num + 1)
        await b.member.wait_for(num + 1)
        with pytest.raises(OscoreError):
            c.member.context.unprotect_request(recorded)
        # The rekeying told a and b about c, and c got their credentials at join.
        assert _sid(c) in a.member.material.peers and _sid(c) in b.member.material.peers
        assert await _ask(c, a) == b"a"
        assert await _ask(a, c, pairwise=True, payload=b"y") == b"c:y"

    _net_test(tmp_path, body)


def test_offline_member_catches_up_after_two_rekeyings(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        a, b, d = [await net.member(n) for n in ("a", "b", "d")]
        d_sid, num = _sid(d), d.member.material.num
        joined_at = net.gm.store.member("g", "d").joined_at  # type: ignore[union-attr]
        await d.member.close()  # offline: state kept, no longer following
        net.svc.evict("g", "b")
        net.svc.rekey("g")
        await a.member.wait_for(num + 2)
        d2 = await net.member("d")
        assert d2.member.started == "resumed"
        assert d2.member.material.num == num + 2 and _sid(d2) == d_sid
        assert _sid(b) not in d2.member.material.peers  # purged via /stale-sids
        assert set(d2.member.material.peers) == {_sid(a)}
        assert net.gm.store.member("g", "d").joined_at == joined_at  # type: ignore[union-attr]
        assert await _ask(a, d2) == b"d"
        assert await _ask(d2, a) == b"a"

    _net_test(tmp_path, body)


def test_catch_up_fetches_only_the_credentials_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running member that missed rekeyings (e.g. coalesced by the GM) keeps the peers that
    are not stale and asks the GM only for the others (get_creds with inclusion flag false):
    joiners of the missed versions become known, an evicted member is gone, and the
    credentials it already holds are not downloaded again."""
    asked: list[dict[bytes, object]] = []
    creds = GroupManagerClient.creds

    async def recording(self: GroupManagerClient, *args: Any, **kw: Any) -> Any:
        got = await creds(self, *args, **kw)
        asked.append(got)
        return got

    async def body(net: Net) -> None:
        a, b, d = [await net.member(n) for n in ("a", "b", "d")]
        assert set(d.member.material.peers) == {_sid(a), _sid(b)}
        num = d.member.material.num
        await d.member._stop_watch()  # d hears none of the next rekeyings
        c = await net.member("c")  # a join rekeys (backward security)
        net.svc.evict("g", "b")
        await a.member.wait_for(num + 2)
        monkeypatch.setattr(GroupManagerClient, "creds", recording)
        assert await d.member.refresh()
        assert d.member.material.num == num + 2
        assert set(d.member.material.peers) == {_sid(a), _sid(c)}
        assert [set(got) for got in asked] == [{_sid(c)}]
        assert await _ask(d, c) == b"c" and await _ask(c, d) == b"d"

    _net_test(tmp_path, body)


def test_restart_from_state_without_join_never_reuses_sequence_numbers(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        a, b = [await net.member(n, sequence_step=4) for n in ("a", "b")]
        for _ in range(6):
            assert await _ask(a, b) == b"b"
        used = a.member.context.sequence.peek()
        assert len(b.light.requests) == 6
        record = net.gm.store.member("g", "a")
        await a.member.close()
        a2 = await net.member("a", sequence_step=4)
        assert a2.member.started == "resumed"
        assert net.gm.store.member("g", "a") == record  # no new join
        assert _sid(a2) == _sid(a)
        first = a2.member.context.sequence.peek()
        assert first >= used  # resumes at or past the durable reservation
        assert await _ask(a2, b) == b"b"
        # b's replay window for a holds the old numbers: the new one was accepted as new.
        rc = b.member.context.recipients[_sid(a)]
        assert rc.replay_window.valid
        # b restarts too: its windows start invalid, so a's next request meets an Echo
        # challenge and is repeated once; then it goes through.
        await b.member.close()
        b2 = await net.member("b", sequence_step=4)
        assert b2.member.started == "resumed"
        assert not b2.member.context.replay_windows_valid
        assert await _ask(a2, b2) == b"b"
        assert len(b2.light.requests) == 1 and b2.light.requests[0].options.echo is not None

    _net_test(tmp_path, body)


def test_roles_monitor_and_responder_only(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        r = await net.member("r", [Role.REQUESTER])
        s = await net.member("s", [Role.RESPONDER])
        both = await net.member("x", RS)
        m = await net.member("m", [Role.MONITOR])
        await r.member.wait_for(m.member.material.num)
        assert m.member.sender_id is None
        # A Monitor has no Sender ID, and its member refuses to protect requests.
        with pytest.raises(RoleNotAuthorized):
            m.member.client_security().protect_request(get("light"))
        with pytest.raises(ModeNotSupported):
            ClientSecurity(m.member.context).protect_request(get("light"))
        # The monitor still reads group-mode requests of Requesters.
        wire, _ = r.member.context.protect_request(get("light", b"hi", Code.POST))
        plain, _ = m.member.context.unprotect_request(wire)
        assert plain.payload == b"hi"
        # Requests from a Responder-only member are refused by the others, before any
        # replay state changes; the handler never runs.
        with pytest.raises(RoleNotAuthorized):
            s.member.client_security().protect_request(get("light"))
        rogue = ClientSecurity(s.member.context)
        with pytest.raises(RequestTimeout):  # group mode: refused in silence
            await s.endpoint.request(get("light"), both.address, timeout=1, security=rogue)
        assert both.light.requests == []
        wire, _ = s.member.context.protect_request(get("light"))
        rc = both.member.context.recipients.get(_sid(s))
        window_before = None if rc is None else repr(rc.replay_window)
        with pytest.raises(RoleNotAuthorized):
            both.endpoint.server_security.unprotect_request(wire)  # type: ignore[union-attr]
        rc = both.member.context.recipients.get(_sid(s))
        assert (None if rc is None else repr(rc.replay_window)) == window_before
        # Responses are accepted only from Responders: s answers fine. r, a Requester only,
        # takes no requests through its member; a response it makes anyway is refused.
        assert await _ask(both, s) == b"s"
        with pytest.raises(RequestTimeout):  # group mode: refused in silence
            await both.endpoint.request(
                get("light"), r.address, timeout=1, security=both.member.client_security()
            )
        assert r.light.requests == []
        sec = both.member.client_security()
        wire, binding = sec.protect_request(get("light"))
        _, served = r.member.context.unprotect_request(wire)
        answer = r.member.context.protect_response(get("x").copy(code=Code.CONTENT), served)
        with pytest.raises(RoleNotAuthorized):
            sec.unprotect_response(answer, binding)
        assert not binding.trackers  # refused before any response state changed

    _net_test(tmp_path, body)


def test_unknown_sender_credential_fetched_on_the_fly(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        a = await net.member("a")
        b = await net.member("b")  # no rekeying on join: a has not heard of b
        assert _sid(b) not in a.member.material.peers
        assert a.member.material.num == b.member.material.num
        # a holds b's first request while it fetches b's credential from the GM, then
        # verifies and answers it (before, it was refused in silence and b had to retry)
        assert await _ask(b, a, timeout=5) == b"a"
        assert len(a.light.requests) == 1
        await a.member.wait_fetches()
        assert a.member.peer_roles(_sid(b)) == tperm(RS)
        assert await _ask(b, a) == b"a"
        # The fetched credential is persisted with the material.
        assert _sid(b) in ms.load_state(net.state("a")).material.peers

    _net_test(tmp_path, body, backward_security=False)


def test_leave_and_rekey_for_the_rest(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        num = a.member.material.num
        await b.member.leave()
        assert b.member.terminated and not net.state("b").exists()
        material = await a.member.wait_for(num + 1)
        assert material.peers == {}
        assert [m.node for m in net.gm.members("g")] == ["a"]

    _net_test(tmp_path, body)


def test_in_flight_exchange_across_a_rekeying(tmp_path: Path) -> None:
    """A request verified before a rekeying is answered under the new context; a response
    under the old context still verifies during the grace time, and not after it."""
    now = [1000.0]

    def clock() -> float:
        return now[0]

    async def body(net: Net) -> None:
        a, b = [await net.member(n, clock=clock, grace=10.0) for n in ("a", "b")]
        a_sec, b_sec = a.member.client_security(), b.endpoint.server_security
        assert b_sec is not None
        num = a.member.material.num
        wire1, binding1 = a_sec.protect_request(get("light"))
        wire2, binding2 = a_sec.protect_request(get("light"))
        _, server1 = b_sec.unprotect_request(wire1)  # type: ignore[misc]
        _, server2 = b_sec.unprotect_request(wire2)  # type: ignore[misc]
        old_gid = a.member.context.gid
        net.svc.rekey("g")
        await a.member.wait_for(num + 1)
        await b.member.wait_for(num + 1)
        # Old-context requests are no longer accepted.
        with pytest.raises(OscoreError):
            b_sec.unprotect_request(wire1)
        # b answers request 1 under the new context: fresh PIV, new Gid as kid context.
        resp = b_sec.protect_response(get("x").copy(code=Code.CONTENT), server1)
        opt = decode_option(resp.options.oscore or b"")
        assert opt.kid_context == b.member.context.gid != old_gid and opt.piv is not None
        assert a_sec.unprotect_response(resp, binding1).code == Code.CONTENT
        # A response protected with the old context verifies during the grace time only.
        old_resp = server2.context.protect_response(  # type: ignore[attr-defined]
            get("x").copy(code=Code.CONTENT), server2
        )
        now[0] += 5
        assert a_sec.unprotect_response(old_resp, binding2).code == Code.CONTENT
        now[0] += 6
        with pytest.raises(ContextNotFound, match="retired"):
            a_sec.unprotect_response(old_resp, binding2)

    _net_test(tmp_path, body)


def test_newer_material_without_stale_ids_triggers_catch_up(tmp_path: Path) -> None:
    """A rekeying the member never got pushed (here: made on the GM without notifying)
    reaches it as a plain rendering, without stale IDs: through the Observe registration
    answer, or by polling. Either way it catches up over /stale-sids and /creds."""

    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        poller = await net.member("p", follow=False, poll_interval=0.2)
        c = await net.member("c", follow=True)
        num = c.member.material.num
        assert {_sid(b), _sid(poller)} <= set(c.member.material.peers)
        net.gm.evict("g", "b")  # no notifications delivered; c has not registered yet
        material = await c.member.wait_for(num + 1)
        assert _sid(b) not in material.peers and _sid(a) in material.peers
        material = await poller.member.wait_for(num + 1)
        assert _sid(b) not in material.peers and _sid(c) in material.peers
        assert await _ask(poller, c) == b"c"

    _net_test(tmp_path, body)


def test_new_sender_id_and_role_change(tmp_path: Path) -> None:
    """A renewed Sender ID starts a new context (sequence numbers from 0 under new keys);
    peers learn the new ID's credential on the fly. Restarting with other roles re-joins
    with the same key."""

    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        old_sid, cred = _sid(b), b.member.context.credential
        assert await _ask(b, a) == b"a"
        new_sid = await b.member.renew_sender_id()
        assert new_sid is not None and new_sid != old_sid
        assert b.member.context.sender_id == new_sid and b.member.context.sequence.peek() == 0
        # a learns the new ID's credential from the GM while it holds the request
        assert await _ask(b, a, timeout=5) == b"a"
        await a.member.wait_fetches()
        assert await _ask(b, a) == b"a"
        await b.member.close()
        b2 = await net.member("b", [Role.REQUESTER])
        assert b2.member.started == "joined" and b2.member.roles == tperm([Role.REQUESTER])
        assert b2.member.context.credential == cred
        record = net.gm.store.member("g", "b")
        assert record is not None and record.roles == tperm([Role.REQUESTER])

    _net_test(tmp_path, body)


def _info(sid: bytes) -> ResponseInfo:
    return ResponseInfo(sid, True, b"\x01")


def test_echo_retry_keeps_following_the_member(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        challenge = VerifiedMessage(Code.UNAUTHORIZED, security=_info(_sid(b)))
        challenge.options.echo = b"\x01\x02"
        answer = a.member.client_security().echo_retry(challenge, get("light"))
        assert answer is not None
        assert a.member.client_security().echo_retry(challenge, answer[0]) is None  # once only
        retry, sec = answer
        assert retry.options.echo == b"\x01\x02"
        assert type(sec).__name__ == "MemberClientSecurity" and sec.pairwise_with == _sid(b)
        net.svc.rekey("g")
        await a.member.wait_for(a.member.material.num + 1)
        assert sec.context is a.member.context  # still the member's current context

    _net_test(tmp_path, body)


def test_gm_restart_members_keep_up_by_polling(tmp_path: Path) -> None:
    """The GM process restarts (same database, same port): its observations are gone, so a
    member that also polls still learns the next rekeying; the GM's first answer on each
    channel goes through an Echo round trip (its replay windows start invalid)."""

    async def body(net: Net) -> None:
        a = await net.member("a", poll_interval=0.3)
        b = await net.member("b")
        num, port = b.member.material.num, net.gm_address[1]
        await a.member.wait_for(num)
        await net.svc.close()
        net.gm.close()
        net.gm = GroupManager(net.tmp / "gm.db")
        net.svc = GroupManagerService(net.gm)
        await net.svc.start(("127.0.0.1", port))
        net.svc.rekey("g")
        material = await a.member.wait_for(num + 1, timeout=10)
        assert material.gid == net.gm.store.group("g").gid  # type: ignore[union-attr]
        assert b.member.material.num == num  # observing only: it has not heard yet
        assert await b.member.refresh()
        assert await _ask(a, b) == b"b"

    _net_test(tmp_path, body)


def test_sender_id_renewal_keeps_replay_windows(tmp_path: Path) -> None:
    """RFC 10021 §2.6.3.1: a new Sender ID changes only the Sender Context. A request b sent
    before a renewed its Sender ID stays a replay for a afterwards."""

    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        await a.member.wait_for(b.member.material.num)
        wire, _ = b.member.context.protect_request(get("light", b"on", Code.POST))
        server = a.endpoint.server_security
        assert server is not None
        plain, _ = server.unprotect_request(wire)  # type: ignore[misc]
        assert plain.payload == b"on"
        assert await _ask(a, b, pairwise=True, payload=b"o") == b"b:o"  # derives pairwise keys
        window = a.member.context.recipients[_sid(b)].replay_window
        old_sid = _sid(a)
        assert await a.member.renew_sender_id() not in (None, old_sid)
        assert a.member.context.recipients[_sid(b)].replay_window is window
        with pytest.raises(ReplayError):
            server.unprotect_request(wire)
        assert await b.member.learn_peer(_sid(a))  # b learns a's new ID from the GM
        assert await _ask(b, a) == b"a"  # fresh requests still go through
        # Pairwise keys follow the new Sender ID (none cached from the old one).
        assert await _ask(a, b, pairwise=True, payload=b"p") == b"b:p"
        assert await _ask(b, a, pairwise=True, payload=b"q") == b"a:q"

    _net_test(tmp_path, body)


async def _delivered_once_then_closed(net: Net) -> tuple[Message, bytes, Peer]:
    """Members a and b; a delivers one request of b's and closes: the recorded request, a's
    Gid and b, for the tests of what a re-joined a accepts."""
    a, b = [await net.member(n) for n in ("a", "b")]
    assert await a.member.learn_peer(_sid(b))
    wire, _ = b.member.context.protect_request(get("light", b"on", Code.POST))
    server = a.endpoint.server_security
    assert server is not None
    server.unprotect_request(wire)  # delivered once
    gid = a.member.context.gid
    await a.member.close()
    return wire, gid, b


def test_rejoin_with_other_roles_rekeys_so_old_requests_do_not_verify(tmp_path: Path) -> None:
    """A member restarting with other roles joins again (its state file is for the old
    roles). The GM cannot tell that from a member that lost its state, so it rekeys the
    group on the re-join even without backward security: the re-joined member holds new
    keys, a request it delivered before does not verify, and the others follow."""

    async def body(net: Net) -> None:
        wire, gid, b = await _delivered_once_then_closed(net)
        net.gm.allow("a", "g", [Role.RESPONDER])
        a2 = await net.member("a", [Role.RESPONDER])
        assert a2.member.started == "joined" and a2.member.context.gid != gid
        server2 = a2.endpoint.server_security
        assert server2 is not None
        with pytest.raises(GroupOscoreError):
            server2.unprotect_request(wire)
        assert a2.light.requests == []
        await b.member.wait_for(a2.member.material.num)
        assert b.member.context.gid == a2.member.context.gid

    _net_test(tmp_path, body, backward_security=False)


def test_rejoin_without_rekeying_after_restart_starts_with_invalid_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth on the member's side: a Group Manager that does not rekey on a
    re-join (an older one, another implementation) answers it with the keys the member had.
    The member lost its replay state, so it must not accept requests sent before."""

    async def body(net: Net) -> None:
        wire, gid, _ = await _delivered_once_then_closed(net)
        # a GM without the rekeying on re-join (see test_core_join)
        monkeypatch.setattr(net.gm, "_rekey", lambda g, skip_node=None: (g, [], b""))
        net.gm.allow("a", "g", [Role.RESPONDER])
        a2 = await net.member("a", [Role.RESPONDER])
        assert a2.member.started == "joined" and a2.member.context.gid == gid
        server2 = a2.endpoint.server_security
        assert server2 is not None
        with pytest.raises(FreshnessRequired):
            server2.unprotect_request(wire)
        assert a2.light.requests == []

    _net_test(tmp_path, body, backward_security=False)


def test_response_under_new_context_without_kid_context_verifies(tmp_path: Path) -> None:
    """After a rekeying, a server answering an old-context request under the new context
    includes the new Gid only in its first response (§8.4); the later ones, without a kid
    context, must still verify: the client tries the current context too, and a failed try
    leaves no state behind."""

    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        a_sec, b_sec = a.member.client_security(), b.endpoint.server_security
        assert b_sec is not None
        wire, binding = a_sec.protect_request(get("light"))
        _, served = b_sec.unprotect_request(wire)  # type: ignore[misc]
        num = a.member.material.num
        net.svc.rekey("g")
        await a.member.wait_for(num + 1)
        await b.member.wait_for(num + 1)
        new = b.member.context
        first = b_sec.protect_response(get("x").copy(code=Code.CONTENT), served)
        assert decode_option(first.options.oscore or b"").kid_context == new.gid
        assert a_sec.unprotect_response(first, binding).code == Code.CONTENT
        # A later response: fresh PIV, no kid context, same request binding.
        later = dataclasses.replace(
            served, context=new, recipient=None, request_kid_context=new.gid, responses_sent=1
        )
        second = new.protect_response(get("x").copy(code=Code.VALID), later)
        assert decode_option(second.options.oscore or b"").kid_context is None
        assert a_sec.unprotect_response(second, binding).code == Code.VALID
        # The replay is refused: by the new context's Response Number, or (tried first) by
        # the request's own context, whose keys do not fit.
        with pytest.raises((ReplayError, ProtectionError)):
            a_sec.unprotect_response(second, binding)

    _net_test(tmp_path, body)


def test_unicast_request_to_a_known_member_defaults_to_pairwise(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        sec = a.member.client_security()
        # b's address is not known to a yet: group mode; the verified answer teaches it.
        first = await a.endpoint.request(get("light"), b.address, timeout=5, security=sec)
        assert isinstance(first, VerifiedMessage) and first.security is not None
        assert first.security.group_mode
        second = await a.endpoint.request(get("light"), b.address, timeout=5, security=sec)
        assert isinstance(second, VerifiedMessage) and second.security is not None
        assert not second.security.group_mode and second.security.sender_id == _sid(b)
        # A request b verified from a teaches b a's address the same way.
        back = await b.endpoint.request(
            get("light"), a.address, timeout=5, security=b.member.client_security()
        )
        assert isinstance(back, VerifiedMessage) and back.security is not None
        assert not back.security.group_mode
        # Explicitly group mode, or a group address: group mode.
        grp = await a.endpoint.request(
            get("light"), b.address, timeout=5, security=a.member.client_security(pairwise=False)
        )
        assert isinstance(grp, VerifiedMessage) and grp.security is not None
        assert grp.security.group_mode
        _, binding = sec.protect_request(get("light").copy(remote=("224.0.1.187", 5683)))
        assert binding.group_mode
        _, binding = sec.protect_request(get("light").copy(remote=b.address))
        assert not binding.group_mode and binding.intended_recipient == _sid(b)
        via_proxy = get("light").copy(remote=b.address)
        via_proxy.options.proxy_scheme = "coap"
        _, binding = sec.protect_request(via_proxy)
        assert binding.group_mode

    _net_test(tmp_path, body)


def _forged_request(net: Net, gid: bytes, kid: bytes) -> Any:
    """A group request under ``gid`` from an unknown Sender ID, by someone without the keys."""
    node = Harness(net.gm).node(f"x{kid.hex()}")
    ctx = GroupContext(
        b"\x42" * 16, gid, sender_id=kid, private_key=node.private_key, credential=node.credential
    )
    wire, _ = ctx.protect_request(get("light"))
    return wire


def test_forged_requests_from_unknown_sender_ids_cause_bounded_gm_fetches(
    tmp_path: Path,
) -> None:
    """An attacker who knows only the Gid cannot make a member query the GM once per forged
    datagram: a token bucket, an in-flight bound and a negative cache hold the fetches,
    and the counters say what happened."""
    now = [1000.0]

    def clock() -> float:
        return now[0]

    async def body(net: Net) -> None:
        limiter = FetchLimiter(rate=0.5, burst=3, clock=clock)
        a = await net.member("a", fetch_limiter=limiter)
        server = a.endpoint.server_security
        assert server is not None
        gid = a.member.context.gid
        forged = [_forged_request(net, gid, bytes([0xF0, i])) for i in range(40)]
        for wire in forged:
            with pytest.raises(OscoreError):
                server.unprotect_request(wire)
        await a.member.wait_fetches()
        stats = a.member.fetch_stats
        assert stats.fetches == 3 and stats.not_found == 3 and stats.rate_limited == 37
        # The same forged IDs again: the GM said it does not know them (negative cache).
        for wire in forged[:3]:
            with pytest.raises(OscoreError):
                server.unprotect_request(wire)
        assert stats.negative_hits == 3 and stats.fetches == 3
        now[0] += 4.0  # two tokens later: two more fetches, no more
        for wire in forged[3:]:
            with pytest.raises(OscoreError):
                server.unprotect_request(wire)
        await a.member.wait_fetches()
        assert stats.fetches == 5
        assert a.light.requests == []

    _net_test(tmp_path, body, backward_security=False)


def test_pairwise_request_to_a_renewed_sender_id_learns_it_from_the_gm(
    tmp_path: Path,
) -> None:
    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        assert await a.member.learn_peer(_sid(b))
        assert await _ask(a, b, pairwise=True, payload=b"1") == b"b:1"
        new_sid = await b.member.renew_sender_id()
        assert new_sid is not None and new_sid not in a.member.material.peers
        with pytest.raises(ContextNotFound, match="not known yet"):
            a.member.client_security(pairwise_with=new_sid).protect_request(get("light"))
        await a.member.wait_fetches()
        assert a.member.peer_roles(new_sid) == tperm(RS)
        assert await _ask(a, b, pairwise=True, payload=b"2") == b"b:2"
        # learn_peer waits for the answer (and is bounded the same way).
        newer = await b.member.renew_sender_id()
        assert newer is not None
        assert await a.member.learn_peer(newer)
        assert await _ask(a, b, pairwise=True, payload=b"3") == b"b:3"
        assert a.member.fetch_stats.found == 3

    _net_test(tmp_path, body, backward_security=False)


def test_sender_id_renewed_before_sequence_numbers_run_out(tmp_path: Path) -> None:
    """With the sequence-number space cut to 100 and renewal at half of it, the member asks
    the GM for a new Sender ID once 50 numbers are used, and again at start-up when the
    store already holds a reservation that far."""

    async def body(net: Net) -> None:
        a = await net.member("a")
        b = await net.member("b", sequence_limit=100, renew_at=0.5, sequence_step=1)
        first = _sid(b)
        sec = b.member.client_security()
        for _ in range(49):
            sec.protect_request(get("light"))
        assert _sid(b) == first and b.member._watch.renewing is None
        sec.protect_request(get("light"))  # the 50th number is taken: renewal starts
        assert b.member._watch.renewing is not None
        renewal = b.member._watch.renewing
        await renewal
        second = _sid(b)
        assert second != first and b.member.context.sequence.peek() == 0
        assert await a.member.learn_peer(second)
        assert await b.member.learn_peer(_sid(a))
        assert await _ask(b, a) == b"a"  # the new ID works
        # Restart with a reservation past the threshold already in the store.
        key = b.member.context.sequence.key
        await b.member.close()
        b.member.sequence_store.reserve(key, 60)
        b2 = await net.member("b", sequence_limit=100, renew_at=0.5, sequence_step=1)
        assert b2.member.started == "resumed"
        if b2.member._watch.renewing is not None:
            await b2.member._watch.renewing
        assert _sid(b2) not in (first, second)

    _net_test(tmp_path, body, backward_security=False)


def test_context_from_state_file_starts_with_invalid_windows(tmp_path: Path) -> None:
    """A one-shot tool loading a member's state file has no replay state: a request the
    member already delivered must not be delivered again through it."""

    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        await a.member.wait_for(b.member.material.num)
        wire, _ = b.member.context.protect_request(get("light"))
        a.member.context.unprotect_request(wire)
        loaded = context_from_state_file(net.state("a"))
        with pytest.raises(FreshnessRequired):
            loaded.unprotect_request(wire)

    _net_test(tmp_path, body)


def test_unicast_default_follows_a_peer_that_renewed_its_sender_id(tmp_path: Path) -> None:
    """Pairwise-by-address must not stick to a Sender ID the peer gave up: a response from
    another ID there sends the next request in group mode (which learns the new ID), and
    learning the new ID from the GM (same credential) moves the address to it at once."""

    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        await a.member.wait_for(b.member.material.num)

        async def mode(src: Peer, dst: Peer) -> bool:
            sec = src.member.client_security()
            resp = await src.endpoint.request(get("light"), dst.address, timeout=2, security=sec)
            assert isinstance(resp, VerifiedMessage) and resp.security is not None
            assert resp.security.sender_id == _sid(dst)
            return resp.security.group_mode

        assert await mode(a, b) is True  # learns b's address
        assert await mode(a, b) is False
        await b.member.renew_sender_id()
        with pytest.raises(GroupOscoreError):
            await mode(a, b)  # pairwise to the old ID: b answers under its new one
        with pytest.raises(RequestTimeout, match="failed verification: no credential"):
            await mode(a, b)  # group mode now; a asks the GM about b's new ID
        await a.member.wait_fetches()
        assert await mode(a, b) is True
        assert await mode(a, b) is False
        # The other way round (b knows a's address from a's verified requests): b learns
        # a's renewed ID from the GM before asking.
        assert await mode(b, a) is False
        await a.member.renew_sender_id()
        assert await b.member.learn_peer(_sid(a))
        assert await mode(b, a) is False

    _net_test(tmp_path, body)


def test_own_credential_under_an_old_sender_id_is_never_a_peer(tmp_path: Path) -> None:
    """After a renewal, a request this member sent under its old Sender ID, reflected back
    to it, must not be delivered, even if the GM (wrongly) still lists the old ID with the
    member's credential."""

    async def body(net: Net) -> None:
        a, b = [await net.member(n) for n in ("a", "b")]
        await a.member.wait_for(b.member.material.num)
        old_sid = _sid(a)
        wire, _ = a.member.context.protect_request(get("light"))
        await a.member.renew_sender_id()
        server = a.endpoint.server_security
        assert server is not None
        own = mb.PeerInfo(a.member.context.credential.raw, tperm(RS))  # type: ignore[union-attr]
        a.member._install(
            dataclasses.replace(a.member.material, peers={**a.member.material.peers, old_sid: own})
        )
        with pytest.raises(OscoreError):
            server.unprotect_request(wire)
        assert old_sid not in a.member.context.recipients
        assert a.light.requests == []

    _net_test(tmp_path, body)
