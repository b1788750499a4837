"""Group Manager for Group OSCORE (RFC 9594 interface, draft-ietf-ace-key-groupcomm-oscore).

Sans-I/O: :class:`GroupManager` serves decoded requests over a persistent
:class:`~grouposcore.manager.store.Store`; :mod:`grouposcore.manager.member` is the joining
node's side. The CoAP/OSCORE edge (service, client) only moves bytes;
:class:`~grouposcore.manager.runtime.GroupMember` is a live member that keeps its group
context current.
"""

from grouposcore.manager.core import GmResponse, GroupManager, Notification
from grouposcore.manager.member import (
    GroupKeyingMaterial,
    PeerInfo,
    PendingJoin,
)
from grouposcore.manager.member_state import MemberState
from grouposcore.manager.params import Role
from grouposcore.manager.runtime import (
    GroupMember,
    MemberClientSecurity,
    MemberServerSecurity,
    read_channel_file,
    write_channel_file,
)
from grouposcore.manager.store import ChannelMaterial, SqliteStore, Store, open_store

__all__ = [
    "ChannelMaterial",
    "GmResponse",
    "GroupKeyingMaterial",
    "GroupManager",
    "GroupMember",
    "MemberClientSecurity",
    "MemberServerSecurity",
    "MemberState",
    "Notification",
    "PeerInfo",
    "PendingJoin",
    "Role",
    "SqliteStore",
    "Store",
    "open_store",
    "read_channel_file",
    "write_channel_file",
]
