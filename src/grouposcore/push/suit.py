"""SUIT manifests (draft-ietf-suit-manifest-37) for firmware push: sign, parse, verify.

A push is described by a SUIT envelope the *firmware author* signs (COSE_Sign1 in the
authentication wrapper, over the SHA-256 of the manifest). The author's key is not a group
key: members are provisioned with the author credential(s) they trust, so membership in the
group (which any member's Group OSCORE key proves) does not let a member forge firmware.

What a push manifest holds, in the common shared sequence of its one component
(``directive-override-parameters``):

* ``image-digest`` (3, SHA-256) and ``image-size`` (14): the whole image;
* three custom parameters (negative keys, as the draft reserves for custom use):
  :data:`PARAM_BLOCK_SIZE` (-1, uint), the bytes per block; :data:`PARAM_TREE_ROOT`
  (-2, bstr), the root of a SHA-256 hash tree over the blocks, so each block is checked on
  arrival with the proof it carries; :data:`PARAM_DISTRIBUTORS` (-3, bstr wrapping a CBOR
  array of Sender IDs), the group members allowed to push it (absent: any member).

The manifest sequence number is the anti-rollback counter: a member installs only a
manifest newer than the last it installed.

:func:`parse_envelope` verifies any envelope of the draft (digest of the manifest, one or
more COSE_Sign1 signatures of which one must come from a trusted key, digests of severable
members present in the envelope) and extracts what a push needs; what it does not support
(another digest algorithm, COSE_Mac/COSE_Sign, several components, image parameters set
only inside try-each) it refuses with a :class:`~grouposcore.errors.SuitError` naming it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from grouposcore.cose.signing import PrivateKey, PublicKey, signature_by_id
from grouposcore.errors import GroupOscoreError, SuitError

__all__ = [
    "PARAM_BLOCK_SIZE",
    "PARAM_DISTRIBUTORS",
    "PARAM_TREE_ROOT",
    "Manifest",
    "leaf_hash",
    "parse_envelope",
    "sign_envelope",
    "tree_levels",
    "tree_proof",
    "verify_proof",
]

TAG_ENVELOPE = 107
TAG_SIGN1, TAG_MAC0, TAG_SIGN, TAG_MAC = 18, 17, 98, 97
ENV_AUTH, ENV_MANIFEST = 2, 3
M_VERSION, M_SEQUENCE, M_COMMON = 1, 2, 3
SEVERABLE = {16: "payload-fetch", 20: "install", 23: "text"}
C_COMPONENTS, C_SHARED = 2, 4
CMD_SET_INDEX, CMD_TRY_EACH, CMD_OVERRIDE, CMD_RUN_SEQUENCE = 12, 15, 20, 32
P_IMAGE_DIGEST, P_IMAGE_SIZE = 3, 14
SHA256 = -16
PARAM_BLOCK_SIZE, PARAM_TREE_ROOT, PARAM_DISTRIBUTORS = -1, -2, -3
COSE_ALG = 1


def _loads(data: Any, what: str) -> Any:
    """Exactly one CBOR item, no duplicate keys; SuitError for anything else."""
    if type(data) is not bytes:
        raise SuitError(f"{what} must be a byte string")
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp, allow_duplicate_keys=False, max_depth=24).decode()
    except Exception as exc:  # cbor2 raises many types on hostile input
        raise SuitError(f"{what} is not CBOR: {exc}") from None
    if fp.tell() != len(data):
        raise SuitError(f"trailing bytes after {what}")
    return value


def _digest(raw: Any, what: str) -> bytes:
    """The bytes of a SUIT_Digest (bstr-wrapped or not) using SHA-256, the one we support."""
    value = _loads(raw, what) if type(raw) is bytes else raw
    if not isinstance(value, list | tuple) or len(value) < 2 or type(value[1]) is not bytes:
        raise SuitError(f"{what} is not a SUIT_Digest")
    if value[0] != SHA256:
        raise SuitError(
            f"{what} uses digest algorithm {value[0]!r}; only SHA-256 (-16) is supported"
        )
    if len(value[1]) != 32:
        raise SuitError(f"{what} is not 32 bytes")
    return value[1]


def _wrapped(raw: bytes) -> bytes:
    """SHA-256 of ``raw`` as a CBOR byte string: SUIT digests cover the bstr wrapper too."""
    return hashlib.sha256(cbor2.dumps(raw)).digest()


@dataclass(frozen=True)
class Manifest:
    """What a verified envelope says. Image fields are None when the manifest does not set
    them for a single component in its common sequence (see :meth:`for_push`)."""

    envelope: bytes
    sequence: int
    components: int
    image_digest: bytes | None
    image_size: int | None
    block_size: int | None
    tree_root: bytes | None
    distributors: tuple[bytes, ...] | None
    author: int
    #: some parameters are set only inside try-each (e.g. A/B slots): not pushable
    conditional: bool = False

    def for_push(self) -> Manifest:
        """This manifest if it describes one image as a push needs it, else SuitError."""
        if self.conditional:
            raise SuitError("image parameters chosen by try-each are not supported for push")
        if self.components != 1:
            raise SuitError(
                f"the manifest names {self.components} components; a push carries exactly one image"
            )
        missing = [
            name
            for name, v in (
                ("image-digest", self.image_digest),
                ("image-size", self.image_size),
                ("block size (-1)", self.block_size),
                ("hash tree root (-2)", self.tree_root),
            )
            if v is None
        ]
        if missing:
            raise SuitError(
                "not a push manifest: the common sequence does not set " + ", ".join(missing)
            )
        return self

    @property
    def nblocks(self) -> int:
        assert self.image_size is not None and self.block_size is not None
        return -(-self.image_size // self.block_size)


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def _check_signature(block: Any, payload: bytes, trusted: Sequence[PublicKey]) -> int | None:
    """Index of the trusted key that signed ``payload`` in this authentication block."""
    item = _loads(block, "authentication block")
    if not isinstance(item, cbor2.CBORTag):
        raise SuitError("an authentication block must be a tagged COSE object")
    if item.tag in (TAG_MAC0, TAG_MAC, TAG_SIGN):
        kind = {TAG_MAC0: "COSE_Mac0", TAG_MAC: "COSE_Mac", TAG_SIGN: "COSE_Sign"}[item.tag]
        raise SuitError(f"{kind} authentication is not supported; only COSE_Sign1")
    if item.tag != TAG_SIGN1:
        raise SuitError(f"authentication block with CBOR tag {item.tag} is not COSE")
    body = item.value
    if not isinstance(body, list | tuple) or len(body) != 4:
        raise SuitError("COSE_Sign1 must be an array of four")
    protected, unprotected, detached, signature = body
    if (
        type(protected) is not bytes
        or not isinstance(unprotected, Mapping)
        or (type(signature) is not bytes)
    ):
        raise SuitError("COSE_Sign1 fields have the wrong types")
    if detached is not None and detached != payload:
        raise SuitError("COSE_Sign1 payload is not the manifest digest")
    headers = _loads(protected, "protected header") if protected else {}
    if not isinstance(headers, Mapping) or COSE_ALG not in headers:
        raise SuitError("COSE_Sign1 has no algorithm in its protected header")
    try:
        alg = signature_by_id(headers[COSE_ALG])
    except GroupOscoreError as exc:
        raise SuitError(str(exc)) from None
    data = _sig_structure(protected, payload)
    for i, key in enumerate(trusted):
        if not alg.accepts_key(key):
            continue
        try:
            alg.verify(key, signature, data)
        except GroupOscoreError:
            continue
        return i
    return None


def _parameters(shared: list[Any]) -> tuple[dict[Any, Any], bool]:
    """Parameters the common sequence sets for component 0, and whether any are set only
    conditionally (in try-each)."""
    if not isinstance(shared, list | tuple) or len(shared) % 2:
        raise SuitError("a command sequence is an array of command, argument pairs")
    params: dict[Any, Any] = {}
    conditional = False
    index: Any = 0
    for i in range(0, len(shared), 2):
        cmd, arg = shared[i], shared[i + 1]
        if cmd == CMD_SET_INDEX:
            index = arg
        elif cmd == CMD_OVERRIDE:
            if not isinstance(arg, Mapping):
                raise SuitError("override-parameters takes a map")
            if index == 0 or index is True:
                params.update(arg)
        elif cmd == CMD_TRY_EACH:
            conditional = True
        elif cmd == CMD_RUN_SEQUENCE:
            inner, cond = _parameters(_loads(arg, "run-sequence"))
            params.update(inner)
            conditional |= cond
    return params, conditional


def parse_envelope(data: bytes, trusted: Sequence[PublicKey]) -> Manifest:
    """Verify a SUIT envelope against the ``trusted`` author keys and read its manifest.

    Raises :class:`SuitError` when it is malformed, no trusted key signed it, a digest does
    not match, or it uses something unsupported (each named in the message)."""
    env = _loads(data, "SUIT envelope")
    if isinstance(env, cbor2.CBORTag):
        if env.tag != TAG_ENVELOPE:
            raise SuitError(f"CBOR tag {env.tag} is not a SUIT envelope (107)")
        env = env.value
    if not isinstance(env, Mapping) or ENV_AUTH not in env or ENV_MANIFEST not in env:
        raise SuitError("a SUIT envelope is a map with an authentication wrapper and a manifest")
    manifest_raw = env[ENV_MANIFEST]
    auth = _loads(env[ENV_AUTH], "authentication wrapper")
    if not isinstance(auth, list | tuple) or len(auth) < 2:
        raise SuitError("the authentication wrapper holds a digest and at least one signature")
    if type(manifest_raw) is not bytes or _digest(auth[0], "manifest digest") != _wrapped(
        manifest_raw
    ):
        raise SuitError("the manifest does not match the digest in the authentication wrapper")
    author = None
    for block in auth[1:]:
        author = _check_signature(block, auth[0], trusted)
        if author is not None:
            break
    if author is None:
        raise SuitError("no trusted author key signed this manifest")
    manifest = _loads(manifest_raw, "manifest")
    if not isinstance(manifest, Mapping):
        raise SuitError("the manifest is a map")
    if manifest.get(M_VERSION) != 1:
        raise SuitError(f"manifest version {manifest.get(M_VERSION)!r} is not supported (1)")
    sequence = manifest.get(M_SEQUENCE)
    if type(sequence) is not int or sequence < 0:
        raise SuitError("the manifest sequence number must be an unsigned integer")
    for key, name in SEVERABLE.items():
        member = manifest.get(key)
        if isinstance(member, list | tuple) and key in env:  # severed into the envelope: check it
            if type(env[key]) is not bytes or _wrapped(env[key]) != (
                _digest(member, f"{name} digest")
            ):
                raise SuitError(f"the envelope's {name} does not match its digest")
    common = _loads(manifest.get(M_COMMON), "common")
    if not isinstance(common, Mapping):
        raise SuitError("the common block is a map")
    components = common.get(C_COMPONENTS, [[]])
    if not isinstance(components, list | tuple) or not components:
        raise SuitError("components must be a non-empty array")
    params: dict[Any, Any] = {}
    conditional = False
    if C_SHARED in common:
        params, conditional = _parameters(_loads(common[C_SHARED], "shared sequence"))
    image_digest = (
        _digest(params[P_IMAGE_DIGEST], "image digest") if P_IMAGE_DIGEST in params else None
    )
    size = params.get(P_IMAGE_SIZE)
    block_size = params.get(PARAM_BLOCK_SIZE)
    root = params.get(PARAM_TREE_ROOT)
    if size is not None and (type(size) is not int or size < 0):
        raise SuitError("image-size must be an unsigned integer")
    if block_size is not None and (type(block_size) is not int or not 16 <= block_size <= 65536):
        raise SuitError("the block size must be an integer in 16..65536")
    if root is not None and (type(root) is not bytes or len(root) != 32):
        raise SuitError("the hash tree root must be 32 bytes")
    distributors = None
    if PARAM_DISTRIBUTORS in params:
        kids = _loads(params[PARAM_DISTRIBUTORS], "distributors")
        if not isinstance(kids, list | tuple) or any(type(k) is not bytes for k in kids):
            raise SuitError("distributors must be an array of Sender IDs")
        distributors = tuple(kids)
    return Manifest(
        bytes(data),
        sequence,
        len(components),
        image_digest,
        size,
        block_size,
        root,
        distributors,
        author,
        conditional,
    )


# --- hash tree -------------------------------------------------------------------------------


def leaf_hash(chunk: bytes) -> bytes:
    """A block's leaf in the hash tree (domain-separated from inner nodes)."""
    return hashlib.sha256(b"\x00" + chunk).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first; an odd last node moves up unchanged."""
    if not leaves:
        leaves = [leaf_hash(b"")]
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        up = [_node(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            up.append(below[-1])
        levels.append(up)
    return levels


def tree_proof(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """The siblings from leaf ``index`` up to the root."""
    proof = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index >>= 1
    return proof


def verify_proof(
    leaf: bytes,
    index: int,
    count: int,
    proof: Sequence[bytes],
    root: bytes,
    known: dict[int, bytes] | None = None,
) -> bool:
    """True when ``leaf`` is block ``index`` of ``count`` under ``root``.

    ``known`` (kept by the caller per image) holds the inner nodes of paths already
    verified, keyed by ``level << 40 | position``: the climb stops at the first one it meets
    (everything above it is proven), so most blocks cost a hash or two instead of the full
    path; the nodes of a successful climb are added. A failed one adds nothing."""
    if not 0 <= index < count:
        return False
    sha256 = hashlib.sha256
    node, width, used, n, level = leaf, count, 0, len(proof), 0
    path: list[tuple[int, bytes]] = []
    while width > 1:
        if index ^ 1 < width:
            if used == n:
                return False
            if index & 1:
                node = sha256(b"\x01" + proof[used] + node).digest()
            else:
                node = sha256(b"\x01" + node + proof[used]).digest()
            used += 1
        index >>= 1
        width = (width + 1) >> 1
        level += 1
        if known is not None:
            key = level << 40 | index
            seen = known.get(key)
            if seen is not None:
                if seen != node:
                    return False
                known.update(path)
                return True
            path.append((key, node))
    if used != n or node != root:
        return False
    if known is not None:
        known.update(path)
    return True


def proof_length(count: int, index: int) -> int:
    """How many siblings the proof of ``index`` among ``count`` blocks has."""
    n, width = 0, count
    while width > 1:
        if index ^ 1 < width:
            n += 1
        index >>= 1
        width = (width + 1) >> 1
    return n


# --- author side -------------------------------------------------------------------------------


def sign_envelope(
    image: bytes,
    *,
    sequence: int,
    block_size: int,
    key: PrivateKey,
    alg: int = -8,
    distributors: Iterable[bytes] | None = None,
    kid: bytes | None = None,
) -> bytes:
    """The firmware author's act: a SUIT envelope for ``image`` signed with ``key``."""
    if sequence < 0:
        raise SuitError("the sequence number is an unsigned integer")
    if not 16 <= block_size <= 65536:
        raise SuitError("the block size must be in 16..65536")
    chunks = [image[i : i + block_size] for i in range(0, len(image), block_size)]
    root = tree_levels([leaf_hash(c) for c in chunks])[-1][0]
    params: dict[int, Any] = {
        P_IMAGE_DIGEST: cbor2.dumps([SHA256, hashlib.sha256(image).digest()]),
        P_IMAGE_SIZE: len(image),
        PARAM_BLOCK_SIZE: block_size,
        PARAM_TREE_ROOT: root,
    }
    if distributors is not None:
        params[PARAM_DISTRIBUTORS] = cbor2.dumps([bytes(d) for d in distributors])
    common = {C_COMPONENTS: [[b"\x00"]], C_SHARED: cbor2.dumps([CMD_OVERRIDE, params])}
    manifest = cbor2.dumps({
        M_VERSION: 1, M_SEQUENCE: sequence, M_COMMON: cbor2.dumps(common),
        7: cbor2.dumps([3, 15]),  # validate: condition-image-match
    })  # fmt: skip
    digest = cbor2.dumps([SHA256, _wrapped(manifest)])
    algorithm = signature_by_id(alg)
    protected = cbor2.dumps({COSE_ALG: alg})
    signature = algorithm.sign(key, _sig_structure(protected, digest))
    unprotected = {} if kid is None else {4: kid}
    sign1 = cbor2.dumps(cbor2.CBORTag(TAG_SIGN1, [protected, unprotected, None, signature]))
    auth = cbor2.dumps([digest, sign1])
    return cbor2.dumps(cbor2.CBORTag(TAG_ENVELOPE, {ENV_AUTH: auth, ENV_MANIFEST: manifest}))
