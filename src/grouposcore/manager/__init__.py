"""Group Manager for Group OSCORE (RFC 9594 interface, draft-ietf-ace-key-groupcomm-oscore).

Sans-I/O: :class:`GroupManager` serves decoded requests over a persistent
:class:`~grouposcore.manager.store.Store`; :mod:`grouposcore.manager.member` is the joining
node's side. The CoAP/OSCORE edge lives elsewhere and only moves bytes.
"""

from grouposcore.manager.core import GmResponse, GroupManager, Notification
from grouposcore.manager.member import (
    GroupKeyingMaterial,
    MemberState,
    PeerInfo,
    PendingJoin,
)
from grouposcore.manager.params import Role
from grouposcore.manager.store import ChannelMaterial, Store

__all__ = [
    "ChannelMaterial",
    "GmResponse",
    "GroupKeyingMaterial",
    "GroupManager",
    "MemberState",
    "Notification",
    "PeerInfo",
    "PendingJoin",
    "Role",
    "Store",
]
