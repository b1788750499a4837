"""Wire vocabulary of the Group Manager interface (RFC 9594 + draft-ietf-ace-key-groupcomm-oscore).

Parameter labels, roles and their AIF scope encoding, the concise problem-details body, and a
strict CBOR reader. Both the Group Manager and the joining member use this module, so the two
sides cannot drift apart. Values marked "suggested" in the drafts (digest §15, §16 item 6) are
used as suggested.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import Any, NoReturn

import cbor2

# The CoAP codes the Group Manager answers with: the one Code enum of the CoAP layer,
# re-exported here for the manager's callers.
from grouposcore.coap.codes import Code
from grouposcore.errors import GroupManagerRequestError, ManagerMessageError

__all__ = [
    "CF_ACE_GROUPCOMM",
    "CF_PROBLEM_DETAILS",
    "FORBIDDEN_ROLE_SETS",
    "GKTY_GROUP_OSCORE",
    "MEMBER_ROLE_SETS",
    "PD_ACE_GROUPCOMM_ERROR",
    "PD_DETAIL",
    "PD_TITLE",
    "PROFILE_COAP_GROUP_OSCORE",
    "Code",
    "ErrorId",
    "KeyParam",
    "Method",
    "Param",
    "Policy",
    "Role",
    "bstr_cbor",
    "decode_problem_details",
    "decode_scope",
    "dumps",
    "encode_problem_details",
    "encode_scope",
    "expect_array",
    "expect_bool",
    "expect_bytes",
    "expect_int",
    "expect_map",
    "expect_text",
    "loads_strict",
    "method_from",
    "roles_from_tperm",
    "tperm",
    "validate_member_roles",
]

CF_ACE_GROUPCOMM = 261  # application/ace-groupcomm+cbor
CF_PROBLEM_DETAILS = 257  # application/concise-problem-details+cbor

GKTY_GROUP_OSCORE = 1  # 'gkty' of a Group_OSCORE_Input_Material object (suggested)
PROFILE_COAP_GROUP_OSCORE = 1  # 'ace_groupcomm_profile' coap_group_oscore_app (suggested)

# RFC 9290 standard problem-detail keys, and RFC 9594's custom key 'ace-groupcomm-error'.
PD_TITLE = -1
PD_DETAIL = -2
PD_ACE_GROUPCOMM_ERROR = 0
_PD_ERROR_ID = 0


class Param(IntEnum):
    """ACE groupcomm parameter labels (RFC 9594 §7, OSCORE profile additions)."""

    GID = 0
    GNAME = 1
    GURI = 2
    SCOPE = 3
    GET_CREDS = 4
    CLIENT_CRED = 5
    CNONCE = 6
    GKTY = 7
    KEY = 8
    NUM = 9
    ACE_GROUPCOMM_PROFILE = 10
    EXP = 11
    EXI = 12
    CREDS = 13
    PEER_ROLES = 14
    PEER_IDENTIFIERS = 15
    GROUP_POLICIES = 16
    KDC_CRED = 17
    KDC_NONCE = 18
    KDC_CRED_VERIFY = 19
    REKEYING_SCHEME = 20
    GROUP_SENDER_ID = 21
    CLIENT_CRED_VERIFY = 24
    CREDS_REPO = 25
    CONTROL_URI = 26
    MGT_KEY_MATERIAL = 27
    CONTROL_GROUP_URI = 28
    SIGN_INFO = 29
    KDCCHALLENGE = 30
    ECDH_INFO = 31
    KDC_DH_CREDS = 32
    SIGN_ENC_KEY = 33
    STALE_NODE_IDS = 34


class KeyParam(IntEnum):
    """Labels inside the Group_OSCORE_Input_Material object ('key'); 7-13 are suggested."""

    ID = 0
    VERSION = 1
    MS = 2
    HKDF = 3
    ALG = 4
    SALT = 5
    CONTEXT_ID = 6
    GROUP_SENDER_ID = 7
    CRED_FMT = 8
    GP_ENC_ALG = 9
    SIGN_ALG = 10
    SIGN_PARAMS = 11
    ECDH_ALG = 12
    ECDH_PARAMS = 13


class Policy(IntEnum):
    """Keys of the 'group_policies' map and their defaults (RFC 9594 §4.3.1)."""

    KEY_UPDATE_CHECK_INTERVAL = 1
    EXPIRATION_DELTA = 2


class ErrorId(IntEnum):
    """'error-id' values of the 'ace-groupcomm-error' problem detail (RFC 9594 §9 + profile)."""

    ONLY_MEMBERS = 0
    ROLES_INCONSISTENT = 1
    CRED_INCOMPATIBLE = 2
    INVALID_POP = 3
    NO_NODE_IDS = 4
    MEMBERSHIP_TERMINATED = 5
    GROUP_DELETED = 6
    NO_SIGNATURES = 7
    VERIFIERS_ONLY = 8
    GROUP_INACTIVE = 9


class Method(IntEnum):
    """CoAP request methods the interface uses."""

    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4
    FETCH = 5


def method_from(method: str | int) -> Method | None:
    """Map 'GET' / 1 style method designations to :class:`Method`; None if not one of ours."""
    if isinstance(method, bool):
        return None
    if isinstance(method, str):
        return Method.__members__.get(method.upper())
    if isinstance(method, int):
        try:
            return Method(method)
        except ValueError:
            return None
    return None


# --- roles -------------------------------------------------------------------------------


class Role(IntEnum):
    """Group OSCORE roles (profile §3.1); 0 is reserved."""

    REQUESTER = 1
    RESPONDER = 2
    MONITOR = 3
    VERIFIER = 4


_ALL_ROLE_BITS = sum(1 << r for r in Role)


def tperm(roles: Iterable[Role | int]) -> int:
    """The AIF permission bitmap: the sum of 2**role over the roles."""
    value = 0
    for r in roles:
        value |= 1 << Role(r)
    return value


def roles_from_tperm(value: int) -> frozenset[Role]:
    """Inverse of :func:`tperm`; unknown or reserved bits raise ManagerMessageError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ManagerMessageError(f"role bitmap must be a positive integer, got {value!r}")
    if value & ~_ALL_ROLE_BITS:
        raise ManagerMessageError(f"role bitmap {value} has reserved or unknown bits set")
    return frozenset(r for r in Role if value & (1 << r))


R, S, M = Role.REQUESTER, Role.RESPONDER, Role.MONITOR
# Combinations a node may hold as a member. Verifier is for external signature checkers,
# not a member role, and a Monitor (silent server) never sends requests or responses.
MEMBER_ROLE_SETS: frozenset[frozenset[Role]] = frozenset(
    {frozenset({R}), frozenset({S}), frozenset({R, S}), frozenset({M})}
)
FORBIDDEN_ROLE_SETS: frozenset[frozenset[Role]] = frozenset({frozenset({R, M}), frozenset({S, M})})


def validate_member_roles(value: int) -> frozenset[Role]:
    """Roles of a Join Request; inconsistent sets raise GroupManagerRequestError (error-id 1)."""
    try:
        roles = roles_from_tperm(value)
    except ManagerMessageError as e:
        raise GroupManagerRequestError(str(e), error_id=ErrorId.ROLES_INCONSISTENT) from None
    if roles not in MEMBER_ROLE_SETS:
        names = "+".join(r.name.title() for r in sorted(roles))
        raise GroupManagerRequestError(
            f"roles {names} cannot be held together by a member",
            error_id=ErrorId.ROLES_INCONSISTENT,
        )
    return roles


# --- AIF scope ---------------------------------------------------------------------------


def encode_scope(entries: Sequence[tuple[str, int]]) -> bytes:
    """The scope bytes: CBOR array of [gname, Tperm] entries (carried as a bstr)."""
    if not entries:
        raise ManagerMessageError("a scope needs at least one entry")
    out = []
    for name, perm in entries:
        if not isinstance(name, str) or not name:
            raise ManagerMessageError("scope group names are non-empty text strings")
        roles_from_tperm(perm)
        out.append([name, perm])
    return cbor2.dumps(out)


def decode_scope(scope: bytes) -> list[tuple[str, int]]:
    """Parse AIF scope bytes into (gname, Tperm) pairs, rejecting any other shape."""
    value = loads_strict(scope, "scope")
    if not isinstance(value, list) or not value:
        raise ManagerMessageError("scope must be a non-empty CBOR array")
    entries: list[tuple[str, int]] = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 2:
            raise ManagerMessageError("scope entries are [gname, permissions] pairs")
        name, perm = entry
        if not isinstance(name, str) or not name:
            raise ManagerMessageError("scope group name must be a non-empty text string")
        roles_from_tperm(perm)
        entries.append((name, perm))
    return entries


def bstr_cbor(data: bytes) -> bytes:
    """CBOR encoding of ``data`` as a byte string: the building block of every PoP input."""
    return cbor2.dumps(bytes(data))


# --- strict CBOR ---------------------------------------------------------------------------

_PLAIN = (int, bytes, str, bool, type(None), float)


def _check_plain(value: Any, depth: int = 0) -> None:
    # cbor2 turns tags and exotic items into datetimes, sets, CBORTag, tuples (array map
    # keys)...; none belongs in this interface, so only JSON-like shapes pass.
    if depth > 16:
        raise ManagerMessageError("CBOR nesting too deep")
    if isinstance(value, list):
        for v in value:
            _check_plain(v, depth + 1)
    elif type(value) is dict:
        for k, v in value.items():
            if not isinstance(k, int | str) or isinstance(k, bool):
                raise ManagerMessageError("map keys must be integers or text strings")
            _check_plain(v, depth + 1)
    elif not isinstance(value, _PLAIN):
        raise ManagerMessageError(f"unexpected CBOR item of type {type(value).__name__}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ManagerMessageError("non-finite float")


def _no_tags(decoder: Any) -> NoReturn:
    raise ValueError("CBOR tags are not used in this interface")


# Tags cbor2 would silently interpret (dates, bignums, self-description...): refuse them all.
# Unknown tags come back as CBORTag objects, which _check_plain refuses.
_TAG_REFUSALS = {
    t: _no_tags
    for t in (*range(0, 6), 21, 22, 23, 24, 25, 28, 29, 30, 32, 33, 34, 35, 36, 37, 38, 100,
              256, 258, 259, 260, 261, 262, 263, 1004, 1040, 55799)
}  # fmt: skip


def loads_strict(data: bytes, what: str = "payload") -> Any:
    """Decode exactly one plain CBOR item; anything else raises ManagerMessageError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ManagerMessageError(f"{what} must be bytes")
    data = bytes(data)
    if not data:
        raise ManagerMessageError(f"empty {what}")
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            fp,
            read_size=1,
            allow_duplicate_keys=False,
            max_depth=16,
            semantic_decoders=_TAG_REFUSALS,
        ).decode()
    except Exception as e:  # cbor2 raises many unrelated types on hostile input
        raise ManagerMessageError(f"malformed CBOR in {what}: {type(e).__name__}") from None
    if fp.tell() != len(data):
        raise ManagerMessageError(f"trailing bytes after the CBOR item in {what}")
    _check_plain(value)
    return value


def dumps(value: Any) -> bytes:
    """CBOR-encode an outgoing message (our own data, so failures are programming errors)."""
    return cbor2.dumps(value)


def _bad(what: str, expected: str) -> NoReturn:
    raise ManagerMessageError(f"{what} must be {expected}")


def expect_map(value: Any, what: str = "payload") -> dict[Any, Any]:
    """The value as a CBOR map."""
    if type(value) is not dict:
        _bad(what, "a CBOR map")
    return value


def expect_bytes(value: Any, what: str, *, min_len: int = 0, max_len: int = 1 << 16) -> bytes:
    """A byte string within length bounds."""
    if not isinstance(value, bytes):
        _bad(what, "a byte string")
    if not min_len <= len(value) <= max_len:
        _bad(what, f"{min_len}..{max_len} bytes long")
    return value


def expect_int(value: Any, what: str, *, lo: int = -(1 << 63), hi: int = (1 << 64) - 1) -> int:
    """An integer (not a bool) within bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        _bad(what, "an integer")
    if not lo <= value <= hi:
        _bad(what, f"within {lo}..{hi}")
    return value


def expect_text(value: Any, what: str, *, max_len: int = 1024) -> str:
    """A text string of bounded length."""
    if not isinstance(value, str) or len(value) > max_len:
        _bad(what, f"a text string of at most {max_len} characters")
    return value


def expect_bool(value: Any, what: str) -> bool:
    """A CBOR true/false."""
    if not isinstance(value, bool):
        _bad(what, "true or false")
    return value


def expect_array(value: Any, what: str, *, max_len: int = 4096) -> list[Any]:
    """A CBOR array of bounded length."""
    if not isinstance(value, list) or len(value) > max_len:
        _bad(what, f"an array of at most {max_len} items")
    return value


# --- problem details -----------------------------------------------------------------------


def encode_problem_details(
    error_id: int | None, detail: str | None = None, title: str | None = None
) -> bytes:
    """A concise problem-details body (RFC 9290) with the 'ace-groupcomm-error' entry."""
    body: dict[int, Any] = {}
    if title:
        body[PD_TITLE] = title
    if detail:
        body[PD_DETAIL] = detail
    if error_id is not None:
        body[PD_ACE_GROUPCOMM_ERROR] = {_PD_ERROR_ID: int(error_id)}
    return cbor2.dumps(body)


def decode_problem_details(payload: bytes) -> tuple[int | None, str | None]:
    """(error-id, detail) of a problem-details body; ManagerMessageError when malformed."""
    body = expect_map(loads_strict(payload, "problem details"), "problem details")
    detail = body.get(PD_DETAIL)
    if detail is not None:
        detail = expect_text(detail, "problem detail 'detail'", max_len=4096)
    entry = body.get(PD_ACE_GROUPCOMM_ERROR)
    if entry is None:
        return None, detail
    entry = expect_map(entry, "'ace-groupcomm-error'")
    return expect_int(entry.get(_PD_ERROR_ID), "'error-id'", lo=0, hi=1 << 32), detail
