"""An administrator talking to a Group Manager's admin interface over its OSCORE channel.

The counterpart of :mod:`grouposcore.manager.admin`: one CoAP exchange per operation on
/manage and /manage/NAME, with configuration maps keyed by
:class:`~grouposcore.manager.admin.AdminParam` (and RFC 9594's 'exp', 'group_policies').
An error answer raises :class:`~grouposcore.errors.GroupManagerRequestError`.
"""

from __future__ import annotations

import re
from typing import Any

from grouposcore.manager.admin import AdminParam
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    Code,
    Method,
    dumps,
    expect_map,
    loads_strict,
)

__all__ = ["AdminClient"]

_LINK = re.compile(r"<([^>]*)>")


class AdminClient:
    """Group administration through ``client`` (the administrator's channel to the GM)."""

    def __init__(self, client: GroupManagerClient) -> None:
        self.client = client

    async def list_groups(self) -> list[str]:
        """Names of the groups this administrator may list."""
        r = await self.client.request(Method.GET, ("manage",))
        names = []
        for target in _LINK.findall(r.payload.decode("utf-8", "replace")):
            parts = [p for p in target.split("/") if p]
            if len(parts) >= 2 and parts[-2] == "manage":
                names.append(parts[-1])
        return names

    async def create(self, config: dict[int, Any]) -> dict[int, Any]:
        """Create a group (``config`` must hold 'group_name'); the GM's 2.01 body."""
        r = await self.client.request(Method.POST, ("manage",), dumps(config), CF_ACE_GROUPCOMM,
                                      ok=(Code.CREATED,))  # fmt: skip
        return expect_map(loads_strict(r.payload, "creation response"), "creation response")

    async def read(self, name: str) -> dict[int, Any]:
        """The group's whole configuration."""
        r = await self.client.request(Method.GET, ("manage", name))
        return expect_map(loads_strict(r.payload, "group configuration"), "group configuration")

    async def overwrite(self, name: str, config: dict[int, Any]) -> dict[int, Any]:
        """Replace the group's configuration (unnamed parameters take their defaults)."""
        r = await self.client.request(Method.POST, ("manage", name), dumps(config),
                                      CF_ACE_GROUPCOMM, ok=(Code.CHANGED,))  # fmt: skip
        return expect_map(loads_strict(r.payload, "overwrite response"), "overwrite response")

    async def update(self, name: str, **changes: Any) -> dict[int, Any]:
        """Change some status parameters and keep the rest: read, modify, overwrite.
        Keywords are AdminParam names in lower case (``active=False``)."""
        current = await self.read(name)
        keep = (AdminParam.ACTIVE, AdminParam.GROUP_DESCRIPTION, AdminParam.MAX_STALE_SETS,
                AdminParam.APP_GROUPS, AdminParam.AS_URI)  # fmt: skip
        config: dict[int, Any] = {
            k: current[k] for k in keep if k in current and current[k] is not None
        }
        for key, value in changes.items():
            config[AdminParam[key.upper()]] = value
        return await self.overwrite(name, config)

    async def delete(self, name: str) -> None:
        """Delete an (inactive) group."""
        await self.client.request(Method.DELETE, ("manage", name), ok=(Code.DELETED,))
