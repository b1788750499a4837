"""A node joins through the Group Manager over an EDHOC-established channel (loopback UDP)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from grouposcore.coap import Code as CoapCode
from grouposcore.coap import Message
from grouposcore.cose import EDDSA, Credential
from grouposcore.edhoc.coap import initiate
from grouposcore.edhoc.protocol import Initiator, parse_error
from grouposcore.errors import (
    EdhocCredentialError,
    EdhocError,
    EdhocPeerError,
    ManagerError,
)
from grouposcore.manager.core import GroupManager
from grouposcore.manager.edhoc_client import EdhocGroupManagerClient, EdhocIdentity
from grouposcore.manager.params import Role
from grouposcore.manager.runtime import GroupMember
from grouposcore.manager.service import GroupManagerService
from grouposcore.transport import Endpoint
from tests.edhoc.helpers import identity, run

RS = (Role.REQUESTER, Role.RESPONDER)


def _signing(name: str) -> tuple[Any, bytes]:
    key = EDDSA.generate_private_key()
    return key, Credential.build_ccs(key.public_key(), -8, name).raw


async def _gm(tmp_path: Path) -> GroupManagerService:
    gm = GroupManager(tmp_path / "gm.db")
    svc = GroupManagerService(gm)
    svc.create_group("g")
    await svc.start(("127.0.0.1", 0))
    return svc


@contextlib.asynccontextmanager
async def _gm_and_endpoint(
    tmp_path: Path,
) -> AsyncIterator[tuple[GroupManagerService, Endpoint]]:
    """A running GM with group "g" and a node's endpoint, both closed afterwards."""
    svc = await _gm(tmp_path)
    ep = await Endpoint.create(("127.0.0.1", 0))
    try:
        yield svc, ep
    finally:
        await ep.close()
        await svc.close()
        svc.gm.close()


def test_registered_node_joins_over_the_edhoc_channel(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _gm_and_endpoint(tmp_path) as (svc, ep):
            key, cred = identity(b"\x01", "lamp-1")
            svc.edhoc.register("lamp-1", cred)
            svc.gm.allow("lamp-1", "g", RS)
            ident = EdhocIdentity(key, cred, svc.edhoc.credential)
            assert svc.endpoint is not None
            client = EdhocGroupManagerClient(ep, svc.endpoint.address, ident)
            skey, scred = _signing("lamp-1")
            material, _ = await client.join("g", RS, credential=scred, private_key=skey)
            assert material.sender_id is not None and client.handshakes == 1
            assert [m.node for m in svc.gm.members("g")] == ["lamp-1"]
            channel = svc.gm.store.channel("lamp-1")
            assert channel is not None and client.channel is not None
            assert channel.node_sender_id == client.channel.sender_id
            assert svc.edhoc.sessions.pending() == 0

    run(scenario())


def test_member_runs_edhoc_again_when_the_gm_lost_its_channel(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = await _gm(tmp_path)
        member = None
        try:
            key, cred = identity(b"\x02", "lamp-2")
            svc.edhoc.register("lamp-2", cred)
            svc.gm.allow("lamp-2", "g", RS)
            ident = EdhocIdentity(key, cred, svc.edhoc.credential)
            assert svc.endpoint is not None
            member = await GroupMember.open(
                None, svc.endpoint.address, ident, "g", RS, tmp_path / "m.state", follow=False
            )
            client = member.client
            assert isinstance(client, EdhocGroupManagerClient) and client.handshakes == 1
            # the GM replaces the node's channel (e.g. its store was restored): the old
            # context is unknown there now, so the member's next request needs a new run
            svc.commission("lamp-2")
            assert await member.refresh() in (True, False)
            assert client.handshakes == 2
        finally:
            if member is not None:
                await member.close()
            await svc.close()
            svc.gm.close()

    run(scenario())


def test_unknown_credential_gets_an_edhoc_error_and_leaves_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _gm_and_endpoint(tmp_path) as (svc, ep):
            _, known = identity(b"\x03", "known")
            svc.edhoc.register("known", known)
            gm_cred = svc.edhoc.credential
            before = svc.gm.store.dump()
            key, cred = identity(b"\x04", "stranger")
            assert svc.endpoint is not None
            with pytest.raises(EdhocPeerError) as info:
                await initiate(ep, svc.endpoint.address, Initiator(key, cred, gm_cred))
            assert info.value.err_code == 3
            # a known kid with the wrong key fails the MAC: an error, still nothing stored
            _, impostor = identity(b"\x03", "known")
            with pytest.raises(EdhocPeerError, match="does not verify"):
                await initiate(ep, svc.endpoint.address, Initiator(key, impostor, gm_cred))
            assert svc.gm.store.dump() == before and svc.edhoc.sessions.pending() == 0

    run(scenario())


def test_wrong_gm_credential_is_refused_by_the_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _gm_and_endpoint(tmp_path) as (svc, ep):
            key, cred = identity(b"\x05", "n")
            svc.edhoc.register("n", cred)
            _, fake_gm = identity(b"\x99", "not-the-gm")
            assert svc.endpoint is not None
            with pytest.raises(EdhocCredentialError, match="expected not-the-gm"):
                await initiate(ep, svc.endpoint.address, Initiator(key, cred, fake_gm))
            assert svc.gm.store.channel("n") is None

    run(scenario())


def test_registration_refuses_a_kid_or_credential_of_another_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = await _gm(tmp_path)
        try:
            _, a = identity(b"\x06", "a")
            svc.edhoc.register("a", a)
            _, same_kid = identity(b"\x06", "b")
            with pytest.raises(ManagerError, match="kid 06"):
                svc.edhoc.register("b", same_kid)
            with pytest.raises(ManagerError, match="already registered"):
                svc.edhoc.register("c", a)
            svc.edhoc.register("a", same_kid)  # a node may replace its own credential
            assert svc.edhoc.registered() == {"a": same_kid}
        finally:
            await svc.close()
            svc.gm.close()

    run(scenario())


def test_edhoc_channel_survives_a_gm_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _gm_and_endpoint(tmp_path) as (svc, ep):
            key, cred = identity(b"\x07", "n")
            svc.edhoc.register("n", cred)
            svc.gm.allow("n", "g", RS)
            gm_cred = svc.edhoc.credential
            assert svc.endpoint is not None
            client = EdhocGroupManagerClient(
                ep, svc.endpoint.address, EdhocIdentity(key, cred, gm_cred)
            )
            skey, scred = _signing("n")
            material, _ = await client.join("g", RS, credential=scred, private_key=skey)
            addr = svc.endpoint.address
            await svc.close()
            svc.gm.close()
            svc = GroupManagerService(GroupManager(tmp_path / "gm.db"))
            await svc.start(addr)
            assert svc.edhoc.credential == gm_cred  # the identity is kept
            await client.current(material)  # Echo-challenged, same channel
            assert client.handshakes == 1

    run(scenario())


def test_on_established_refusal_is_an_edhoc_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _gm_and_endpoint(tmp_path) as (svc, ep):
            key, cred = identity(b"\x08", "n")
            svc.edhoc.register("n", cred)
            original = svc.edhoc.channel

            def taken(_: Any) -> Any:
                raise EdhocError("connection identifier taken meanwhile; run EDHOC again")

            svc.edhoc.channel = taken  # type: ignore[method-assign]
            assert svc.endpoint is not None
            with pytest.raises(EdhocPeerError, match="taken meanwhile"):
                await initiate(ep, svc.endpoint.address, Initiator(key, cred, svc.edhoc.credential))
            svc.edhoc.channel = original  # type: ignore[method-assign]
            assert svc.gm.store.channel("n") is None

    run(scenario())


def _post(payload: bytes) -> Message:
    msg = Message(CoapCode.POST, payload=payload)
    msg.options.uri_path = [".well-known", "edhoc"]
    return msg


def test_tampered_message_3_and_replayed_message_1_leave_the_gm_as_it_was(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with _gm_and_endpoint(tmp_path) as (svc, ep):
            key, cred = identity(b"\x09", "n")
            svc.edhoc.register("n", cred)
            gm_cred = svc.edhoc.credential
            before = svc.gm.store.dump()
            assert svc.endpoint is not None
            addr = svc.endpoint.address
            initiator = Initiator(key, cred, gm_cred)
            m1 = initiator.message_1()
            r2 = await ep.request(_post(m1), addr)
            assert r2.code == 68
            replay = await ep.request(_post(m1), addr)  # a new CoAP message, same message_1
            assert replay.code == 128 and "replayed" in str(parse_error(replay.payload))
            m3 = bytearray(initiator.message_3(r2.payload))
            m3[-3] ^= 0x40
            r4 = await ep.request(_post(bytes(m3)), addr)
            assert r4.code == 128 and r4.options.content_format == 64
            assert svc.gm.store.dump() == before and svc.edhoc.sessions.pending() == 0
            # the GM still serves: a genuine run completes
            await initiate(ep, addr, Initiator(key, cred, gm_cred))
            assert svc.gm.store.channel("n") is not None

    run(scenario())


def test_manager_serve_sync_keeps_the_context_an_edhoc_run_installed(tmp_path: Path) -> None:
    from grouposcore.cli.manager_serve import SyncedService

    async def scenario() -> None:
        gm = GroupManager(tmp_path / "gm.db")
        svc = SyncedService(gm)
        await svc.start(("127.0.0.1", 0))
        ep = await Endpoint.create(("127.0.0.1", 0))
        try:
            key, cred = identity(b"\x0c", "n")
            svc.edhoc.register("n", cred)
            assert svc.endpoint is not None
            await initiate(ep, svc.endpoint.address, Initiator(key, cred, svc.edhoc.credential))
            installed = svc._contexts["n"]
            svc.sync()
            # re-installing would start a fresh replay window: replays would verify again
            assert svc._contexts["n"] is installed
        finally:
            await ep.close()
            await svc.close()
            gm.close()

    run(scenario())


def _counting(ep: Endpoint) -> list[tuple[str, ...]]:
    sent: list[tuple[str, ...]] = []
    original = ep.request

    async def request(message: Message, *args: Any, **kw: Any) -> Message:
        sent.append(tuple(message.options.uri_path))
        return await original(message, *args, **kw)

    ep.request = request  # type: ignore[method-assign]
    return sent


@pytest.mark.parametrize("combined", [True, False])
def test_edhoc_join_round_trips(tmp_path: Path, combined: bool) -> None:
    async def scenario() -> None:
        async with _gm_and_endpoint(tmp_path) as (svc, ep):
            key, cred = identity(b"\x0d", "n")
            svc.edhoc.register("n", cred)
            svc.gm.allow("n", "g", RS)
            sent = _counting(ep)
            assert svc.endpoint is not None
            client = EdhocGroupManagerClient(
                ep,
                svc.endpoint.address,
                EdhocIdentity(key, cred, svc.edhoc.credential),
                combined=combined,
            )
            skey, scred = _signing("n")
            await client.join("g", RS, credential=scred, private_key=skey)
            edhoc = [p for p in sent if p == (".well-known", "edhoc")]
            # message_1 (+ message_3 unless it rides on the first join request), then the
            # join's two exchanges (challenge, join with proof of possession)
            assert len(edhoc) == (1 if combined else 2) and len(sent) - len(edhoc) == 2
            assert [m.node for m in svc.gm.members("g")] == ["n"]
            assert svc.edhoc.sessions.pending() == 0

    run(scenario())


def test_combined_request_with_an_unknown_credential_is_refused_with_a_reason(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with _gm_and_endpoint(tmp_path) as (svc, ep):
            key, cred = identity(b"\x0e", "stranger")
            svc.gm.allow("stranger", "g", RS)
            assert svc.endpoint is not None
            client = EdhocGroupManagerClient(
                ep, svc.endpoint.address, EdhocIdentity(key, cred, svc.edhoc.credential)
            )
            before = svc.gm.store.dump()
            # the combined attempt is refused (4.00 with the reason), the explicit retry
            # gets the EDHOC error message
            with pytest.raises(EdhocPeerError, match="does not know our credential"):
                await client.join("g", RS)
            assert svc.gm.store.dump() == before and svc.edhoc.sessions.pending() == 0

    run(scenario())


def test_a_new_edhoc_run_drops_the_old_channels_sequence_reservation(tmp_path: Path) -> None:
    from grouposcore.manager.channel import channel_sequence_key

    async def scenario() -> None:
        async with _gm_and_endpoint(tmp_path) as (svc, ep):
            key, cred = identity(b"\x0f", "n")
            svc.edhoc.register("n", cred)
            assert svc.endpoint is not None
            keys = []
            for _ in range(3):
                await initiate(ep, svc.endpoint.address, Initiator(key, cred, svc.edhoc.credential))
                channel = svc.gm.store.channel("n")
                assert channel is not None
                keys.append(channel_sequence_key(channel))
                svc.gm.store.reserve(keys[-1], 64)  # as the GM's notifications would
            rows = [r[0] for r in svc.gm.store.dump()["sequence_numbers"]]
            assert rows == [keys[-1]]  # one row per node, not one per EDHOC run

    run(scenario())
