"""The Group Manager on loopback UDP: joins, pushed rekeyings, eviction, restart, contexts."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from grouposcore.coap import Code as CoapCode
from grouposcore.coap import Message
from grouposcore.cose import EDDSA, Credential
from grouposcore.errors import GroupManagerRequestError, MembershipTerminated, OscoreError
from grouposcore.manager import member as mb
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import Code, Role
from grouposcore.manager.service import GroupManagerService
from grouposcore.transport import Endpoint
from tests.manager.helpers import RS, Harness

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(guarded())


def _keys(name: str) -> tuple[Any, bytes]:
    key = EDDSA.generate_private_key()
    return key, Credential.build_ccs(key.public_key(), -8, name).raw


async def _clients(
    svc: GroupManagerService, names: tuple[str, ...], endpoints: list[Endpoint]
) -> dict[str, GroupManagerClient]:
    assert svc.endpoint is not None
    out = {}
    for n in names:
        ep = await Endpoint.create(("127.0.0.1", 0))
        endpoints.append(ep)
        out[n] = GroupManagerClient(ep, svc.endpoint.address, svc.commission(n))
    return out


def test_join_follow_leave_evict_over_oscore(tmp_path: Path) -> None:
    async def scenario() -> None:
        gm = GroupManager(tmp_path / "gm.db")
        svc = GroupManagerService(gm)
        svc.create_group("g")
        await svc.start(("127.0.0.1", 0))
        endpoints: list[Endpoint] = []
        try:
            clients = await _clients(svc, ("a", "b", "c", "m"), endpoints)
            for n in ("a", "b", "c"):
                gm.allow(n, "g", RS)
            gm.allow("m", "g", [Role.MONITOR])
            mats: dict[str, mb.GroupKeyingMaterial] = {}
            for n in ("a", "b", "c"):
                key, cred = _keys(n)
                mats[n], _ = await clients[n].join("g", RS, credential=cred, private_key=key)
            mats["m"], _ = await clients["m"].join("g", [Role.MONITOR])
            assert mats["m"].sender_id is None and len(mats["m"].peers) == 3
            sids = {mats[n].sender_id for n in ("a", "b", "c")}
            assert len(sids) == 3

            follow_a = clients["a"].follow(mats["a"])
            follow_b = clients["b"].follow(mats["b"])
            now_a = await anext(follow_a)  # registration: the current material
            await anext(follow_b)
            g = gm.group("g")
            assert g is not None and now_a.num == g.num and now_a.gid == g.gid

            await clients["c"].leave("g")
            pushed = await anext(follow_a)
            assert pushed.num == now_a.num + 1 and mats["c"].sender_id not in pushed.peers
            await anext(follow_b)

            svc.evict("g", "b")
            with pytest.raises(MembershipTerminated):
                await anext(follow_b)
            pushed2 = await anext(follow_a)
            assert pushed2.num == pushed.num + 1
            assert pushed2.peers == {}  # b evicted, c gone: a is alone
            with pytest.raises(GroupManagerRequestError) as e:
                await clients["b"].current(mats["b"])
            assert e.value.code == Code.FORBIDDEN

            # The monitor missed both rekeyings: it catches up through /stale-sids.
            caught = await clients["m"].catch_up(mats["m"])
            assert caught.num == pushed2.num and set(caught.peers) == {mats["a"].sender_id}
        finally:
            for ep in endpoints:
                await ep.close()
            await svc.close()
            gm.close()

    run(scenario())


def test_unauthenticated_and_unknown_requests(tmp_path: Path) -> None:
    async def scenario() -> None:
        gm = GroupManager(tmp_path / "gm.db")
        svc = GroupManagerService(gm)
        svc.create_group("g")
        ep = await svc.start(("127.0.0.1", 0))
        plain = await Endpoint.create(("127.0.0.1", 0))
        try:
            msg = Message(CoapCode.GET)
            msg.options.uri_path = ["ace-group", "g"]
            r = await plain.request(msg, ep.address, timeout=5)
            assert r.code == CoapCode.UNAUTHORIZED
            msg.options.uri_path = [".well-known", "core"]
            r = await plain.request(msg, ep.address, timeout=5)
            assert b"</ace-group/g>" in r.payload and b'rt="core.osc.gm"' in r.payload
            # Commissioned but not on the access list: 4.03 over a verified channel.
            client = GroupManagerClient(plain, ep.address, svc.commission("x"))
            with pytest.raises(GroupManagerRequestError) as e:
                await client.join("g", RS, credential=_keys("x")[1])
            assert e.value.code == Code.FORBIDDEN
        finally:
            await plain.close()
            await svc.close()
            gm.close()

    run(scenario())


def test_restart_keeps_members_and_answers_after_echo(tmp_path: Path) -> None:
    async def scenario() -> None:
        gm = GroupManager(tmp_path / "gm.db")
        svc = GroupManagerService(gm)
        svc.create_group("g", backward_security=False)
        gm.allow("a", "g", RS)
        await svc.start(("127.0.0.1", 0))
        endpoints: list[Endpoint] = []
        try:
            clients = await _clients(svc, ("a",), endpoints)
            key, cred = _keys("a")
            mat, _ = await clients["a"].join("g", RS, credential=cred, private_key=key)
            await svc.close()
            gm.close()
            # A new process: same database, new port. Replay windows start invalid.
            gm2 = GroupManager(tmp_path / "gm.db")
            svc2 = GroupManagerService(gm2)
            ep2 = await svc2.start(("127.0.0.1", 0))
            clients["a"].gm_address = ep2.address
            channel = svc2._contexts["a"]
            assert not channel.replay_window.valid
            again = await clients["a"].current(mat)
            assert channel.replay_window.valid  # the Echo round trip re-established it
            used = channel.sequence.peek()
            assert used >= 1  # the Echo challenge carried the GM's own Partial IV
            assert (again.sender_id, again.gid, again.num) == (mat.sender_id, mat.gid, mat.num)
            renewed = await clients["a"].renew_sender_id(again)
            assert renewed.sender_id != mat.sender_id
            await svc2.close()
            gm2.close()
            # Once more: the GM's sequence numbers resume past the durable reservation.
            gm3 = GroupManager(tmp_path / "gm.db")
            svc3 = GroupManagerService(gm3)
            assert svc3._contexts["a"].sequence.peek() >= max(used, 64)
            gm3.close()
        finally:
            for ep in endpoints:
                await ep.close()

    run(scenario())


def test_material_builds_interoperating_group_contexts(harness: Harness) -> None:
    harness.gm.create_group("g")
    a = harness.join("a", "g")
    b = harness.join("b", "g")
    assert a.material is not None and b.material is not None
    ctx_a = mb.group_context(a.material, private_key=a.private_key, credential=a.credential)
    ctx_b = mb.group_context(b.material, private_key=b.private_key, credential=b.credential)
    request = Message(CoapCode.GET, payload=b"hello")
    request.options.uri_path = ["x"]
    protected, _ = ctx_a.protect_request(request)
    plain, _ = ctx_b.unprotect_request(protected)
    assert plain.payload == b"hello"
    # After a rekeying (a leaves), b's new context no longer accepts a's old one.
    r = harness.request("a", "DELETE", "ace-group/g/nodes/a")
    harness.deliver(r)
    ctx_b2 = mb.group_context(b.material, private_key=b.private_key, credential=b.credential)
    protected, _ = ctx_a.protect_request(request)
    with pytest.raises(OscoreError):
        ctx_b2.unprotect_request(protected)


def test_verifier_gets_verification_data_and_gm_credential_over_oscore(tmp_path: Path) -> None:
    async def scenario() -> None:
        gm = GroupManager(tmp_path / "gm.db")
        svc = GroupManagerService(gm)
        svc.create_group("g")
        gm.allow("a", "g", RS)
        gm.allow("v", "g", [Role.VERIFIER])
        await svc.start(("127.0.0.1", 0))
        endpoints: list[Endpoint] = []
        try:
            clients = await _clients(svc, ("a", "v"), endpoints)
            key, cred = _keys("a")
            mat, _ = await clients["a"].join("g", RS, credential=cred, private_key=key)
            data = await clients["v"].verification_data("g")
            ctx = mb.group_context(mat, private_key=key, credential=cred)
            assert (data.gid, data.num) == (mat.gid, mat.num)
            assert data.sign_enc_key == ctx.signature_encryption_key
            assert await clients["v"].kdc_credential("g", -8) == mat.gm_credential
            assert len(await clients["v"].creds("g", sign_alg=-8)) == 1
            with pytest.raises(GroupManagerRequestError) as err:
                await clients["a"].verification_data("g")
            assert err.value.code == Code.FORBIDDEN and err.value.error_id == 8
        finally:
            await svc.close()
            for ep in endpoints:
                await ep.close()
            gm.close()

    run(scenario())


class _OneAnswer:
    """An endpoint stand-in that answers every request with one fixed message."""

    def __init__(self, answer: Message) -> None:
        self.answer = answer

    async def request(self, *args: Any, **kwargs: Any) -> Message:
        return self.answer


def test_client_key_renewal_expects_2_05(harness: Harness) -> None:
    harness.gm.create_group("g", backward_security=False)
    a = harness.join("a", "g")
    assert a.material is not None
    channel = harness.gm.commission_node("a")
    body = harness.request("a", "POST", "ace-group/g/nodes/a").payload
    for code, ok in ((Code.CONTENT, True), (Code.CHANGED, False)):
        answer = Message(code, payload=body)
        client = GroupManagerClient(_OneAnswer(answer), ("127.0.0.1", 1), channel)  # type: ignore[arg-type]
        if ok:
            renewed = run(client.renew_sender_id(a.material))
            assert renewed.sender_id != a.material.sender_id
        else:
            with pytest.raises(GroupManagerRequestError):
                run(client.renew_sender_id(a.material))
