"""The admin interface over the network: an administrator's OSCORE channel to a running GM
creates, reads, changes and deletes groups; a member of the deleted group is told; a node
without admin rights is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from grouposcore.errors import GroupManagerRequestError
from grouposcore.manager.admin import AdminParam, AdminPerm
from grouposcore.manager.admin_client import AdminClient
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import Code
from grouposcore.manager.runtime import GroupMember
from grouposcore.manager.service import GroupManagerService
from grouposcore.transport import Endpoint
from tests.manager.helpers import RS


def test_remote_administration_over_oscore(db_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        gm = GroupManager(db_url)
        svc = GroupManagerService(gm)
        await svc.start(("127.0.0.1", 0))
        assert svc.endpoint is not None
        address = svc.endpoint.address
        ep = await Endpoint.create(("127.0.0.1", 0))
        member = None
        try:
            gm.allow_admin("admin", "*", list(AdminPerm))
            admin = AdminClient(GroupManagerClient(ep, address, svc.commission("admin")))
            outsider = AdminClient(GroupManagerClient(ep, address, svc.commission("lamp")))

            created = await admin.create(
                {
                    AdminParam.GROUP_NAME: "hall",
                    AdminParam.ACTIVE: True,
                    AdminParam.GROUP_DESCRIPTION: "the hall",
                }
            )
            assert created[AdminParam.GROUP_NAME] == "hall"
            assert created[AdminParam.JOINING_URI] == f"{gm.base_uri}/ace-group/hall/"
            assert await admin.list_groups() == ["hall"]
            assert (await admin.read("hall"))[AdminParam.GROUP_DESCRIPTION] == "the hall"

            with pytest.raises(GroupManagerRequestError) as e:
                await outsider.create({AdminParam.GROUP_NAME: "mine"})
            assert e.value.code == Code.FORBIDDEN
            with pytest.raises(GroupManagerRequestError) as e:
                await outsider.delete("hall")
            assert e.value.code == Code.FORBIDDEN

            gm.allow("lamp", "hall", RS)
            member = await GroupMember.open(
                None,
                address,
                svc.commission("lamp"),
                "hall",
                RS,
                tmp_path / "lamp.state",
                follow=True,
            )
            await admin.update("hall", max_stale_sets=5)
            conf = await admin.read("hall")
            assert conf[AdminParam.MAX_STALE_SETS] == 5
            assert conf[AdminParam.ACTIVE] is True  # kept by the read-modify-overwrite
            assert conf[AdminParam.GROUP_DESCRIPTION] == "the hall"

            with pytest.raises(GroupManagerRequestError) as e:
                await admin.delete("hall")  # still active
            assert e.value.code == Code.BAD_REQUEST and e.value.error_id == 10
            await admin.update("hall", active=False)
            await admin.delete("hall")
            assert await admin.list_groups() == []
            assert gm.group("hall") is None
            await member.wait_terminated(timeout=10)
        finally:
            if member is not None:
                await member.close()
            await ep.close()
            await svc.close()
            gm.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
