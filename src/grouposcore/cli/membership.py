"""Member state files that keep following their Group Manager.

``grouposcore join --state S`` writes the member's state ``S`` and, next to it,
``S.gm.json``: how the node reaches its GM (its channel file, or its EDHOC key and the
GM's credential) and the GM's URI. With that link every
command that takes ``--security S`` runs a :class:`GroupMember` instead of reading a
frozen snapshot: ``serve`` and ``receive`` follow rekeyings, stale Sender IDs, new
members' credentials and the eviction notice for as long as they run (and keep ``S``
current); one-shot commands catch up with the GM before they send, so a member never
speaks with material the GM has replaced.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from grouposcore.coap import parse_uri
from grouposcore.errors import (
    ConfigError,
    GroupOscoreError,
    PeerUnreachable,
    RequestTimeout,
    UriError,
)
from grouposcore.manager import member_state as ms
from grouposcore.manager.edhoc_client import EdhocIdentity
from grouposcore.manager.runtime import GroupMember, read_channel_file
from grouposcore.manager.store import ChannelMaterial

log = logging.getLogger("grouposcore.cli")

#: the link file's version (a future layout gets a new number)
_LINK_VERSION = 1


def link_path(state: str | os.PathLike[str]) -> Path:
    """Where the link of member state ``state`` to its GM lives."""
    return Path(f"{state}.gm.json")


def write_link(
    state: str | os.PathLike[str],
    channel: str | os.PathLike[str] | None,
    manager: str,
    *,
    edhoc: EdhocFiles | None = None,
) -> Path:
    """Record how the member in ``state`` reaches its GM: the channel file, or the EDHOC
    key, own credential and GM credential files (by absolute path, so the state can be used
    from any directory)."""
    target = link_path(state)
    doc: dict[str, object] = {"version": _LINK_VERSION, "manager": manager}
    if channel is not None:
        doc["channel"] = str(Path(channel).resolve())
    if edhoc is not None:
        doc["edhoc"] = {
            name: str(Path(value).resolve())
            for name, value in vars(edhoc).items()
            if value is not None
        }
    if ("channel" in doc) == ("edhoc" in doc):
        raise ValueError("a Group Manager link names a channel file or EDHOC files")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    return target


@dataclass(frozen=True)
class EdhocFiles:
    """The files of a node that reaches its GM with EDHOC."""

    key: str
    gm_cred: str
    cred: str | None = None


@dataclass(frozen=True)
class Link:
    channel: Path | None
    manager: str
    edhoc: EdhocFiles | None = None


def read_link(state: str | os.PathLike[str]) -> Link | None:
    """The state's link to its GM, or None when there is none (a snapshot only)."""
    path = link_path(state)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != _LINK_VERSION:
            raise ValueError(f"unknown version {doc.get('version')!r}")
        edhoc = doc.get("edhoc")
        files = (
            None
            if edhoc is None
            else EdhocFiles(
                str(edhoc["key"]),
                str(edhoc["gm_cred"]),
                None if edhoc.get("cred") is None else str(edhoc["cred"]),
            )
        )
        channel = doc.get("channel")
        if (channel is None) == (files is None):
            raise ValueError("names neither a channel file nor EDHOC files, or both")
        return Link(None if channel is None else Path(channel), str(doc["manager"]), files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a Group Manager link ({exc})") from None


@dataclass
class Opened:
    """A running member and what the command should tell the operator about it."""

    member: GroupMember
    #: the material the state file held before (its version), for the "was stale" note
    num_before: int

    @property
    def note(self) -> str | None:
        m = self.member
        group = m.group
        if m.started == "joined":
            return (
                f"{group}: the stored membership had ended; joined again as Sender ID "
                f"{(m.sender_id or b'').hex() or '-'} (num {m.material.num})"
            )
        if m.material.num != self.num_before:
            return (
                f"{group}: the stored keying material was stale (num {self.num_before}); "
                f"caught up with the Group Manager to num {m.material.num}"
            )
        return None


def follows_manager(state: str) -> bool:
    return link_path(state).exists()


async def open_member(state: str, *, follow: bool, timeout: float = 10.0) -> Opened:
    """A :class:`GroupMember` resumed from ``state`` through its GM link (it catches up
    first). ``follow`` keeps observing the group afterwards (servers); one-shot commands
    pass False and close the member when done, which saves the state."""
    link = read_link(state)
    if link is None:
        raise ConfigError(f"{state} has no Group Manager link ({link_path(state)})")
    try:
        before = ms.load_state(state)
    except (OSError, GroupOscoreError) as exc:
        raise ConfigError(f"{state}: not a member state file ({exc})") from None
    try:
        uri = parse_uri(link.manager)
        # an EDHOC channel is never kept, so it has no sequence file and pins no credential
        way: ChannelMaterial | EdhocIdentity
        channel_sequence: str | None = None
        gm_credential: bytes | None = None
        if link.edhoc is not None:
            way = EdhocIdentity.from_files(
                link.edhoc.key, link.edhoc.gm_cred, cred_file=link.edhoc.cred
            )
        else:
            assert link.channel is not None
            way, _noted, pinned = read_channel_file(link.channel)
            channel_sequence = f"{link.channel}.seq"
            gm_credential = pinned.get(before.material.group)
    except (GroupOscoreError, UriError) as exc:
        raise ConfigError(f"{link_path(state)}: {exc}") from None
    try:
        member = await GroupMember.open(
            None, (uri.host, uri.port), way, before.material.group, before.material.roles,
            state, channel_sequence=channel_sequence, timeout=timeout, follow=follow,
            gm_credential=gm_credential,
        )  # fmt: skip
    except RequestTimeout as exc:
        raise RequestTimeout(
            f"the Group Manager at {link.manager} did not answer ({exc})"
        ) from None
    except PeerUnreachable as exc:
        raise PeerUnreachable(
            f"the Group Manager at {link.manager} did not answer: unreachable ({exc})"
        ) from None
    return Opened(member, before.material.num)
