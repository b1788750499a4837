"""The admin interface of draft-ietf-ace-oscore-gm-admin: /manage and /manage/GROUPNAME.

An administrator is a node with a commissioned OSCORE channel, like any member; what it may
do comes from admin entries in the store (the pre-authorised stand-in for an ACE token, as
the access list is for members): a group name pattern (a literal group name, or ``*`` for
every group, the draft's wildcard) and a permission bitmap (List, Create, Read, Write,
Delete). A request is allowed when an entry whose pattern matches the target group name has
the operation's permission; otherwise it is answered 4.03.

Supported: GET /manage (link-format list), POST /manage (create), GET /manage/NAME (the
whole configuration), POST /manage/NAME (overwrite) and DELETE /manage/NAME. FETCH and
PATCH/iPATCH, which the draft makes optional, are answered 4.05. Configurations this GM
cannot serve (group mode off, deterministic requests, a credential format other than
CCS, changing an existing group's algorithms) are refused with 5.03 error 12.
Each operation is one store transaction, so a group appears, changes or disappears whole.
"""

from __future__ import annotations

import time
from collections.abc import Set as AbstractSet
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from grouposcore.errors import GroupManagerRequestError, ManagerError
from grouposcore.manager.material import ecdh_params_for, sign_params_for
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    CF_PROBLEM_DETAILS,
    PROFILE_COAP_GROUP_OSCORE,
    Code,
    ErrorId,
    Method,
    Param,
    Policy,
    dumps,
    encode_problem_details,
    expect_array,
    expect_bool,
    expect_int,
    expect_map,
    expect_text,
    loads_strict,
)
from grouposcore.manager.responses import GmResponse, Notification, forbidden, reject
from grouposcore.manager.store import GroupRecord

if TYPE_CHECKING:
    from grouposcore.manager.core import GroupManager

__all__ = [
    "RT_GROUP_COLLECTION",
    "RT_GROUP_CONFIGURATION",
    "WILDCARD",
    "AdminErrorId",
    "AdminParam",
    "AdminPerm",
    "dispatch",
]

RT_GROUP_COLLECTION = "core.osc.gcoll"
RT_GROUP_CONFIGURATION = "core.osc.gconf"
WILDCARD = "*"
CF_LINK_FORMAT = 40
_CRED_FMT_KCCS = 14
_NAME_SUFFIXES = 32  # alternative names tried when the suggested one is taken


class AdminParam(IntEnum):
    """CBOR keys of the configuration and status parameters (the draft's suggested values)."""

    HKDF = -1
    CRED_FMT = -2
    GROUP_MODE = -3
    GP_ENC_ALG = -4
    SIGN_ALG = -5
    SIGN_PARAMS = -6
    PAIRWISE_MODE = -7
    ALG = -8
    ECDH_ALG = -9
    ECDH_PARAMS = -10
    RT = -11
    ACTIVE = -12
    GROUP_NAME = -13
    GROUP_DESCRIPTION = -14
    MAX_STALE_SETS = -15
    GID_REUSE = -16
    APP_GROUPS = -17
    JOINING_URI = -18
    AS_URI = -19
    DET_REQ = -25
    DET_HASH_ALG = -26
    CONF_FILTER = -27
    APP_GROUPS_DIFF = -28


class AdminPerm(IntEnum):
    """Bit numbers of the admin permission bitmap."""

    LIST = 0
    CREATE = 1
    READ = 2
    WRITE = 3
    DELETE = 4


class AdminErrorId(IntEnum):
    """The draft's additional 'error-id' values."""

    GROUP_ACTIVE = 10
    NO_GROUP_NAME = 11
    UNSUPPORTED_CONFIGURATION = 12


_CONFIG_KEYS = {
    AdminParam.HKDF,
    AdminParam.CRED_FMT,
    AdminParam.GROUP_MODE,
    AdminParam.GP_ENC_ALG,
    AdminParam.SIGN_ALG,
    AdminParam.SIGN_PARAMS,
    AdminParam.PAIRWISE_MODE,
    AdminParam.ALG,
    AdminParam.ECDH_ALG,
    AdminParam.ECDH_PARAMS,
    AdminParam.DET_REQ,
    AdminParam.DET_HASH_ALG,
}
_SETTABLE_STATUS = {
    AdminParam.ACTIVE,
    AdminParam.GROUP_NAME,
    AdminParam.GROUP_DESCRIPTION,
    AdminParam.MAX_STALE_SETS,
    Param.EXP,
    AdminParam.GID_REUSE,
    AdminParam.APP_GROUPS,
    Param.GROUP_POLICIES,
    AdminParam.AS_URI,
}
_FIXED_ON_OVERWRITE = {AdminParam.GROUP_MODE, AdminParam.PAIRWISE_MODE, AdminParam.GROUP_NAME,
                       AdminParam.GID_REUSE}  # fmt: skip


def _unsupported(detail: str) -> GroupManagerRequestError:
    return GroupManagerRequestError(
        detail, code=Code.SERVICE_UNAVAILABLE, error_id=AdminErrorId.UNSUPPORTED_CONFIGURATION
    )


def permissions(gm: GroupManager, node: str | None, group: str) -> int:
    """The union of ``node``'s admin permissions whose pattern matches ``group``; every
    permission for ``None``, the local operator who holds the database itself."""
    if node is None:
        return (1 << len(AdminPerm)) - 1
    perms = 0
    for pattern, bits in gm.store.admin_entries(node):
        if pattern in (WILDCARD, group):
            perms |= bits
    return perms


def _require(gm: GroupManager, node: str | None, group: str, perm: AdminPerm) -> None:
    if not permissions(gm, node, group) & (1 << perm):
        raise forbidden(f"{node} lacks the {perm.name.title()} permission for {group}")


def dispatch(
    gm: GroupManager,
    node: str | None,
    method: Method,
    path: tuple[str, ...],
    payload: bytes,
    cf: int | None,
    base_uri: str,
) -> GmResponse:
    """Serve one request under /manage of the authenticated ``node`` (``None``: the local
    operator, e.g. the CLI on the database file, who may do everything)."""
    if node is not None and not gm.store.admin_entries(node):
        raise forbidden(f"{node} is not an administrator")
    if len(path) == 1:
        if method == Method.GET:
            return _list(gm, node)
        if method == Method.POST:
            return _create(gm, node, _config_body(payload, cf), base_uri)
        raise GroupManagerRequestError("method not allowed", code=Code.METHOD_NOT_ALLOWED)
    if len(path) != 2:
        raise GroupManagerRequestError("no such resource", code=Code.NOT_FOUND)
    name = path[1]
    needed = {Method.GET: AdminPerm.READ, Method.POST: AdminPerm.WRITE,
              Method.DELETE: AdminPerm.DELETE}.get(method)  # fmt: skip
    if needed is None:
        raise GroupManagerRequestError("method not allowed", code=Code.METHOD_NOT_ALLOWED)
    _require(gm, node, name, needed)
    g = gm.store.group(name)
    if g is None:
        raise GroupManagerRequestError("no such group", code=Code.NOT_FOUND)
    if method == Method.GET:
        body = configuration(gm, g, base_uri)
        return GmResponse(Code.CONTENT, dumps(body), CF_ACE_GROUPCOMM)
    if method == Method.POST:
        return _overwrite(gm, name, _config_body(payload, cf), base_uri)
    return _delete(gm, name)


def _config_body(payload: bytes, cf: int | None) -> dict[Any, Any]:
    if cf != CF_ACE_GROUPCOMM:
        raise GroupManagerRequestError(
            "expected application/ace-groupcomm+cbor", code=Code.UNSUPPORTED_CONTENT_FORMAT
        )
    return expect_map(loads_strict(payload, "group configuration"), "group configuration")


def _list(gm: GroupManager, node: str | None) -> GmResponse:
    links = [
        f'</manage/{g.name}>;rt="{RT_GROUP_CONFIGURATION}"'
        for g in gm.store.groups()
        if permissions(gm, node, g.name) & (1 << AdminPerm.LIST)
    ]
    return GmResponse(Code.CONTENT, ",".join(links).encode(), CF_LINK_FORMAT)


def configuration(gm: GroupManager, g: GroupRecord, base_uri: str) -> dict[int, Any]:
    """The full configuration and status representation of a group."""
    info = _info(gm, g.name)
    pairwise = g.aead_alg is not None and g.ecdh_alg is not None
    body: dict[int, Any] = {
        AdminParam.HKDF: g.hkdf_alg,
        AdminParam.CRED_FMT: g.cred_fmt,
        AdminParam.GROUP_MODE: True,
        AdminParam.GP_ENC_ALG: g.group_enc_alg,
        AdminParam.SIGN_ALG: g.sign_alg,
        AdminParam.SIGN_PARAMS: sign_params_for(g.sign_alg),
        AdminParam.PAIRWISE_MODE: pairwise,
        AdminParam.ALG: g.aead_alg if pairwise else None,
        AdminParam.ECDH_ALG: g.ecdh_alg if pairwise else None,
        AdminParam.ECDH_PARAMS: ecdh_params_for(g.sign_alg) if pairwise else None,
        AdminParam.RT: RT_GROUP_CONFIGURATION,
        AdminParam.ACTIVE: g.active,
        AdminParam.GROUP_NAME: g.name,
        AdminParam.GROUP_DESCRIPTION: info.get(AdminParam.GROUP_DESCRIPTION),
        Param.ACE_GROUPCOMM_PROFILE: PROFILE_COAP_GROUP_OSCORE,
        AdminParam.MAX_STALE_SETS: g.stale_sets_kept,
        Param.EXP: g.exp,
        AdminParam.GID_REUSE: True,
        AdminParam.APP_GROUPS: info.get(AdminParam.APP_GROUPS, []),
        AdminParam.JOINING_URI: f"{base_uri}/ace-group/{g.name}/",
        Param.GROUP_POLICIES: loads_strict(g.policies, "stored policies"),
    }
    if pairwise:
        body[AdminParam.DET_REQ] = False
    if AdminParam.AS_URI in info:
        body[AdminParam.AS_URI] = info[AdminParam.AS_URI]
    return body


def _info(gm: GroupManager, name: str) -> dict[int, Any]:
    raw = gm.store.group_info(name)
    return {} if raw is None else expect_map(loads_strict(raw, "stored group info"))


def _status(req: dict[Any, Any], now: float) -> dict[str, Any]:
    """The settable status parameters, checked, with the draft's defaults filled in."""
    out: dict[str, Any] = {
        "active": expect_bool(req.get(AdminParam.ACTIVE, False), "'active'"),
        "max_stale_sets": expect_int(req.get(AdminParam.MAX_STALE_SETS, 3),
                                     "'max_stale_sets'", lo=2, hi=1 << 16),
        "info": {},
    }  # fmt: skip
    description = req.get(AdminParam.GROUP_DESCRIPTION)
    if description is not None:
        out["info"][AdminParam.GROUP_DESCRIPTION] = expect_text(description, "'group_description'")
    apps = expect_array(req.get(AdminParam.APP_GROUPS, []), "'app_groups'", max_len=256)
    out["info"][AdminParam.APP_GROUPS] = [expect_text(a, "application group", max_len=255)
                                          for a in apps]  # fmt: skip
    if AdminParam.AS_URI in req:
        out["info"][AdminParam.AS_URI] = expect_text(req[AdminParam.AS_URI], "'as_uri'")
    if Param.EXP in req:
        exp = expect_int(req[Param.EXP], "'exp'", lo=0, hi=1 << 40)
        if exp <= now:
            raise reject("'exp' is not in the future")
        out["exp"] = exp
    if Param.GROUP_POLICIES in req:
        policies = expect_map(req[Param.GROUP_POLICIES], "'group_policies'")
        known = {int(p) for p in Policy}
        for key, value in policies.items():
            if key not in known:
                raise reject(f"unknown group policy {key!r}")
            expect_int(value, "group policy value", lo=0, hi=1 << 32)
        out["policies"] = dumps(policies)
    return out


def _check_keys(req: dict[Any, Any], allowed: AbstractSet[int]) -> None:
    for key in req:
        if not isinstance(key, int) or isinstance(key, bool) or key not in allowed:
            raise reject(f"parameter {key!r} is not accepted here")


def _algorithms(req: dict[Any, Any]) -> dict[str, Any]:
    """create_group keyword arguments from the configuration parameters (defaults: the
    profile's)."""
    if not expect_bool(req.get(AdminParam.GROUP_MODE, True), "'group_mode'"):
        raise _unsupported("groups without the group mode are not supported")
    if req.get(AdminParam.DET_REQ, False) is not False or AdminParam.DET_HASH_ALG in req:
        raise _unsupported("deterministic requests are not supported")
    if expect_int(req.get(AdminParam.CRED_FMT, _CRED_FMT_KCCS), "'cred_fmt'") != _CRED_FMT_KCCS:
        raise _unsupported("only CWT Claims Sets (cred_fmt 14) are supported")
    kwargs: dict[str, Any] = {
        "hkdf_alg": expect_int(req.get(AdminParam.HKDF, 5), "'hkdf'"),
        "group_enc_alg": expect_int(req.get(AdminParam.GP_ENC_ALG, 10), "'gp_enc_alg'"),
        "sign_alg": expect_int(req.get(AdminParam.SIGN_ALG, -8), "'sign_alg'"),
    }
    if expect_bool(req.get(AdminParam.PAIRWISE_MODE, True), "'pairwise_mode'"):
        kwargs["aead_alg"] = expect_int(req.get(AdminParam.ALG, 10), "'alg'")
        kwargs["ecdh_alg"] = expect_int(req.get(AdminParam.ECDH_ALG, -27), "'ecdh_alg'")
    else:
        for key in (AdminParam.ALG, AdminParam.ECDH_ALG, AdminParam.ECDH_PARAMS):
            if req.get(key) is not None:
                raise reject("pairwise-mode parameters given with 'pairwise_mode' false")
        kwargs["aead_alg"] = kwargs["ecdh_alg"] = None
    try:
        if AdminParam.SIGN_PARAMS in req and req[AdminParam.SIGN_PARAMS] != sign_params_for(
            kwargs["sign_alg"]
        ):
            raise _unsupported("these 'sign_params' are not supported")
        if (
            req.get(AdminParam.ECDH_PARAMS) is not None
            and kwargs["ecdh_alg"] is not None
            and req[AdminParam.ECDH_PARAMS] != ecdh_params_for(kwargs["sign_alg"])
        ):
            raise _unsupported("these 'ecdh_params' are not supported")
    except ManagerError as e:
        raise _unsupported(str(e)) from None
    return kwargs


def _create(gm: GroupManager, node: str | None, req: dict[Any, Any], base_uri: str) -> GmResponse:
    _check_keys(req, _CONFIG_KEYS | _SETTABLE_STATUS)
    wanted = req.get(AdminParam.GROUP_NAME)
    if not isinstance(wanted, str):
        raise reject("'group_name' (a text string) is required")
    _require(gm, node, wanted, AdminPerm.CREATE)
    kwargs = _algorithms(req)
    now = time.time()
    status = _status(req, now)
    requested_reuse = expect_bool(req.get(AdminParam.GID_REUSE, False), "'gid_reuse'")
    with gm.store.transaction():
        name = _free_name(gm, node, wanted)
        lifetime = status["exp"] - int(now) if "exp" in status else 30 * 24 * 3600
        try:
            gm.create_group(name, lifetime=lifetime, stale_sets_kept=status["max_stale_sets"],
                            **kwargs)  # fmt: skip
        except ManagerError as e:
            raise _unsupported(str(e)) from None
        if "policies" in status:
            gm.store.set_policies(name, status["policies"])
        gm.store.set_group_flags(name, active=status["active"])
        gm.store.set_group_info(name, dumps(status["info"]))
    body: dict[int, Any] = {
        AdminParam.GROUP_NAME: name,
        AdminParam.JOINING_URI: f"{base_uri}/ace-group/{name}/",
    }
    if AdminParam.AS_URI in status["info"]:
        body[AdminParam.AS_URI] = status["info"][AdminParam.AS_URI]
    if not requested_reuse:
        body[AdminParam.GID_REUSE] = True  # not the recommended default: say so
    return GmResponse(Code.CREATED, dumps(body), CF_ACE_GROUPCOMM,
                      location_path=("manage", name))  # fmt: skip


def _free_name(gm: GroupManager, node: str | None, wanted: str) -> str:
    """``wanted`` if free, else an alternative the administrator holds the same permissions
    for (5.03 error 11 when there is none)."""
    if gm.store.group(wanted) is None:
        return wanted
    perms = permissions(gm, node, wanted)
    for i in range(2, _NAME_SUFFIXES + 2):
        candidate = f"{wanted[:60]}-{i}"
        if gm.store.group(candidate) is None and permissions(gm, node, candidate) == perms:
            return candidate
    raise GroupManagerRequestError("no group name available", code=Code.SERVICE_UNAVAILABLE,
                                   error_id=AdminErrorId.NO_GROUP_NAME)  # fmt: skip


def _overwrite(gm: GroupManager, name: str, req: dict[Any, Any], base_uri: str) -> GmResponse:
    _check_keys(req, (_CONFIG_KEYS | _SETTABLE_STATUS) - _FIXED_ON_OVERWRITE)
    now = time.time()
    status = _status(req, now)
    with gm.store.transaction():
        g = gm.store.group(name)
        if g is None:
            raise GroupManagerRequestError("no such group", code=Code.NOT_FOUND)
        current = configuration(gm, g, base_uri)
        for key in _CONFIG_KEYS & set(req):
            if req[key] != current.get(key):
                raise _unsupported("an existing group's algorithms cannot be changed")
        exp = status.get("exp", g.exp)
        gm.store.set_group_settings(name, stale_sets_kept=status["max_stale_sets"], exp=exp,
                                    lifetime=max(1, exp - int(now)))  # fmt: skip
        if "policies" in status:
            gm.store.set_policies(name, status["policies"])
        gm.store.set_group_info(name, dumps(status["info"]))
        notes: list[Notification] = []
        if g.active != status["active"]:
            notes = gm.set_active(name, status["active"])
    body: dict[int, Any] = {
        AdminParam.GROUP_NAME: name,
        AdminParam.JOINING_URI: f"{base_uri}/ace-group/{name}/",
    }
    if AdminParam.AS_URI in status["info"]:
        body[AdminParam.AS_URI] = status["info"][AdminParam.AS_URI]
    return GmResponse(Code.CHANGED, dumps(body), CF_ACE_GROUPCOMM, notifications=tuple(notes))


def _delete(gm: GroupManager, name: str) -> GmResponse:
    with gm.store.transaction():
        g = gm.store.group(name)
        if g is None:
            raise GroupManagerRequestError("no such group", code=Code.NOT_FOUND)
        if g.active:
            raise reject("the group is active; deactivate it first", AdminErrorId.GROUP_ACTIVE)
        members = gm.store.members(name)
        gm.store.delete_group(name)
    gone = encode_problem_details(ErrorId.GROUP_DELETED, "group deleted")
    notes = tuple(
        Notification(m.node, name, ("ace-group", name), Code.NOT_FOUND, gone, CF_PROBLEM_DETAILS)
        for m in members
    )
    return GmResponse(Code.DELETED, notifications=notes)
