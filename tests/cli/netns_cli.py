"""Run inside a fresh network namespace by test_cli_multicast.py: three ``grouposcore serve``
processes on one host, each on its own unicast port (5701..5703), share the group port 5683
of 224.0.1.187 on ``lo``; their first answers are Echo challenges (the default freshness),
so the unicast retries must reach the member that asked. Then ``grouposcore get`` sends
group requests; prints what the commands printed as one JSON object.

``python3 -m tests.cli.netns_cli DIR`` (DIR holds client.json, s1.json, s2.json, s3.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import REPO, grouposcore_cmd, stop

GROUP = "224.0.1.187"


def cli(*args: str) -> dict[str, object]:
    proc = subprocess.run(
        grouposcore_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}


def main(directory: Path) -> dict[str, object]:
    servers = []
    try:
        for index, name in enumerate(("s1", "s2", "s3")):
            proc = subprocess.Popen(
                grouposcore_cmd(
                    "serve",
                    "--bind",
                    "0.0.0.0",
                    "--port",
                    str(5701 + index),
                    "--security",
                    str(directory / f"{name}.json"),
                    "--multicast",
                    GROUP,
                    "--interface",
                    "lo",
                    "--leisure",
                    "0.2",
                ),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            servers.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith(f"listening on 0.0.0.0:{5701 + index}, group port 5683"), line
        client = str(directory / "client.json")
        common = ("--security", client, "--interface", "lo", "--timeout", "1.5")
        return {
            "plain": cli("get", f"coap://{GROUP}/light", *common),
            "json": cli("put", f"coap://{GROUP}/light", "--payload", "dim 5", "--json", *common),
            "unsecured": cli(
                "get", f"coap://{GROUP}/light", "--interface", "lo", "--timeout", "1.5"
            ),
            "discovery": cli(
                "get", f"coap://{GROUP}/.well-known/core", "--interface", "lo", "--timeout", "1.5"
            ),
        }
    finally:
        for proc in servers:
            stop(proc)


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
