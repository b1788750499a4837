"""Group requests over real multicast, inside network namespaces the tests create.

IPv4: one ``unshare -n`` namespace with ``lo`` up and 224.0.0.0/4 routed to it; three
servers (one on a dual-stack ``::`` socket, two on ``0.0.0.0``) share port 5683 and join
224.0.1.187; one client sends the group request with IP_MULTICAST_IF 127.0.0.1.

IPv6: two namespaces joined by a veth pair; three servers in one join ff02::fd on their
end, the client in the other sends with IPV6_MULTICAST_IF on its end.

Both need root (namespaces); without it they skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None,
    reason="multicast tests need root, ip and unshare to create network namespaces",
)

NODE = r"""
import asyncio, json, random, subprocess, sys, time
from grouposcore.coap import Code, Message
from grouposcore.transport import Endpoint, Protection, Resource, Site, TransmissionParams

PARAMS = TransmissionParams(ack_timeout=0.3, max_retransmit=2)


class Name(Resource):
    def __init__(self, name):
        super().__init__()
        self.name = name
        self.runs = 0

    async def render_get(self, request):
        self.runs += 1
        return Message(Code.CONTENT, payload=self.name.encode())


class Secret(Resource):
    protection = Protection(group=True)

    async def render_get(self, request):
        return Message(Code.CONTENT, payload=b"must not leak")


class Toy:
    # A stand-in security layer (XOR, not secure) to see bindings and results travel.

    def __init__(self):
        self.bindings = []

    # client side
    def protect_request(self, request):
        outer = request.copy(code=Code.FETCH, payload=bytes(b ^ 0x55 for b in
                             bytes([request.code]) + "/".join(request.options.uri_path).encode()))
        outer.options.uri_path = []
        outer.options.oscore = b"\x08\x01"
        binding = object()
        self.bindings.append(binding)
        return outer, binding

    def unprotect_response(self, response, binding):
        assert binding is self.bindings[-1]
        plain = response.copy(code=response.payload[0] ^ 0x55,
                              payload=bytes(b ^ 0x55 for b in response.payload[1:]))
        plain.options.oscore = None
        return plain

    # server side
    def unprotect_request(self, request):
        if request.options.oscore is None:
            return None
        data = bytes(b ^ 0x55 for b in request.payload)
        plain = request.copy(code=data[0])
        plain.options.oscore = None
        plain.options.uri_path = data[1:].decode().split("/")
        return plain, "binding"

    def protect_response(self, response, binding):
        assert binding == "binding"
        outer = response.copy(code=Code.CHANGED, payload=bytes(b ^ 0x55 for b in
                              bytes([response.code]) + response.payload))
        outer.options.oscore = b""
        return outer


async def servers(binds, group, interface, seed):
    eps = []
    for i, host in enumerate(binds):
        site = Site()
        site.add("name", Name(f"server{i}"))
        site.add("secret", Secret())
        ep = await Endpoint.create((host, 5683), site=site, params=PARAMS, leisure=0.3,
                                   rng=random.Random(seed * 10 + i), reuse_address=True,
                                   server_security=Toy())
        ep.join_group(group, interface)
        eps.append(ep)
    return eps


def get(path):
    m = Message(Code.GET)
    m.options.uri_path = [path]
    return m


async def client(group, interface, bind):
    ep = await Endpoint.create((bind, 0), params=PARAMS, multicast_interface=interface)
    out = {}
    for path in ("name", "missing", "secret"):
        t0 = time.monotonic()
        got = []
        async for r in ep.group_request(get(path), (group, 5683), timeout=1.0):
            got.append({"payload": r.payload.decode(), "code": int(r.code),
                        "type": int(r.mtype), "remote": list(r.remote),
                        "after": time.monotonic() - t0})
        out[path] = got
    toy = Toy()
    got = []
    async for r in ep.group_request(get("secret"), (group, 5683), timeout=1.0, security=toy):
        got.append({"payload": r.payload.decode(), "code": int(r.code)})
    out["secret_protected"] = got
    out["bindings"] = len(toy.bindings)
    # A unicast follow-up to one responder (for IPv6: its link-local address with zone).
    if out["name"]:
        peer = tuple(out["name"][0]["remote"])
        r = await ep.request(get("name"), peer, timeout=3)
        out["unicast_follow_up"] = r.payload.decode()
    await ep.close()
    return out


async def main():
    role = sys.argv[1]
    if role == "ipv4":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "route", "add", "224.0.0.0/4", "dev", "lo"], check=True)
        eps = await servers(["::", "0.0.0.0", "0.0.0.0"], "224.0.1.187", "lo", 1)
        out = await client("224.0.1.187", "127.0.0.1", "0.0.0.0")
        # A unicast request to the same port is answered, errors included.
        ep = await Endpoint.create(("127.0.0.1", 0), params=PARAMS)
        r = await ep.request(get("missing"), ("127.0.0.1", 5683), timeout=3)
        out["unicast_missing"] = int(r.code)
        await ep.close()
        out["runs"] = [ep.site.lookup(["name"]).runs for ep in eps]
        for ep in eps:
            await ep.close()
        print(json.dumps(out))
    elif role == "servers6":
        eps = await servers(["::", "::", "::"], "ff02::fd", sys.argv[2], 2)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        print(json.dumps({"runs": [ep.site.lookup(["name"]).runs for ep in eps]}), flush=True)
        for ep in eps:
            await ep.close()
    elif role == "client6":
        print(json.dumps(await client("ff02::fd", sys.argv[2], "::")))


asyncio.run(main())
"""


@pytest.fixture
def node(tmp_path: Path) -> Path:
    script = tmp_path / "node.py"
    script.write_text(NODE)
    return script


def check_group_results(out: dict, expected_remote_host: str | None) -> None:
    names = sorted(r["payload"] for r in out["name"])
    assert names == ["server0", "server1", "server2"], out
    for r in out["name"]:
        assert r["code"] == 69 and r["type"] == 1  # 2.05, NON
        assert r["after"] < 3.0  # inside the 1 s window, plus slack for a loaded machine
        if expected_remote_host is not None:
            assert r["remote"][0] == expected_remote_host and r["remote"][1] == 5683
    # 4.04 to a multicast request is suppressed; so is 4.01 for an unprotected request to
    # a secured resource (no amplification), while unicast errors are answered.
    assert out["missing"] == [], out
    assert out["secret"] == [], out
    # Protected, the same group request is answered by all three; one binding verifies all.
    assert out["secret_protected"] == [{"payload": "must not leak", "code": 69}] * 3, out
    assert out["bindings"] == 1


def names_of(out: dict) -> list[str]:
    return [r["payload"] for r in out["name"]]


def test_ipv4_multicast_three_servers(node: Path) -> None:
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, str(node), "ipv4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    check_group_results(out, "127.0.0.1")
    assert out["unicast_missing"] == 132  # 4.04
    assert out["unicast_follow_up"] in names_of(out)
    # Each server ran its handler once per group request, one of them once more for the
    # unicast follow-up (the servers share the port, the kernel picks one).
    assert sorted(out["runs"]) == [1, 1, 2]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def test_ipv6_multicast_over_veth(node: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    ns_c, ns_s = f"gosc-{tag}-c", f"gosc-{tag}-s"
    if_c, if_s = f"gc{tag}", f"gs{tag}"
    servers = None
    try:
        ip("netns", "add", ns_c)
        ip("netns", "add", ns_s)
        ip("link", "add", if_c, "type", "veth", "peer", "name", if_s)
        ip("link", "set", if_c, "netns", ns_c)
        ip("link", "set", if_s, "netns", ns_s)
        for ns, ifname, addr in ((ns_c, if_c, "fd00:6f73::1"), (ns_s, if_s, "fd00:6f73::2")):
            # No duplicate address detection: the addresses are usable at once.
            # (/proc/sys/net belongs to the namespace of the process that writes it.)
            ip(
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                f"echo 0 > /proc/sys/net/ipv6/conf/{ifname}/accept_dad",
            )
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{addr}/64", "dev", ifname, "nodad")
            ip("-n", ns, "link", "set", ifname, "up")
        servers = subprocess.Popen(
            ["ip", "netns", "exec", ns_s, sys.executable, str(node), "servers6", if_s],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert servers.stdout is not None and servers.stdin is not None
        assert servers.stdout.readline().strip() == "ready", servers.stderr
        client = subprocess.run(
            ["ip", "netns", "exec", ns_c, sys.executable, str(node), "client6", if_c],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert client.returncode == 0, client.stderr
        out = json.loads(client.stdout.strip().splitlines()[-1])
        check_group_results(out, None)
        for r in out["name"]:
            host = r["remote"][0]
            # From the server's unicast address (link-local with its zone), never the group.
            assert host.startswith("fe80:") and host.endswith(f"%{if_c}"), host
        assert out["unicast_follow_up"] in names_of(out)
        stdout, stderr = servers.communicate("", timeout=30)
        assert servers.returncode == 0, stderr
        runs = json.loads(stdout.strip().splitlines()[-1])["runs"]
        assert sorted(runs) == [1, 1, 2]
    finally:
        if servers is not None and servers.poll() is None:
            servers.kill()
            servers.wait()
        for ns in (ns_c, ns_s):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
