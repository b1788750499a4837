"""Shared bits of the EDHOC tests: identities, a responder session table, a runner."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from grouposcore.edhoc import EdhocCredential, EdhocKey, IdCred, ResponderSessions

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(guarded())


def identity(kid: bytes, subject: str) -> tuple[EdhocKey, EdhocCredential]:
    key = EdhocKey.generate()
    return key, key.credential(kid, subject)


def sessions_for(
    key: EdhocKey, cred: EdhocCredential, peers: dict[str, EdhocCredential], **kw: Any
) -> ResponderSessions:
    def authorise(id_cred: IdCred) -> tuple[str, EdhocCredential] | None:
        for name, c in peers.items():
            if id_cred.matches(c):
                return name, c
        return None

    return ResponderSessions(key, cred, authorise, **kw)
