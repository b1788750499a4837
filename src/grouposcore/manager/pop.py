"""Proof of possession at the Group Manager: the N_S challenges and the joiner's evidence.

The challenge N_S, which ACE delivers with the access token, is obtained in-band here
(digest §15.3): a Join Request or credential update that carries a credential but no
``client_cred_verify`` (or finds no live challenge) is answered with 4.00 and an
application/ace-groupcomm+cbor body ``{kdcchallenge: N_S, sign_info: [...]}``. A challenge is
single-use and expires after a time-to-live measured on the manager's injectable clock.
Challenges live in memory: a restarted GM has none outstanding, which costs a node one
more round trip and nothing else. On a shared store (several GM processes on one database)
they live in the database instead, so a challenge one process issued is honoured by any of
them (there the clock must be the wall clock every process shares).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grouposcore.cose import Credential, signature_by_id
from grouposcore.errors import CoseError, SignatureError
from grouposcore.manager.material import ecdh_params_for, sign_params_for
from grouposcore.manager.params import ErrorId, Param, bstr_cbor
from grouposcore.manager.responses import reject
from grouposcore.manager.store import GroupRecord, Store

__all__ = ["CHALLENGE_LEN", "ChallengeAnswer", "Challenges", "challenge_body"]

CHALLENGE_LEN = 16


class ChallengeAnswer(Exception):
    """Internal: answer 4.00 with a fresh kdcchallenge (not an error of the caller's data)."""


class Challenges:
    """Outstanding N_S per node: issued on demand, valid for ``ttl`` seconds, used once."""

    def __init__(
        self,
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes],
        ttl: float,
        store: Store | None = None,
    ) -> None:
        self._clock = clock
        self._random = random_bytes
        self._ttl = ttl
        self._live: dict[str, tuple[bytes, float]] = {}
        self._store = store if store is not None and store.shared else None

    def issue(self, node: str) -> bytes:
        """A fresh N_S for ``node``, replacing any older one."""
        challenge = self._random(CHALLENGE_LEN)
        expires = self._clock() + self._ttl
        if self._store is not None:
            self._store.put_challenge(node, challenge, expires)
        else:
            self._live[node] = (challenge, expires)
        return challenge

    def current(self, node: str) -> bytes | None:
        """The node's live N_S, or None when there is none or it expired."""
        entry = self._store.challenge(node) if self._store is not None else self._live.get(node)
        if entry is None:
            return None
        if entry[1] < self._clock():
            self.consume(node)
            return None
        return entry[0]

    def consume(self, node: str) -> None:
        """Forget the node's N_S (after it proved possession with it, or left)."""
        if self._store is not None:
            self._store.drop_challenge(node)
        self._live.pop(node, None)

    def verify(
        self,
        node: str,
        cred: Credential,
        sign_alg: int,
        scope: bytes,
        cnonce: bytes,
        pop: bytes | None,
    ) -> bytes:
        """Check the signature over bstr(scope) | bstr(N_S) | bstr(N_C); return the N_S used.

        No evidence, or no live challenge: answer with a challenge. Empty evidence claims an
        earlier proof, which callers accept only where one exists, so here it is invalid
        (error-id 3), as is a signature that does not verify.
        """
        if pop is None:
            raise ChallengeAnswer("a proof of possession is needed; use this kdcchallenge")
        if not pop:
            raise reject("empty 'client_cred_verify' without an earlier proof of possession",
                         ErrorId.INVALID_POP)  # fmt: skip
        challenge = self.current(node)
        if challenge is None:
            raise ChallengeAnswer("no valid kdcchallenge; use the one in this response")
        data = bstr_cbor(scope) + bstr_cbor(challenge) + bstr_cbor(cnonce)
        try:
            signature_by_id(sign_alg).verify(cred.public_key, pop, data)
        except (SignatureError, CoseError):
            raise reject("invalid proof-of-possession evidence", ErrorId.INVALID_POP) from None
        return challenge


def challenge_body(challenge: bytes, g: GroupRecord | None) -> dict[int, Any]:
    """The 4.00 ace-groupcomm+cbor body: N_S and the group's signature / ECDH information."""
    body: dict[int, Any] = {Param.KDCCHALLENGE: challenge}
    if g is not None:
        sp = sign_params_for(g.sign_alg)
        body[Param.SIGN_INFO] = [[g.name, g.sign_alg, sp, sp[1], g.cred_fmt]]
        if g.ecdh_alg is not None:
            ep = ecdh_params_for(g.sign_alg)
            body[Param.ECDH_INFO] = [[g.name, g.ecdh_alg, ep, ep[1], g.cred_fmt]]
    return body
