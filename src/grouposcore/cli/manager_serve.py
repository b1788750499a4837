"""``grouposcore manager serve``: the Group Manager on the network.

Before each request and every ``--sync`` seconds the server asks the store whether another
process changed it (one query, the store's change marker); if so it installs the channels
commissioned meanwhile, publishes new groups, and pushes rekeyings made offline (by
``grouposcore manager evict``/``rekey`` or another GM process) to the members observing
their group, with the stale Sender IDs, and 4.04 to the evicted ones. It also rekeys every
group whose keying material expired.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

from grouposcore.cli.lifecycle import stop_on_signals
from grouposcore.cli.output import fail
from grouposcore.coap import Message
from grouposcore.errors import GroupOscoreError
from grouposcore.manager.core import GroupManager, Notification
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    CF_PROBLEM_DETAILS,
    Code,
    ErrorId,
    encode_problem_details,
)
from grouposcore.manager.service import GroupManagerService
from grouposcore.manager.store import ChannelMaterial, GroupRecord
from grouposcore.transport.sockets import format_address

__all__ = ["SyncedService", "serve"]

log = logging.getLogger("grouposcore.cli")


class SyncedService(GroupManagerService):
    """The service plus what offline commands changed in the database meanwhile."""

    def __init__(self, gm: GroupManager) -> None:
        # Read before the state below: a commit made meanwhile moves it, so we look again.
        self._marker = gm.store.change_marker()
        super().__init__(gm)
        self._channels: dict[str, ChannelMaterial] = {c.node: c for c in gm.store.channels()}
        self._seen: dict[str, tuple[int, frozenset[str]]] = {}
        groups = gm.store.groups()
        for g in groups:
            self._remember(g.name)
        #: when the first group's keying material expires (sync rekeys it then)
        self._next_expiry = min((g.exp for g in groups), default=math.inf)
        #: this process changed something sync() tracks (admin interface): sync next time
        self._dirty = False

    def _remember(self, group: str, num: int | None = None) -> None:
        g = self.gm.store.group(group)
        if g is not None:
            num = g.num if num is None else num
            self._seen[group] = (num, frozenset(m.node for m in self.gm.store.members(group)))

    def serve(self, path: tuple[str, ...], request: Message) -> Message:
        """Answer with what the database says now: an eviction or rekeying made by an
        offline command just before is pushed first, so a member that asks right after it
        never gets material the operator has already replaced."""
        failures: tuple[type[BaseException], ...] = (GroupOscoreError, *self.gm.store.failures)
        try:
            self.refresh()
        except failures as e:
            log.warning("database sync failed: %s", e)
        response = super().serve(path, request)
        if path[:1] != ("ace-group",):
            # the admin interface may create groups or change their expiry: those are
            # ours, so the marker does not move, but the next check must look at them
            self._dirty = True
        return response

    def refresh(self, *, force: bool = False, now: float | None = None) -> bool:
        """:meth:`sync` if anything it tracks may have changed: another process committed
        (the store's change marker moved), a group's material expired, or this process's
        admin interface made changes. Otherwise one cheap query instead of reading every
        group and channel. Returns whether it synced."""
        now = time.time() if now is None else now
        marker = self.gm.store.change_marker()
        if not (force or self._dirty or marker != self._marker or now >= self._next_expiry):
            return False
        self.sync(now)
        # Only now: if the sync failed, the next request tries again. A commit made during
        # the sync moved the marker past this value, so it is not missed either.
        self._marker = marker
        self._dirty = False
        return True

    def create_group(self, name: str, **kwargs: Any) -> GroupRecord:
        record = super().create_group(name, **kwargs)
        self._dirty = True  # its expiry counts from now on
        return record

    def commission(self, node: str, **kwargs: Any) -> ChannelMaterial:
        material = super().commission(node, **kwargs)
        self._channels[node] = material  # installed already
        return material

    def adopt_channel(self, material: ChannelMaterial) -> None:
        super().adopt_channel(material)
        self._channels[material.node] = material  # installed already (EDHOC)

    def deliver(self, notes: Iterable[Notification]) -> None:
        notes = list(notes)
        super().deliver(notes)
        for group in {n.group for n in notes}:
            # Pushed already: the sync must not push it again. The version is the one pushed,
            # not the one stored now: another GM process may have rekeyed in between.
            nums = [x for n in notes if n.group == group and (x := self._num_of(n)) is not None]
            self._remember(group, max(nums) if nums else None)

    def sync(self, now: float | None = None) -> None:
        """Install new channels, publish new groups, push offline rekeyings, and rekey
        groups whose keying material expired."""
        store = self.gm.store
        now = time.time() if now is None else now
        for g in store.groups():
            if g.exp <= now and g.name in self._seen:
                log.info("group %s: keying material expired, rekeying", g.name)
                self.deliver(self.gm.rekey_if_expired(g.name, now))  # once for all processes
        for c in store.channels():
            if self._channels.get(c.node) != c:
                self._install(c, restarted=False)
                self._channels[c.node] = c
                log.info("channel of %s installed", c.node)
        groups = store.groups()
        self._next_expiry = min((g.exp for g in groups), default=math.inf)
        for g in groups:
            if g.name not in self._seen:
                self.resource(("ace-group", g.name))
                self._remember(g.name)
                log.info("group %s published", g.name)
                continue
            num, before = self._seen[g.name]
            if g.num == num:
                continue
            present = frozenset(m.node for m in store.members(g.name))
            notes = [self._eviction(g.name, node) for node in sorted(before - present)]
            # One version on: push its rekeying message (with its stale IDs); several: the
            # current material, and the members catch up over /stale-sids.
            message = self.gm.rekeying_message(g.name) if g.num == num + 1 else None
            for node in sorted(present):
                payload = message
                if payload is None:
                    answer = self.gm.handle(node, "GET", ("ace-group", g.name), b"", None)
                    if answer.code != Code.CONTENT:
                        continue
                    payload = answer.payload
                notes.append(Notification(node, g.name, ("ace-group", g.name), Code.CONTENT,
                                          payload, CF_ACE_GROUPCOMM))  # fmt: skip
            log.info("group %s: pushing num %d to %d member(s)", g.name, g.num, len(present))
            self.deliver(notes)

    @staticmethod
    def _eviction(group: str, node: str) -> Notification:
        return Notification(
            node, group, ("ace-group", group, "nodes", node), Code.NOT_FOUND,
            encode_problem_details(ErrorId.MEMBERSHIP_TERMINATED, "membership terminated"),
            CF_PROBLEM_DETAILS,
        )  # fmt: skip


async def serve(args: argparse.Namespace) -> int:
    """Run `manager serve` until a signal; the exit status."""
    try:
        gm = GroupManager(
            args.db, rejoin_burst=args.rejoin_burst, rejoin_interval=args.rejoin_interval
        )
    except GroupOscoreError as e:
        return fail("manager serve", str(e))
    svc = SyncedService(gm)
    watcher: asyncio.Task[None] | None = None
    try:
        endpoint = await svc.start((args.bind, args.port))
        print(f"listening on {format_address(endpoint.address)}", flush=True)
        stop = stop_on_signals()
        # A shared database (PostgreSQL) tells us when another GM process changed something,
        # so its rekeyings reach the members observing us at once; --sync stays the fallback.
        changed = asyncio.Event()
        watcher = asyncio.create_task(gm.store.watch(changed.set))
        sync_failures: tuple[type[BaseException], ...] = (GroupOscoreError, *gm.store.failures)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(stop, changed), args.sync)
            force = changed.is_set()
            changed.clear()
            try:
                svc.refresh(force=force)
            except sync_failures as e:
                log.warning("database sync failed: %s", e)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await svc.close()
        gm.close()
    return 0


async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
    """Wait until one of two events is set."""
    tasks = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
