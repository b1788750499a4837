"""``grouposcore demo``: a Group Manager, a switch and N lights on real UDP sockets, with
rekeying on join and eviction, replay rejection and optionally a firmware push.

Multicast goes to 224.0.1.187 on ``lo`` (``--ipv6``: ff02::fd) inside a network namespace
of the demo's own: it re-runs itself under ``unshare -n`` (root) or ``unshare -rn``
(unprivileged user namespaces) and configures ``lo`` there, so none of its traffic can
reach the host's network. Only when no namespace can be made (or with ``--host-network``)
does it use the current namespace. ``--unicast`` runs the same story with one unicast
request per light instead of multicast. Exit status: 0 when every step verified, 1 when a
step failed (stderr says which), 2 when the demo could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from grouposcore.demo import netns
from grouposcore.demo.scenario import DemoConfig, run_demo
from grouposcore.demo.view import choose_view

__all__ = ["add_arguments", "parse_size", "run"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """``4096``, ``64K``, ``1M``, ``1MiB`` → bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgKMG]?)(?:i?[bB])?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4096, 64K, 1M)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _lights(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 1000:  # the demo adds one more light later
        raise argparse.ArgumentTypeError("--lights must be 1..1000")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lights", type=_lights, default=8, metavar="N", help="number of lights (default 8)"
    )
    parser.add_argument(
        "--db",
        metavar="FILE",
        help="Group Manager SQLite database (default: a temporary directory)",
    )
    parser.add_argument(
        "--interface",
        metavar="IF",
        help="interface for multicast (default lo; with --ipv6 a veth the "
        "demo creates in its namespace)",
    )
    parser.add_argument(
        "--ipv6", action="store_true", help="IPv6 multicast to ff02::fd instead of IPv4 224.0.1.187"
    )
    parser.add_argument("--port", type=int, default=5683, help="group port (default 5683)")
    parser.add_argument(
        "--host-network",
        action="store_true",
        help="run in the current network namespace instead of a private one "
        "(multicast then goes out on --interface of this host)",
    )
    parser.add_argument(
        "--unicast",
        action="store_true",
        help="no multicast: send each command to every light by unicast",
    )
    parser.add_argument(
        "--firmware",
        type=parse_size,
        metavar="SIZE",
        help="also push a random file of SIZE (e.g. 64K, 1M) to the lights",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        help="longest wait for the answers to one command (default 3 s)",
    )
    parser.add_argument("--seed", type=int, help="seed for the demo's random choices")
    parser.add_argument(
        "--channels",
        action="store_true",
        help="nodes join over channels the GM commissions (what channel files "
        "hold) instead of EDHOC with their own key pairs",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run the lights in N worker processes (default 1: all in this one)",
    )


def _prepare(args: argparse.Namespace, argv: list[str]) -> int | None:
    """Make sure multicast works here; an exit status if the demo ran (or failed) elsewhere."""
    if args.unicast:
        return None
    if netns.isolated():
        problems = netns.prepare_isolated()
        if args.ipv6 and args.interface is None:
            problems += netns.prepare_ipv6()
            args.interface = netns.V6_INTERFACE
        if problems:
            print(
                "grouposcore demo: cannot set up this network namespace:\n  "
                + "\n  ".join(problems),
                file=sys.stderr,
            )
            return 2
    elif not args.host_network:
        # Multicast stays inside a namespace of the demo's own: nothing it sends can reach
        # another program or network. Only where none can be made does it use the host's lo.
        status = netns.reexec_in_namespace(argv)
        if status is not None:
            return status
        if not netns.multicast_works(_group(args), args.interface or "lo"):
            print(
                "grouposcore demo: no network namespace could be created and multicast on "
                "the host's loopback does not work.\n  Run it in one: sudo unshare -n "
                "grouposcore demo\n  or without multicast:      grouposcore demo --unicast",
                file=sys.stderr,
            )
            return 2
    if not netns.multicast_works(_group(args), args.interface or "lo"):
        print(
            f"grouposcore demo: multicast to {_group(args)} on "
            f"{args.interface or 'lo'} does not work; try --unicast",
            file=sys.stderr,
        )
        return 2
    return None


def _group(args: argparse.Namespace) -> str:
    return "ff02::fd" if args.ipv6 else "224.0.1.187"


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Exit 0 only when every step verified; 1 when a step failed; 2 when it could not run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    early = _prepare(args, argv)
    if early is not None:
        return early
    config = DemoConfig(
        lights=args.lights, db=Path(args.db) if args.db else None,
        interface=args.interface or "lo", ipv6=args.ipv6, port=args.port,
        unicast=args.unicast, firmware=args.firmware, timeout=args.timeout, seed=args.seed,
        processes=max(1, args.processes), edhoc=not args.channels,
    )  # fmt: skip
    view = choose_view(args.json)
    try:
        report = asyncio.run(run_demo(config, view))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"grouposcore demo: could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    view.finish(report)
    if not report.ok:
        for step in report.failed():
            print(f"grouposcore demo: step {step.name} failed: {step.detail}", file=sys.stderr)
        return 1
    return 0
