"""The ``grouposcore`` command."""

from __future__ import annotations

import argparse
import sys

from grouposcore import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grouposcore",
        description="Secure group communication for CoAP (Group OSCORE, RFC 10021).",
    )
    parser.add_argument("--version", action="version", version=f"grouposcore {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
