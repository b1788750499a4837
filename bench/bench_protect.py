#!/usr/bin/env python3
"""Per-message cost of Group OSCORE protection: grouposcore vs. the crypto floor vs. aiocoap.

Run: ``python3 bench/bench_protect.py [--rounds N] [--json] [--check]``

Why: issue 3 sets targets as ratios measured in one run and one process (group mode close to
one bare Ed25519 operation, pairwise mode close to one bare AES-CCM encryption, and faster
than aiocoap), so everything below is measured side by side, interleaved round by round so
that load from other processes hits every operation alike.

What is timed. A round times, with the thread's CPU clock (``time.thread_time_ns``: time
other processes take on a shared machine is not counted, issue 14), one loop of ``n``
calls of every operation (n = 10 for the signing ones, 100 for the others), in an order
shuffled per round; the reported figure is the median over the rounds of (loop time / n),
in µs, printed next to the minimum.
Rounds are short and many because the machine is shared: a burst of foreign load then
spoils a few rounds of every operation alike instead of all of one. One untimed warm-up
round runs first, and every timed loop is preceded by one untimed call of its operation
(on a spare message for the unprotect cases) so that it starts warm. The garbage
collector is off inside timed loops (as ``timeit`` does); state resets between rounds
happen outside the timed loop. Targets are judged on the ratio of the medians; the median
of the per-round ratios is shown next to it as a noise check.

* protect: an already decoded ``grouposcore.coap.Message`` (request: vector G3's GET
  coap://localhost/tv1; response: G4's 2.05 "Hello World!") -> protected ``Message``
  (split into inner/outer, Partial IV from the sender sequence, OSCORE option, external_aad,
  encryption, and in group mode signing, keystream and signature encryption). Encoding to
  bytes, UDP and the transport are not included (the codec is listed separately for
  reference). Responses are protected with ``fresh_piv=False`` (request nonce reused, as
  G4 and G7), so the same response is produced on every call.
* unprotect request: ``n`` distinct protected requests (increasing sequence numbers,
  decoded before timing) are each unprotected once per round: option parsing, Recipient
  Context lookup, replay check, external_aad, (group mode) keystream, signature verification,
  decryption, inner message rebuild and the replay window update. The replay window is
  reset between rounds, outside the timed loop.
* unprotect response: ``n`` (request binding, protected response) pairs prepared before
  timing; each response is unprotected once per round with its own binding, including the
  per-server response replay tracking; the bindings' response trackers are reset between
  rounds, outside the timed loop.
* floor: ``cryptography`` alone, with key objects prepared: Ed25519 sign and verify of the
  exact Countersign_structure grouposcore signs for the G3 request, and one AES-CCM-16-64-128
  encryption of the exact plaintext and Enc_structure of the G6 pairwise request (both
  checked against the vectors before timing).
* aiocoap 0.4.17 (``aiocoap.oscore.SimpleGroupContext``), if importable: the same
  operations on the same messages (the protected inputs are grouposcore's bytes decoded
  with ``aiocoap.Message.decode``), aiocoap ``Message`` -> ``Message``. aiocoap gets its
  most favourable use: the per-peer aspect objects (``_GroupContextAspect``,
  ``pairwise_for()``, which do the ECDH) are created once before timing, not per message
  as aiocoap's own server dispatch does; its replay window is reset between rounds.
  Resetting ``request_id.can_reuse_nonce`` before each response protection is inside the
  loop (one attribute store).

* stubbed (issue 14): every grouposcore operation once more on contexts whose crypto calls
  are replaced by stand-ins that return right-sized bytes at once (AEAD encrypt: plaintext
  and a zero tag; decrypt: the ciphertext without its tag; sign: 64 zero bytes; verify:
  nothing; keystream HKDF: zeros). They are installed by :func:`stub_crypto` at the objects
  the hot path calls (the ``cryptography`` primitive inside each bound cipher, the
  context's signer, verifier and keystream derivation), so what
  remains is the protocol work Python does around the crypto. The stubbed contexts protect
  their own inputs; a check before timing proves the stand-ins are the ones called.

Exit status is 0 (it is a report) unless ``--check`` is given and a target fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from grouposcore.coap import Message
from grouposcore.oscore import GroupContext, SenderSequence

#: the vectors file, found as tests/conftest.py finds it ($GROUPOSCORE_SPEC_DIR or tests/vectors)
VECTORS = (
    Path(
        os.environ.get("GROUPOSCORE_SPEC_DIR")
        or Path(__file__).resolve().parents[1] / "tests" / "vectors"
    )
    / "vectors-group-oscore.json"
)
H = bytes.fromhex

#: loop length per round: asymmetric (signing) operations, and symmetric-only ones
N_ASYM = 10
N_SYM = 100
DEFAULT_ROUNDS = 200

Loop = Callable[[], None]


@dataclass
class Case:
    """One timed operation: ``loop`` does ``n`` calls; ``prepare`` runs untimed before it
    (state reset, then one call of the same operation so the loop starts warm)."""

    key: str
    n: int
    loop: Loop
    prepare: Callable[[], None]
    samples: list[float] = field(default_factory=list)

    def run_round(self) -> None:
        self.prepare()
        gc_was = gc.isenabled()
        gc.disable()
        try:
            t0 = time.thread_time_ns()
            self.loop()
            elapsed = time.thread_time_ns() - t0
        finally:
            if gc_was:
                gc.enable()
        self.samples.append(elapsed / self.n / 1000.0)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)


def once(fn: Callable[..., Any], *args: Any) -> Callable[[], None]:
    """A warm-up step: one call of ``fn(*args)``, result dropped."""

    def call() -> None:
        fn(*args)

    return call


# -- inputs -------------------------------------------------------------------------------


class Inputs:
    """Keys, credentials and messages of the group vectors (common_inputs, G3/G4/G6/G7)."""

    def __init__(self, path: Path) -> None:
        data = json.loads(path.read_text())
        common = data["common_inputs"]
        self.vectors = {v["id"]: v for v in data["vectors"]}
        self.master_secret = H(common["master_secret"])
        self.master_salt = H(common["master_salt"])
        self.gid = H(common["id_context_gid"])
        self.cid = H(common["client_sender_id"])
        self.sid = H(common["server_sender_id"])
        creds = common["creds"]
        self.seed = {k: H(creds[k]["ed25519_seed"]) for k in ("client", "server")}
        self.ccs = {k: H(creds[k]["ccs"]) for k in ("client", "server", "gm")}
        self.request_raw = H(self.vectors["G3"]["inputs"]["unprotected_coap"])
        self.response_raw = H(self.vectors["G4"]["inputs"]["unprotected_coap"])

    def member(self, name: str, seq: int = 0) -> GroupContext:
        own, other = (self.cid, self.sid) if name == "client" else (self.sid, self.cid)
        peer = "server" if name == "client" else "client"
        return GroupContext(
            self.master_secret,
            self.gid,
            master_salt=self.master_salt,
            sender_id=own,
            private_key=Ed25519PrivateKey.from_private_bytes(self.seed[name]),
            credential=self.ccs[name],
            gm_cred=self.ccs["gm"],
            peers={other: self.ccs[peer]},
            sequence=SenderSequence(seq),
        )

    def payload(self, vid: str) -> bytes:
        return H(self.vectors[vid]["outputs"]["payload"])

    def option(self, vid: str) -> bytes:
        return H(self.vectors[vid]["intermediate"]["oscore_option"])


def _external_aad(inp: Inputs, option: bytes, sender: str, piv: bytes) -> bytes:
    """aad_array of a request from the client (digest §5.2), for the floor inputs."""
    return cbor2.dumps(
        [1, [10, 10, -8, -27], inp.cid, piv, b"", inp.gid, option, inp.ccs[sender], inp.ccs["gm"]]
    )


def _nonce(common_iv: bytes, id_piv: bytes, piv: bytes) -> bytes:
    """RFC 8613 §5.2 nonce for a 13-byte AEAD nonce."""
    padded = bytes((len(id_piv),)) + id_piv.rjust(7, b"\0") + piv.rjust(5, b"\0")
    return bytes(a ^ b for a, b in zip(padded, common_iv[:13], strict=True))


# -- floor ----------------------------------------------------------------------------------


def floor_cases(inp: Inputs) -> list[Case]:
    """Bare ``cryptography`` calls on the exact bytes grouposcore processes (checked)."""
    client = inp.member("client")
    # Ed25519 over the G3 Countersign_structure; the vector's encrypted signature must
    # decrypt to the signature we compute, which proves the input is byte-exact.
    g3 = inp.payload("G3")
    ciphertext, enc_sig = g3[:-64], g3[-64:]
    aad_array = _external_aad(inp, inp.option("G3"), "client", b"\x05")
    to_sign = cbor2.dumps(["CounterSignature0", b"", b"", aad_array, ciphertext])
    sk = Ed25519PrivateKey.from_private_bytes(inp.seed["client"])
    pk = sk.public_key()
    sig = sk.sign(to_sign)
    info = cbor2.dumps([inp.cid, inp.gid, True, 64])
    assert client.signature_encryption_key is not None
    ks = HKDF(hashes.SHA256(), 64, b"\x05", info).derive(client.signature_encryption_key)
    if bytes(a ^ b for a, b in zip(sig, ks, strict=True)) != enc_sig:
        raise SystemExit("floor input check failed: G3 signature input differs")
    # AES-CCM over the G6 plaintext and Enc_structure with the pairwise sender key.
    pw_key, _ = client.pairwise_keys(inp.sid)
    g6 = inp.payload("G6")
    aad = cbor2.dumps(["Encrypt0", b"", _external_aad(inp, inp.option("G6"), "client", b"\x06")])
    nonce = _nonce(client.common_iv, inp.cid, b"\x06")
    ccm = AESCCM(pw_key, tag_length=8)
    plaintext = ccm.decrypt(nonce, g6, aad)
    if ccm.encrypt(nonce, plaintext, aad) != g6:
        raise SystemExit("floor input check failed: G6 AES-CCM input differs")

    def sign_loop() -> None:
        s = sk.sign
        for _ in range(N_ASYM):
            s(to_sign)

    def verify_loop() -> None:
        v = pk.verify
        for _ in range(N_ASYM):
            v(sig, to_sign)

    def ccm_loop() -> None:
        e = ccm.encrypt
        for _ in range(N_SYM):
            e(nonce, plaintext, aad)

    return [
        Case("floor_sign", N_ASYM, sign_loop, once(sk.sign, to_sign)),
        Case("floor_verify", N_ASYM, verify_loop, once(pk.verify, sig, to_sign)),
        Case("floor_ccm", N_SYM, ccm_loop, once(ccm.encrypt, nonce, plaintext, aad)),
    ]


# -- grouposcore ------------------------------------------------------------------------------


# -- crypto stand-ins (the stubbed figures) ---------------------------------------------------


class _StubAead:
    """Stands in for an AESCCM/AESGCM object: right-sized output, no work."""

    __slots__ = ("_tag", "_zeros")

    def __init__(self, tag_len: int) -> None:
        self._tag = tag_len
        self._zeros = bytes(tag_len)

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes | None) -> bytes:
        return plaintext + self._zeros

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes | None) -> bytes:
        return ciphertext[: -self._tag]


class _StubHkdf:
    """Stands in for HKDF where the hot path derives the signature keystream."""

    id = 5

    def derive(self, salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
        return bytes(length)


_SIG_ZEROS = bytes(64)


def _stub_sign(data: bytes) -> bytes:
    return _SIG_ZEROS


def _stub_verify(public_key: Any, signature: bytes, data: bytes) -> None:
    return None


def _stub_cipher(cipher: Any) -> None:
    if cipher is None:
        return
    if not hasattr(cipher, "_prim"):
        raise SystemExit(f"cannot stub {type(cipher).__name__}: not an AEAD cipher")
    cipher._prim = _StubAead(cipher._tag_len)


def stub_crypto(ctx: GroupContext) -> GroupContext:
    """Replace every crypto call of ``ctx``'s hot path by a stand-in (module docstring).

    Pairwise keys are derived (really) first, as a long-lived member has them cached.
    """
    for rc in ctx.recipients.values():
        if ctx.pairwise_mode and ctx.sender_id is not None:
            ctx._pairwise_ciphers(rc)
        _stub_cipher(rc._pairwise_sender)
        _stub_cipher(rc._pairwise_recipient)
        _stub_cipher(rc.group_cipher)
    _stub_cipher(ctx._sender_group_cipher)
    ctx._sign = _stub_sign
    ctx._verify = _stub_verify
    ctx.hkdf = _StubHkdf()  # type: ignore[assignment]  # a stand-in, by design
    return ctx


def check_stubs(inp: Inputs) -> None:
    """The stand-ins must be what runs: a stubbed group request ends in a zero tag and a
    zero (signature XOR keystream), and a stubbed server accepts a flipped signature."""
    req = Message.decode(inp.request_raw)
    client = stub_crypto(inp.member("client"))
    server = stub_crypto(inp.member("server"))
    preq, _ = client.protect_request(req)
    if preq.payload[-72:] != bytes(72):
        raise SystemExit("stubbed crypto check failed: real crypto ran in group protect")
    flipped = Message.decode(preq.encode())
    flipped.payload = flipped.payload[:-1] + b"\x01"
    server.unprotect_request(flipped)  # raises unless verification is stubbed
    ppreq, _ = client.protect_request(req, pairwise_with=inp.sid)
    if ppreq.payload[-8:] != bytes(8):
        raise SystemExit("stubbed crypto check failed: real crypto ran in pairwise protect")


# -- grouposcore ------------------------------------------------------------------------------


class Prepared:
    """Protected messages and bindings made by grouposcore (with real or stubbed crypto),
    shared with the aiocoap cases; n + 1 of each, the first one being the untimed warm-up
    of every round."""

    def __init__(self, inp: Inputs, stub: bool = False) -> None:
        req = Message.decode(inp.request_raw)
        resp = Message.decode(inp.response_raw)
        self.stub = stub
        self.requests: dict[str, list[bytes]] = {}
        self.responses: dict[str, list[tuple[bytes, Any]]] = {}
        for mode in ("group", "pairwise"):
            n = loop_len(mode, stub)
            target = None if mode == "group" else inp.sid
            client, server = members(inp, stub)
            self.requests[mode] = [
                client.protect_request(req, pairwise_with=target)[0].encode() for _ in range(n + 1)
            ]
            pairs = []
            for _ in range(n + 1):
                preq, binding = client.protect_request(req, pairwise_with=target)
                _, sbinding = server.unprotect_request(Message.decode(preq.encode()))
                presp = server.protect_response(resp, sbinding, fresh_piv=False)
                pairs.append((presp.encode(), binding))
            self.responses[mode] = pairs


def loop_len(mode: str, stub: bool) -> int:
    """Calls per timed loop: short loops for real signatures, long ones for the rest."""
    return N_ASYM if mode == "group" and not stub else N_SYM


def members(inp: Inputs, stub: bool) -> tuple[GroupContext, GroupContext]:
    """A fresh (client, server) pair, with stubbed crypto if ``stub``."""
    client, server = inp.member("client"), inp.member("server")
    if stub:
        stub_crypto(client)
        stub_crypto(server)
    return client, server


def grouposcore_cases(inp: Inputs, prep: Prepared) -> list[Case]:
    """The eight operations, keyed ``.../ours`` (real crypto) or ``.../stubbed``."""
    tag = "stubbed" if prep.stub else "ours"
    req = Message.decode(inp.request_raw)
    resp = Message.decode(inp.response_raw)
    cases: list[Case] = []
    for mode in ("group", "pairwise"):
        target = None if mode == "group" else inp.sid
        client, server = members(inp, prep.stub)
        protect_req = client.protect_request
        unprotect_req = server.unprotect_request
        protect_resp = server.protect_response
        unprotect_resp = client.unprotect_response
        requests = [Message.decode(b) for b in prep.requests[mode]]
        responses = [(Message.decode(b), binding) for b, binding in prep.responses[mode]]
        window = server.recipients[inp.cid].replay_window
        _, sbinding = server.unprotect_request(requests[0])
        warm_req, timed_req = requests[0], requests[1:]
        timed_resp = responses[1:]
        n = len(timed_req)

        def p_req(protect_req: Any = protect_req, target: Any = target, n: int = n) -> None:
            for _ in range(n):
                protect_req(req, pairwise_with=target)

        def u_req(unprotect_req: Any = unprotect_req, requests: Any = timed_req) -> None:
            for m in requests:
                unprotect_req(m)

        def p_resp(protect_resp: Any = protect_resp, sb: Any = sbinding, n: int = n) -> None:
            for _ in range(n):
                protect_resp(resp, sb, fresh_piv=False)

        def u_resp(unprotect_resp: Any = unprotect_resp, responses: Any = timed_resp) -> None:
            for m, b in responses:
                unprotect_resp(m, b)

        def prep_p_req(protect_req: Any = protect_req, target: Any = target) -> None:
            protect_req(req, pairwise_with=target)

        def prep_u_req(window: Any = window, u: Any = unprotect_req, m: Any = warm_req) -> None:
            window.reset()
            u(m)

        def prep_p_resp(protect_resp: Any = protect_resp, sb: Any = sbinding) -> None:
            protect_resp(resp, sb, fresh_piv=False)

        def prep_u_resp(u: Any = unprotect_resp, responses: Any = responses) -> None:
            for _, b in responses:
                b.trackers = None
            u(*responses[0])

        cases += [
            Case(f"{mode}_req_protect/{tag}", n, p_req, prep_p_req),
            Case(f"{mode}_req_unprotect/{tag}", n, u_req, prep_u_req),
            Case(f"{mode}_resp_protect/{tag}", n, p_resp, prep_p_resp),
            Case(f"{mode}_resp_unprotect/{tag}", n, u_resp, prep_u_resp),
        ]
    if prep.stub:
        return cases
    # reference only: the CoAP codec on a protected group request
    raw = prep.requests["group"][0]
    msg = Message.decode(raw)

    def enc() -> None:
        e = msg.encode
        for _ in range(N_SYM):
            e()

    def dec() -> None:
        d = Message.decode
        for _ in range(N_SYM):
            d(raw)

    cases += [
        Case("codec_encode/ours", N_SYM, enc, once(msg.encode)),
        Case("codec_decode/ours", N_SYM, dec, once(Message.decode, raw)),
    ]
    return cases


def self_check(inp: Inputs) -> None:
    """grouposcore must reproduce G3/G4/G6/G7 before its timings mean anything."""
    for req_id, resp_id, target in (("G3", "G4", None), ("G6", "G7", inp.sid)):
        seq = inp.vectors[req_id]["inputs"]["sender_sequence_number"]
        client, server = inp.member("client", seq), inp.member("server")
        preq, binding = client.protect_request(
            Message.decode(inp.request_raw), pairwise_with=target
        )
        _, sb = server.unprotect_request(preq)
        presp = server.protect_response(Message.decode(inp.response_raw), sb, fresh_piv=False)
        if preq.payload != inp.payload(req_id) or presp.payload != inp.payload(resp_id):
            raise SystemExit(f"grouposcore does not reproduce {req_id}/{resp_id}")
        client.unprotect_response(presp, binding)


# -- aiocoap ----------------------------------------------------------------------------------


def aiocoap_cases(inp: Inputs, prep: Prepared) -> tuple[list[Case], str]:
    """The same operations with aiocoap, or ([], reason) if it is unavailable or disagrees."""
    try:
        import aiocoap
        import aiocoap.meta
        from aiocoap import oscore as ao
        from aiocoap.message import Direction
        from aiocoap.numbers import POST
    except ImportError as exc:
        return [], f"aiocoap not importable ({exc})"

    def member(name: str, seq: int = 0) -> Any:
        own, other = (inp.cid, inp.sid) if name == "client" else (inp.sid, inp.cid)
        peer = "server" if name == "client" else "client"
        ctx = ao.SimpleGroupContext(
            ao.algorithms["AES-CCM-16-64-128"],
            ao.hashfunctions["sha256"],
            ao.algorithms_countersign["EdDSA on Ed25519"],
            ao.algorithms["AES-CCM-16-64-128"],
            ao.algorithms_staticstatic["ECDH-SS + HKDF-256"],
            inp.gid,
            inp.master_secret,
            inp.master_salt,
            own,
            inp.seed[name],
            inp.ccs[name],
            {other: inp.ccs[peer]},
            inp.ccs["gm"],
        )
        ctx.sender_sequence_number = seq
        return ctx

    def outgoing(raw: bytes) -> Any:
        m = aiocoap.Message.decode(raw)
        m.direction = Direction.OUTGOING
        return m

    def rid(binding: Any) -> Any:
        return ao.RequestIdentifiers(
            binding.request_kid, binding.request_piv, can_reuse_nonce=None, request_code=POST
        )

    # byte-level agreement on the vectors first (same messages, same results)
    for req_id, resp_id, mode in (("G3", "G4", "group"), ("G6", "G7", "pairwise")):
        seq = inp.vectors[req_id]["inputs"]["sender_sequence_number"]
        client, server = member("client", seq), member("server")
        sender = client if mode == "group" else client.pairwise_for(inp.sid)
        preq, _ = sender.protect(outgoing(inp.request_raw))
        if preq.payload != inp.payload(req_id) or preq.opt.oscore != inp.option(req_id):
            return [], f"aiocoap does not reproduce {req_id}; not compared"
        aspect = (
            ao._GroupContextAspect(server, inp.cid)
            if mode == "group"
            else server.pairwise_for(inp.cid)
        )
        wire = Message.decode(inp.request_raw)
        g = inp.member("client", seq)
        gm = g.protect_request(wire, pairwise_with=None if mode == "group" else inp.sid)[0]
        _, req_ident = aspect.unprotect(aiocoap.Message.decode(gm.encode()))
        responder = server if mode == "group" else aspect
        presp, _ = responder.protect(outgoing(inp.response_raw), req_ident)
        if presp.payload != inp.payload(resp_id) or presp.opt.oscore != inp.option(resp_id):
            return [], f"aiocoap does not reproduce {resp_id}; not compared"

    req = outgoing(inp.request_raw)
    resp = outgoing(inp.response_raw)
    cases: list[Case] = []
    for mode, n in (("group", N_ASYM), ("pairwise", N_SYM)):
        client, server = member("client"), member("server")
        if mode == "group":
            c_send, c_recv = client, ao._GroupContextAspect(client, inp.sid)
            s_recv, s_send = ao._GroupContextAspect(server, inp.cid), server
        else:
            c_send = c_recv = client.pairwise_for(inp.sid)
            s_recv = s_send = server.pairwise_for(inp.cid)
        requests = [aiocoap.Message.decode(b) for b in prep.requests[mode]]
        responses = [
            (aiocoap.Message.decode(b), rid(binding)) for b, binding in prep.responses[mode]
        ]
        window = server.recipient_replay_windows[inp.cid]
        _, s_rid = s_recv.unprotect(requests[0])

        def p_req(protect: Any = c_send.protect, n: int = n) -> None:
            for _ in range(n):
                protect(req)

        def u_req(unprotect: Any = s_recv.unprotect, requests: Any = requests[1:]) -> None:
            for m in requests:
                unprotect(m)

        def p_resp(protect: Any = s_send.protect, r: Any = s_rid, n: int = n) -> None:
            for _ in range(n):
                r.can_reuse_nonce = True
                protect(resp, r)

        def u_resp(unprotect: Any = c_recv.unprotect, responses: Any = responses[1:]) -> None:
            for m, r in responses:
                unprotect(m, r)

        def prep_p_req(protect: Any = c_send.protect) -> None:
            protect(req)

        def prep_u_req(w: Any = window, u: Any = s_recv.unprotect, m: Any = requests[0]) -> None:
            w.initialize_empty()
            u(m)

        def prep_p_resp(protect: Any = s_send.protect, r: Any = s_rid) -> None:
            r.can_reuse_nonce = True
            protect(resp, r)

        def prep_u_resp(u: Any = c_recv.unprotect, pair: Any = responses[0]) -> None:
            u(*pair)

        cases += [
            Case(f"{mode}_req_protect/aiocoap", n, p_req, prep_p_req),
            Case(f"{mode}_req_unprotect/aiocoap", n, u_req, prep_u_req),
            Case(f"{mode}_resp_protect/aiocoap", n, p_resp, prep_p_resp),
            Case(f"{mode}_resp_unprotect/aiocoap", n, u_resp, prep_u_resp),
        ]
    return cases, f"aiocoap {getattr(aiocoap.meta, 'version', '?')}"


# -- report -----------------------------------------------------------------------------------

ROWS = [
    ("group_req_protect", "group-mode request protect"),
    ("group_req_unprotect", "group-mode request unprotect"),
    ("group_resp_protect", "group-mode response protect"),
    ("group_resp_unprotect", "group-mode response unprotect"),
    ("pairwise_req_protect", "pairwise request protect"),
    ("pairwise_req_unprotect", "pairwise request unprotect"),
    ("pairwise_resp_protect", "pairwise response protect"),
    ("pairwise_resp_unprotect", "pairwise response unprotect"),
    ("codec_encode", "(ref) CoAP encode, protected request"),
    ("codec_decode", "(ref) CoAP decode, protected request"),
]
FLOORS = [
    ("floor_sign", "floor: Ed25519 sign"),
    ("floor_verify", "floor: Ed25519 verify"),
    ("floor_ccm", "floor: AES-CCM-16-64-128 encrypt"),
]


@dataclass
class Target:
    """``num / den`` compared with ``limit``: "<=" (at most), ">=" (at least) or ">"."""

    desc: str
    num: str
    den: str
    op: str
    limit: float
    ratio: float = 0.0
    paired: float = 0.0

    @property
    def holds(self) -> bool:
        if self.op == "<=":
            return self.ratio <= self.limit
        if self.op == ">=":
            return self.ratio >= self.limit
        return self.ratio > self.limit

    def measure(self, cases: dict[str, Case]) -> None:
        num = cases[self.num]
        if not self.den:  # an absolute figure in µs (the stubbed-crypto targets)
            self.ratio, self.paired = num.median, num.min
            return
        den = cases[self.den]
        self.ratio = num.median / den.median
        self.paired = statistics.median(
            a / b for a, b in zip(num.samples, den.samples, strict=True)
        )


#: issue 14: protocol overhead with the crypto stubbed, µs (median)
STUB_LIMITS = {
    "group_req_protect": 8.0,
    "group_req_unprotect": 8.0,
    "pairwise_req_protect": 5.0,
    "pairwise_req_unprotect": 5.0,
    "pairwise_resp_protect": 5.0,
    "pairwise_resp_unprotect": 5.0,
}
#: which floor each operation's full cost is compared with
FLOOR_OF = {
    "group": ("floor_sign", "floor_verify", "sign", "verify"),
    "pairwise": ("floor_ccm", "floor_ccm", "AEAD", "AEAD"),
}


def floor_for(key: str) -> tuple[str, str]:
    """(floor case, short name) for an operation key such as ``group_req_unprotect``."""
    sign, verify, sname, vname = FLOOR_OF[key.split("_")[0]]
    return (sign, sname) if key.endswith("_protect") else (verify, vname)


def targets(cases: dict[str, Case]) -> list[Target]:
    """Issue 3's performance targets, for every operation they name, then issue 14's
    stubbed-crypto figures."""
    out: list[Target] = []
    for d, word in (("req", "request"), ("resp", "response")):
        out.append(
            Target(
                f"group {word} protect / Ed25519 sign",
                f"group_{d}_protect/ours",
                "floor_sign",
                "<=",
                1.3,
            )
        )
    for d, word in (("req", "request"), ("resp", "response")):
        out.append(
            Target(
                f"group {word} unprotect / Ed25519 verify",
                f"group_{d}_unprotect/ours",
                "floor_verify",
                "<=",
                1.1,
            )
        )
    for d, word in (("req", "request"), ("resp", "response")):
        for op in ("protect", "unprotect"):
            out.append(
                Target(
                    f"pairwise {word} {op} / AES-CCM encrypt",
                    f"pairwise_{d}_{op}/ours",
                    "floor_ccm",
                    "<=",
                    5.0,
                )
            )
    for key, label in ROWS[:8]:
        if f"{key}/aiocoap" in cases:
            protect = key.endswith("_protect")
            out.append(
                Target(
                    f"aiocoap / ours: {label}",
                    f"{key}/aiocoap",
                    f"{key}/ours",
                    ">=" if protect else ">",
                    3.0 if protect else 1.0,
                )
            )
    for key, limit in STUB_LIMITS.items():
        if f"{key}/stubbed" in cases:
            label = dict(ROWS)[key]
            out.append(Target(f"{label}, crypto stubbed, µs", f"{key}/stubbed", "", "<=", limit))
    for t in out:
        t.measure(cases)
    return out


def render(
    cases: dict[str, Case], checks: list[Target], note: str, rounds: int, load: tuple[float, float]
) -> str:
    lines = [
        f"grouposcore protect/unprotect: thread CPU time, µs per operation, median and "
        f"minimum of {rounds} rounds; {note}; Python {sys.version.split()[0]}",
        f"load average before/after: {load[0]:.2f}/{load[1]:.2f} on {os.cpu_count()} CPUs "
        "(--json lists every round)",
        "",
    ]
    head = (
        f"{'operation':<40} {'ours med':>9} {'ours min':>9} {'aiocoap med':>12} "
        f"{'aiocoap/ours':>13}"
    )
    lines += [head, "-" * len(head)]
    for key, label in ROWS:
        c = cases[f"{key}/ours"]
        theirs = cases[f"{key}/aiocoap"].median if f"{key}/aiocoap" in cases else None
        t = f"{theirs:12.1f}" if theirs is not None else f"{'-':>12}"
        r = f"{theirs / c.median:12.2f}x" if theirs is not None else f"{'-':>13}"
        lines.append(f"{label:<40} {c.median:9.1f} {c.min:9.1f} {t} {r}")
    for key, label in FLOORS:
        lines.append(f"{label:<40} {cases[key].median:9.1f} {cases[key].min:9.1f}")
    if any(k.endswith("/stubbed") for k in cases):
        head = (
            f"{'protocol overhead, crypto stubbed':<40} {'med µs':>9} {'min µs':>9} "
            f"{'real op / crypto floor':>26}"
        )
        lines += ["", head, "-" * len(head)]
        for key, label in ROWS[:8]:
            c = cases[f"{key}/stubbed"]
            floor, fname = floor_for(key)
            ratio = cases[f"{key}/ours"].median / cases[floor].median
            lines.append(f"{label:<40} {c.median:9.2f} {c.min:9.2f} {ratio:20.2f}x {fname:<5}")
    lines += [
        "",
        "targets (ratio of medians, median of per-round ratios in brackets; "
        "µs targets: median [min]):",
    ]
    for t in checks:
        lines.append(
            f"  {'PASS' if t.holds else 'FAIL'}  {t.desc:<53} {t.ratio:6.2f} "
            f"[{t.paired:6.2f}]  target {t.op} {t.limit:g}"
        )
    passed = sum(t.holds for t in checks)
    lines.append(f"{passed}/{len(checks)} targets hold")
    lines.append(key_line(cases, checks))
    return "\n".join(lines)


def key_ratios(cases: dict[str, Case]) -> dict[str, float]:
    """The figures the issue tracks: full op / its crypto floor, and stubbed µs."""
    out: dict[str, float] = {}
    for key in (
        "group_req_protect",
        "group_req_unprotect",
        "pairwise_req_protect",
        "pairwise_req_unprotect",
    ):
        floor, _ = floor_for(key)
        out[f"{key}/floor"] = cases[f"{key}/ours"].median / cases[floor].median
        if f"{key}/stubbed" in cases:
            out[f"{key}/stubbed_us"] = cases[f"{key}/stubbed"].median
    return out


def key_line(cases: dict[str, Case], checks: list[Target]) -> str:
    r = key_ratios(cases)
    parts = [
        f"group req protect/sign {r['group_req_protect/floor']:.2f}",
        f"group req unprotect/verify {r['group_req_unprotect/floor']:.2f}",
        f"pairwise req protect/AEAD {r['pairwise_req_protect/floor']:.2f}",
        f"pairwise req unprotect/AEAD {r['pairwise_req_unprotect/floor']:.2f}",
    ]
    if "group_req_protect/stubbed_us" in r:
        parts.append(
            "stubbed µs group protect/unprotect "
            f"{r['group_req_protect/stubbed_us']:.1f}/"
            f"{r['group_req_unprotect/stubbed_us']:.1f}, pairwise "
            f"{r['pairwise_req_protect/stubbed_us']:.1f}/"
            f"{r['pairwise_req_unprotect/stubbed_us']:.1f}"
        )
    passed = sum(t.holds for t in checks)
    return f"key ratios: {'; '.join(parts)}; {passed}/{len(checks)} targets hold"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help=f"timed rounds per operation (default {DEFAULT_ROUNDS})",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target fails")
    ap.add_argument("--vectors", type=Path, default=VECTORS, help="group vectors JSON file")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")

    inp = Inputs(args.vectors)
    self_check(inp)
    check_stubs(inp)
    prep = Prepared(inp)
    case_list = (
        floor_cases(inp)
        + grouposcore_cases(inp, prep)
        + grouposcore_cases(inp, Prepared(inp, stub=True))
    )
    theirs, note = aiocoap_cases(inp, prep)
    case_list += theirs
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    for case in case_list:  # warm-up
        case.run_round()
        case.samples.clear()
    order = list(case_list)
    shuffle = random.Random(3).shuffle
    for _ in range(args.rounds):
        shuffle(order)
        for case in order:
            case.run_round()
    load = (load_before, os.getloadavg()[0])
    cases = {c.key: c for c in case_list}
    checks = targets(cases)
    if args.json:
        print(
            json.dumps(
                {
                    "rounds": args.rounds,
                    "n": {c.key: c.n for c in case_list},
                    "note": note,
                    "python": sys.version.split()[0],
                    "wall_s": round(time.perf_counter() - t_start, 2),
                    "loadavg_before_after": load,
                    "median_us": {c.key: round(c.median, 3) for c in case_list},
                    "min_us": {c.key: round(c.min, 3) for c in case_list},
                    "stubbed_us": {
                        c.key.split("/")[0]: {"median": round(c.median, 3), "min": round(c.min, 3)}
                        for c in case_list
                        if c.key.endswith("/stubbed")
                    },
                    "key_ratios": {k: round(v, 3) for k, v in key_ratios(cases).items()},
                    "samples_us": {c.key: [round(s, 3) for s in c.samples] for c in case_list},
                    "targets": [
                        {
                            "target": t.desc,
                            "ratio": round(t.ratio, 3),
                            "paired_ratio": round(t.paired, 3),
                            "op": t.op,
                            "limit": t.limit,
                            "pass": t.holds,
                        }
                        for t in checks
                    ],
                },
                indent=1,
            )
        )
    else:
        print(render(cases, checks, note, args.rounds, load))
    return 1 if args.check and not all(t.holds for t in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
