"""Lights in a worker process (``grouposcore demo --processes N``).

The demo starts ``python -m grouposcore.demo.worker`` per worker and talks to it over its
stdin/stdout, one JSON object per line each way: a request ``{"id", "op", ...}`` gets one
reply ``{"id", "ok", "result"|"error"}``. The lights in the worker are ordinary
:class:`~grouposcore.demo.nodes.LightNode` objects on real sockets in the same network
namespace; they join through the Group Manager over UDP like the others. Only the demo's
bookkeeping (states, rejections, file hashes) crosses the pipe, never keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from grouposcore.demo.nodes import (
    LightNode,
    LightSettings,
    LightStatus,
    channel_from_json,
    channel_to_json,
)
from grouposcore.manager.edhoc_client import EdhocIdentity
from grouposcore.manager.store import ChannelMaterial

__all__ = ["RemoteLight", "WorkerClient", "main"]


# --- worker side -------------------------------------------------------------------------


class _Worker:
    def __init__(self) -> None:
        self.lights: dict[str, LightNode] = {}
        self.settings: LightSettings | None = None
        self.gm: tuple[str, int] | None = None
        self.state_dir: Path | None = None

    async def op_configure(self, settings: dict[str, Any], gm: list[Any], state_dir: str) -> None:
        self.settings = LightSettings(**settings)
        self.gm = (str(gm[0]), int(gm[1]))
        self.state_dir = Path(state_dir)

    async def op_start(self, lights: list[dict[str, Any]]) -> dict[str, Any]:
        assert self.settings is not None and self.gm is not None and self.state_dir
        gate = asyncio.Semaphore(16)

        async def one(entry: dict[str, Any]) -> LightNode:
            async with gate:
                assert self.settings is not None and self.gm is not None and self.state_dir
                return await LightNode.start(
                    entry["name"],
                    channel_from_json(entry["channel"]),
                    self.gm,
                    self.settings,
                    self.state_dir,
                )

        started = await asyncio.gather(*(one(e) for e in lights))
        for node in started:
            self.lights[node.name] = node
        return {n.name: {"sid": n.sid.hex(), "unicast": list(n.unicast_address)} for n in started}

    async def op_wait_for(self, num: int, names: list[str]) -> None:
        await asyncio.gather(*(self.lights[n].wait_for(num) for n in names))

    async def op_status(self, names: list[str]) -> dict[str, Any]:
        return {n: asdict(self.lights[n].status_now()) for n in names}

    async def op_wait_terminated(self, name: str) -> None:
        await self.lights[name].wait_terminated()

    async def op_snapshot(self, name: str) -> None:
        await self.lights[name].snapshot()

    async def op_keep_old_keys(self, name: str) -> None:
        await self.lights[name].keep_old_keys()

    async def op_can_read(self, name: str, wire: str, old: bool = False) -> str | None:
        return await self.lights[name].can_read(bytes.fromhex(wire), old=old)

    async def close(self) -> None:
        for node in self.lights.values():
            with contextlib.suppress(Exception):
                await node.close()


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = _Worker()
    pending: set[asyncio.Task[None]] = set()

    def reply(**fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    async def handle(request: dict[str, Any]) -> None:
        ident = request.pop("id")
        op = request.pop("op")
        try:
            result = await getattr(worker, f"op_{op}")(**request)
        except Exception as exc:
            reply(id=ident, ok=False, error=f"{type(exc).__name__}: {exc}")
        else:
            reply(id=ident, ok=True, result=result)

    try:
        while line := await reader.readline():
            request = json.loads(line)
            if request.get("op") == "close":
                break
            task = loop.create_task(handle(request))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        for task in list(pending):
            task.cancel()
        await worker.close()


def main() -> None:
    asyncio.run(_serve())


# --- demo side ---------------------------------------------------------------------------


class WorkerClient:
    """The demo's end of one worker process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._next = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.names: list[str] = []

    @classmethod
    async def spawn(cls) -> WorkerClient:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "grouposcore.demo.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 22,
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            answer = json.loads(line)
            fut = self._waiting.pop(answer["id"], None)
            if fut is None or fut.done():
                continue
            if answer["ok"]:
                fut.set_result(answer.get("result"))
            else:
                fut.set_exception(RuntimeError(f"worker: {answer['error']}"))
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError("worker process ended"))

    async def call(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self._next += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = fut
        self.proc.stdin.write((json.dumps({"id": self._next, "op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await fut

    async def start(
        self, lights: list[tuple[str, ChannelMaterial | EdhocIdentity]]
    ) -> list[RemoteLight]:
        found = await self.call(
            "start", lights=[{"name": name, "channel": channel_to_json(ch)} for name, ch in lights]
        )
        out = []
        for name, info in found.items():
            self.names.append(name)
            out.append(
                RemoteLight(
                    self,
                    name,
                    bytes.fromhex(info["sid"]),
                    (info["unicast"][0], int(info["unicast"][1])),
                )
            )
        return out

    async def statuses(self, names: list[str]) -> dict[str, LightStatus]:
        found = await self.call("status", names=names)
        return {n: LightStatus(**s) for n, s in found.items()}

    async def close(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.write(b'{"op": "close"}\n')
                await self.proc.stdin.drain()
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class RemoteLight:
    """A light in a worker, with the interface of :class:`LightNode` the demo uses."""

    def __init__(
        self, worker: WorkerClient, name: str, sid: bytes, unicast: tuple[str, int]
    ) -> None:
        self.worker = worker
        self.name = name
        self.sid = sid
        self.unicast_address = unicast

    async def status(self) -> LightStatus:
        return (await self.worker.statuses([self.name]))[self.name]

    async def wait_for(self, num: int) -> None:
        await self.worker.call("wait_for", num=num, names=[self.name])

    async def wait_terminated(self) -> None:
        await self.worker.call("wait_terminated", name=self.name)

    async def snapshot(self) -> None:
        await self.worker.call("snapshot", name=self.name)

    async def keep_old_keys(self) -> None:
        await self.worker.call("keep_old_keys", name=self.name)

    async def can_read(self, wire: bytes, *, old: bool = False) -> str | None:
        result = await self.worker.call("can_read", name=self.name, wire=wire.hex(), old=old)
        return None if result is None else str(result)

    async def close(self) -> None:
        return None  # the worker closes its lights


if __name__ == "__main__":
    main()
