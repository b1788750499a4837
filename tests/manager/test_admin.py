"""The admin interface (draft-ietf-ace-oscore-gm-admin) in the sans-I/O core, on both stores:
/manage lists and creates groups, /manage/NAME reads, overwrites and deletes one; only
administrators with the matching permission get through."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from grouposcore.manager.admin import AdminErrorId, AdminParam, AdminPerm
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    Code,
    ErrorId,
    Param,
    decode_problem_details,
)
from tests.manager.helpers import Harness, check_invariants

ALL = list(AdminPerm)


@pytest.fixture
def h(db_url: str) -> Any:
    gm = GroupManager(db_url)
    gm.base_uri = "coap://gm.example"
    yield Harness(gm)
    gm.close()


def call(h: Harness, node: str, method: str, path: str, body: Any = None) -> Any:
    payload = b"" if body is None else cbor2.dumps(body)
    cf = None if body is None else CF_ACE_GROUPCOMM
    return h.request(node, method, path, payload, cf)


def test_admin_creates_reads_overwrites_and_deletes_a_group(h: Harness) -> None:
    h.gm.allow_admin("admin", "*", ALL)
    r = call(h, "admin", "POST", "manage", {
        AdminParam.GROUP_NAME: "gp4", AdminParam.ACTIVE: True,
        AdminParam.GROUP_DESCRIPTION: "rooms 1 and 2", AdminParam.APP_GROUPS: ["room1"],
        AdminParam.GP_ENC_ALG: 10, AdminParam.HKDF: 5, AdminParam.MAX_STALE_SETS: 4,
    })  # fmt: skip
    assert r.code == Code.CREATED and r.location_path == ("manage", "gp4")
    created = cbor2.loads(r.payload)
    assert created[AdminParam.GROUP_NAME] == "gp4"
    assert created[AdminParam.JOINING_URI] == "coap://gm.example/ace-group/gp4/"
    g = h.gm.group("gp4")
    assert g is not None and g.active and g.stale_sets_kept == 4
    # the group is real: nodes join it
    h.join("n1", "gp4")
    h.join("n2", "gp4")
    check_invariants(h.gm)

    r = call(h, "admin", "GET", "manage")
    assert r.code == Code.CONTENT and r.content_format == 40
    assert r.payload == b'</manage/gp4>;rt="core.osc.gconf"'
    conf = cbor2.loads(call(h, "admin", "GET", "manage/gp4").payload)
    assert conf[AdminParam.GROUP_DESCRIPTION] == "rooms 1 and 2"
    assert conf[AdminParam.APP_GROUPS] == ["room1"]
    assert conf[AdminParam.SIGN_ALG] == -8 and conf[AdminParam.PAIRWISE_MODE] is True
    now = h.gm.group("gp4")  # the joins rekeyed it: exp moved on if a second ticked over
    assert now is not None
    assert conf[AdminParam.RT] == "core.osc.gconf" and conf[Param.EXP] == now.exp

    # overwrite: inactive (the default when 'active' is left out), new description
    r = call(h, "admin", "POST", "manage/gp4", {AdminParam.GROUP_DESCRIPTION: "room 3"})
    assert r.code == Code.CHANGED
    assert {n.node for n in r.notifications} == {"n1", "n2"}  # observers of /active
    conf = cbor2.loads(call(h, "admin", "GET", "manage/gp4").payload)
    assert conf[AdminParam.ACTIVE] is False and conf[AdminParam.GROUP_DESCRIPTION] == "room 3"
    assert conf[AdminParam.APP_GROUPS] == []

    r = call(h, "admin", "DELETE", "manage/gp4")
    assert r.code == Code.DELETED
    assert {n.node for n in r.notifications} == {"n1", "n2"}
    assert all(decode_problem_details(n.payload)[0] == ErrorId.GROUP_DELETED
               for n in r.notifications)  # fmt: skip
    assert h.gm.group("gp4") is None and h.gm.members("gp4") == []
    assert call(h, "admin", "GET", "manage/gp4").code == Code.NOT_FOUND
    assert call(h, "n1", "GET", "ace-group/gp4").code in (Code.FORBIDDEN, Code.NOT_FOUND)
    check_invariants(h.gm)


def test_node_without_admin_rights_is_refused(h: Harness) -> None:
    h.gm.create_group("g")
    h.join("member", "g")
    for method, path, body in (
        ("GET", "manage", None),
        ("POST", "manage", {AdminParam.GROUP_NAME: "x"}),
        ("GET", "manage/g", None),
        ("DELETE", "manage/g", None),
    ):
        assert call(h, "member", method, path, body).code == Code.FORBIDDEN
    assert h.gm.group("x") is None and h.gm.group("g") is not None


def test_admin_permissions_are_per_group_and_per_operation(h: Harness) -> None:
    h.gm.create_group("mine")
    h.gm.create_group("theirs")
    h.gm.allow_admin("ops", "mine", [AdminPerm.LIST, AdminPerm.READ])
    assert call(h, "ops", "GET", "manage").payload == b'</manage/mine>;rt="core.osc.gconf"'
    assert call(h, "ops", "GET", "manage/mine").code == Code.CONTENT
    assert call(h, "ops", "GET", "manage/theirs").code == Code.FORBIDDEN
    assert call(h, "ops", "DELETE", "manage/mine").code == Code.FORBIDDEN
    assert call(h, "ops", "POST", "manage/mine", {}).code == Code.FORBIDDEN
    assert call(h, "ops", "POST", "manage", {AdminParam.GROUP_NAME: "new"}).code == Code.FORBIDDEN
    assert h.gm.group("mine") is not None and h.gm.group("new") is None


def test_active_group_is_not_deleted(h: Harness) -> None:
    h.gm.allow_admin("admin", "*", ALL)
    h.gm.create_group("g")
    r = call(h, "admin", "DELETE", "manage/g")
    assert r.code == Code.BAD_REQUEST
    assert decode_problem_details(r.payload)[0] == AdminErrorId.GROUP_ACTIVE
    assert h.gm.group("g") is not None


@pytest.mark.parametrize("body", [
    {AdminParam.GROUP_MODE: False},
    {AdminParam.CRED_FMT: 33},
    {AdminParam.DET_REQ: True},
    {AdminParam.SIGN_ALG: -7, AdminParam.SIGN_PARAMS: [[1], [1, 6]]},
])  # fmt: skip
def test_unsupported_configuration_is_5_03_and_creates_nothing(h: Harness, body: Any) -> None:
    h.gm.allow_admin("admin", "*", ALL)
    r = call(h, "admin", "POST", "manage", {AdminParam.GROUP_NAME: "g", **body})
    assert r.code == Code.SERVICE_UNAVAILABLE
    assert decode_problem_details(r.payload)[0] == AdminErrorId.UNSUPPORTED_CONFIGURATION
    assert h.gm.group("g") is None


def test_bad_configuration_is_4_00(h: Harness) -> None:
    h.gm.allow_admin("admin", "*", ALL)
    for body in ({AdminParam.GROUP_NAME: "g", AdminParam.RT: "x"},
                 {AdminParam.GROUP_NAME: "g", Param.EXP: 1},
                 {AdminParam.GROUP_NAME: "g", AdminParam.MAX_STALE_SETS: 1},
                 {AdminParam.GROUP_NAME: "g", 999: 1}):  # fmt: skip
        assert call(h, "admin", "POST", "manage", body).code == Code.BAD_REQUEST, body
    assert h.gm.store.groups() == []
    h.gm.create_group("g")
    r = call(h, "admin", "POST", "manage/g", {AdminParam.GROUP_NAME: "other"})
    assert r.code == Code.BAD_REQUEST
    r = call(h, "admin", "POST", "manage/g", {AdminParam.GP_ENC_ALG: 11})
    assert r.code == Code.SERVICE_UNAVAILABLE


def test_taken_name_gets_an_alternative_with_the_same_permissions(h: Harness) -> None:
    h.gm.allow_admin("admin", "*", ALL)
    h.gm.create_group("g")
    r = call(h, "admin", "POST", "manage", {AdminParam.GROUP_NAME: "g"})
    assert r.code == Code.CREATED
    assert cbor2.loads(r.payload)[AdminParam.GROUP_NAME] == "g-2"
    assert r.location_path == ("manage", "g-2")
    # an administrator of "g" alone holds different permissions for any alternative
    h.gm.allow_admin("narrow", "g", ALL)
    r = call(h, "narrow", "POST", "manage", {AdminParam.GROUP_NAME: "g"})
    assert r.code == Code.SERVICE_UNAVAILABLE
    assert decode_problem_details(r.payload)[0] == AdminErrorId.NO_GROUP_NAME
