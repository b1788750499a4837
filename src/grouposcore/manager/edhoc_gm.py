"""The Group Manager's side of EDHOC: nodes admitted by their public credential.

The operator registers a node's CCS (``manager allow GROUP NODE --cred node.cred``); the GM
answers EDHOC at ``/.well-known/edhoc`` with its own identity (made on first use and kept in
the store). A node whose message_3 names a registered credential and verifies gets the
OSCORE context EDHOC yields as its channel, replacing any older channel of that node; the
join (with proof of possession of the group signing key) then runs over it, as over a
commissioned channel. Everything that fails leaves the store and the channels untouched.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from grouposcore.edhoc.credentials import EdhocCredential, EdhocKey, IdCred
from grouposcore.edhoc.protocol import Established, ResponderSessions
from grouposcore.errors import EdhocCredentialError, EdhocError, ManagerError
from grouposcore.manager.channel import channel_sequence_key
from grouposcore.manager.store import ChannelMaterial

if TYPE_CHECKING:
    from grouposcore.manager.core import GroupManager

__all__ = ["GmEdhoc"]


class GmEdhoc:
    """EDHOC identity, registered node credentials and responder sessions of one GM."""

    def __init__(self, gm: GroupManager, *, max_sessions: int = 32) -> None:
        self.gm = gm
        self.max_sessions = max_sessions
        self._sessions: ResponderSessions | None = None

    # --- identity and registration -----------------------------------------------------------

    def identity(self) -> tuple[EdhocKey, EdhocCredential]:
        """The GM's EDHOC key and credential, made (and stored) on first use."""
        store = self.gm.store
        with store.transaction():
            found = store.edhoc_identity()
            if found is None:
                key = EdhocKey.generate()
                credential = key.credential(secrets.token_bytes(2), "group-manager")
                store.put_edhoc_identity(key.d, credential.value)
                return key, credential
        return EdhocKey(found[0]), EdhocCredential.from_bytes(found[1])

    @property
    def credential(self) -> EdhocCredential:
        """The GM's credential (what nodes pin as ``--gm-cred``)."""
        return self.identity()[1]

    def register(self, node: str, credential: EdhocCredential) -> None:
        """Admit ``node`` by ``credential``: its kid (if any) and the credential itself must
        not belong to another node, so a presented ID_CRED names exactly one node."""
        if credential.value == self.credential.value:
            raise ManagerError("that is the Group Manager's own credential")
        for other, value, kid in self.gm.store.edhoc_peers():
            if other == node:
                continue
            if value == credential.value:
                raise ManagerError(f"this credential is already registered for {other!r}")
            if credential.kid is not None and kid == credential.kid:
                raise ManagerError(
                    f"kid {credential.kid.hex()} is already used by {other!r}'s credential"
                )
        with self.gm.store.transaction():
            self.gm.store.put_edhoc_peer(node, credential.value, credential.kid)

    def unregister(self, node: str) -> None:
        """Forget ``node``'s credential (its current channel stays until replaced)."""
        with self.gm.store.transaction():
            self.gm.store.delete_edhoc_peer(node)

    def registered(self) -> dict[str, EdhocCredential]:
        """Node name -> registered credential."""
        return {
            node: EdhocCredential.from_bytes(value)
            for node, value, _ in self.gm.store.edhoc_peers()
        }

    def authorise(self, id_cred: IdCred) -> tuple[str, EdhocCredential] | None:
        """The registered node a presented ID_CRED names (by value or by kid), if any."""
        for node, value, kid in self.gm.store.edhoc_peers():
            if id_cred.credential is not None:
                if id_cred.credential.value == value:
                    return node, id_cred.credential
            elif id_cred.kid is not None and id_cred.kid == kid:
                return node, EdhocCredential.from_bytes(value)
        return None

    # --- sessions ----------------------------------------------------------------------------

    @property
    def sessions(self) -> ResponderSessions:
        """The responder session table (made with the GM's identity on first use)."""
        if self._sessions is None:
            key, credential = self.identity()
            self._sessions = ResponderSessions(
                key,
                credential,
                self.authorise,
                taken_ids=lambda: [c.node_sender_id for c in self.gm.store.channels()],
                max_sessions=self.max_sessions,
            )
        return self._sessions

    def channel(self, established: Established) -> ChannelMaterial:
        """The node's new channel: the EDHOC-derived context, stored (replacing the node's
        older channel). Refused if another node's channel took C_R meanwhile."""
        p = established.oscore
        store = self.gm.store
        with store.transaction():
            holder = store.channel_by_sender_id(p.recipient_id)
            if holder is not None and holder.node != established.name:
                raise EdhocError("connection identifier taken meanwhile; run EDHOC again")
            if established.name not in self.registered():
                raise EdhocCredentialError(f"{established.name!r} is no longer registered")
            old = store.channel(established.name)
            material = ChannelMaterial(
                node=established.name,
                master_secret=p.master_secret,
                master_salt=p.master_salt,
                gm_sender_id=p.sender_id,
                node_sender_id=p.recipient_id,
                id_context=None,
                aead_alg=p.aead_alg,
                hkdf_alg=p.hkdf_alg,
            )
            store.put_channel(material)
            if old is not None and old.master_secret != material.master_secret:
                # one reservation row per EDHOC run would pile up: the old keys are gone
                store.forget_sequence(channel_sequence_key(old))
        return material
