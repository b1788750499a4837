"""EDHOC (RFC 9528) against aiocoap 0.4.17 over UDP on loopback, both directions, and the
OSCORE traffic protected with the context each side derived.

Facts this relies on: aiocoap speaks cipher suite 2 and method 3, sends credentials by kid,
keeps private keys as COSE_Key {1: 2, -1: 1, -4: d} in 0600 files and credentials as
{14: CCS} in CBOR diagnostic notation. Its initiator uses the EDHOC + OSCORE combined
request (RFC 9668) unless told not to; both forms are tested.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiocoap
import aiocoap.resource as aio_resource
import pytest
from aiocoap.credentials import CredentialsMap
from aiocoap.edhoc import CoseKeyForEdhoc, load_cbor_or_edn
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from grouposcore.coap import Code, Message
from grouposcore.edhoc import EdhocCredential, EdhocKey, IdCred, Initiator, ResponderSessions
from grouposcore.edhoc.coap import WELL_KNOWN_EDHOC, EdhocServerSecurity, initiate
from grouposcore.edhoc.credentials import (
    edn,
    read_credential_file,
    read_key_file,
    write_credential_file,
    write_key_file,
)
from grouposcore.errors import EdhocError
from grouposcore.oscore.security import ClientSecurity
from grouposcore.transport import Endpoint, Protection, Resource, Site

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(guarded())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _identity(tmp: Path, name: str, kid: bytes) -> tuple[EdhocKey, EdhocCredential, Path]:
    key = EdhocKey.generate()
    cred = key.credential(kid, name)
    write_key_file(tmp / f"{name}.key", key)
    write_credential_file(tmp / f"{name}.cred", cred)
    return key, cred, tmp / f"{name}.key"


def _aiocoap_credentials(tmp: Path, entries: dict[str, dict[str, Any]]) -> CredentialsMap:
    """Write aiocoap's credentials as diagnostic notation (own_cred is {14: ...}, an integer
    key: no JSON) and load them the way aiocoap loads such a file."""
    path = tmp / "aiocoap-credentials.diag"
    path.write_text(edn(entries) + "\n")
    creds = CredentialsMap()
    creds.load_from_dict(load_cbor_or_edn(path))
    return creds


class _Hello(aio_resource.Resource):
    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        claims = ",".join(request.remote.authenticated_claims)
        return aiocoap.Message(
            code=aiocoap.CHANGED,
            payload=b"aiocoap got " + request.payload + b" from " + claims.encode(),
        )


def test_grouposcore_initiator_with_aiocoap_responder(tmp_path: Path) -> None:
    async def scenario() -> None:
        _, server_cred, server_key_file = _identity(tmp_path, "aio-server", b"\x2a")
        client_key, client_cred, _ = _identity(tmp_path, "gos-client", b"\x0b")
        port = _free_port()
        creds = _aiocoap_credentials(tmp_path, {
            f"coap://127.0.0.1:{port}/*": {"edhoc-oscore": {
                "suite": 2, "method": 3, "own_cred_style": "by-key-id",
                "own_cred": {14: server_cred.ccs()},
                "private_key_file": str(server_key_file),
            }},
            ":gos-client": {"edhoc-oscore": {
                "suite": 2, "method": 3, "peer_cred": {14: client_cred.ccs()},
            }},
        })  # fmt: skip
        site = aio_resource.Site()
        site.add_resource(["hello"], _Hello())
        server = await aiocoap.Context.create_server_context(
            OscoreSiteWrapper(site, creds), bind=("127.0.0.1", port)
        )
        ep = await Endpoint.create(("127.0.0.1", 0))
        try:
            peer = read_credential_file(tmp_path / "aio-server.cred")
            params = await initiate(
                ep, ("127.0.0.1", port), Initiator(client_key, client_cred, peer)
            )
            security = ClientSecurity(params.context())
            for n in (b"1", b"2"):
                req = Message(Code.POST, payload=n)
                req.options.uri_path = ["hello"]
                resp = await ep.request(req, ("127.0.0.1", port), security=security)
                assert resp.code == Code.CHANGED
                assert resp.payload == b"aiocoap got " + n + b" from :gos-client"
                assert getattr(resp, "security", None) is not None  # verified OSCORE
            # aiocoap refuses a node it does not know, with an error we report clearly
            stranger_key, stranger, _ = _identity(tmp_path, "stranger", b"\x0c")
            with pytest.raises(EdhocError, match=r"refused with 4\.00"):
                await initiate(ep, ("127.0.0.1", port), Initiator(stranger_key, stranger, peer))
        finally:
            await ep.close()
            await server.shutdown()

    run(scenario())


class _Hello2(Resource):
    protection = Protection(oscore=True)

    def __init__(self, security: EdhocServerSecurity) -> None:
        super().__init__()
        self.security = security

    async def render_post(self, request: Message) -> Message:
        return Message(Code.CHANGED, payload=b"grouposcore got " + request.payload)


@pytest.mark.parametrize("combined", [False, True], ids=["explicit-message-3", "combined"])
def test_aiocoap_initiator_with_grouposcore_responder(tmp_path: Path, combined: bool) -> None:
    async def scenario() -> None:
        server_key, server_cred, _ = _identity(tmp_path, "gos-server", b"\x2a")
        _, client_cred, client_key_file = _identity(tmp_path, "aio-client", b"\x0b")

        def authorise(id_cred: IdCred) -> tuple[str, EdhocCredential] | None:
            return ("aio-client", client_cred) if id_cred.matches(client_cred) else None

        security = EdhocServerSecurity(ResponderSessions(server_key, server_cred, authorise))
        site = Site()
        site.add(("hello",), _Hello2(security))
        site.add(WELL_KNOWN_EDHOC, security.resource)
        ep = await Endpoint.create(("127.0.0.1", 0), site=site, server_security=security)
        port = ep.address[1]
        ctx = await aiocoap.Context.create_client_context()
        ctx.client_credentials = _aiocoap_credentials(tmp_path, {
            f"coap://127.0.0.1:{port}/*": {"edhoc-oscore": {
                "suite": 2, "method": 3, "own_cred_style": "by-key-id",
                "own_cred": {14: client_cred.ccs()},
                "private_key_file": str(client_key_file),
                "peer_cred": {14: server_cred.ccs()},
                "use_combined_edhoc": combined,
            }},
        })  # fmt: skip
        try:
            for n in (b"1", b"2"):
                req = aiocoap.Message(
                    code=aiocoap.POST, uri=f"coap://127.0.0.1:{port}/hello", payload=n
                )
                resp = await ctx.request(req).response
                assert resp.code == aiocoap.CHANGED
                assert resp.payload == b"grouposcore got " + n
            assert set(security.contexts) == {"aio-client"}
        finally:
            await ctx.shutdown()
            await ep.close()

    run(scenario())


def test_key_and_credential_files_are_shared_with_aiocoap(tmp_path: Path) -> None:
    # aiocoap reads our key file; we read aiocoap's (its keygen's format)
    ours, cred, path = _identity(tmp_path, "ours", b"\x01")
    assert CoseKeyForEdhoc.from_file(path).d == ours.d
    theirs = tmp_path / "theirs.key"
    generated = CoseKeyForEdhoc.generate(theirs)
    assert read_key_file(theirs).d == generated.d
    ccs = generated.as_ccs(kid=b"\x02", subject="theirs")
    (tmp_path / "theirs.cred").write_text(edn(ccs))
    theirs_cred = read_credential_file(tmp_path / "theirs.cred")
    assert theirs_cred.kid == b"\x02" and theirs_cred.x == read_key_file(theirs).public_xy()[0]
    # our credential file is the {14: ...} aiocoap's own_cred / peer_cred expects
    assert load_cbor_or_edn(tmp_path / "ours.cred") == {14: cred.ccs()}
