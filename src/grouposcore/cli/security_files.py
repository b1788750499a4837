"""The one place the command line turns a file into a security context.

Accepted wherever a command takes ``--security``: a static group file and an OSCORE file
(JSON, :mod:`grouposcore.oscore.config`), a member state file written by ``grouposcore join
--state`` (CBOR; its sequence numbers continue in the same ``STATE.seq`` reservation file
the member itself uses), and the OSCORE credentials of aiocoap and libcoap
(:mod:`grouposcore.cli.interop`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from grouposcore.cli import interop
from grouposcore.errors import ConfigError, GroupOscoreError
from grouposcore.manager.runtime import context_from_state_file
from grouposcore.oscore.config import (
    group_context_from_document,
    oscore_context_from_document,
    read_secret_file,
)
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.security import AnyContext


def add_security_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--security FILE``, and ``--group``, its old name, hidden but still accepted so
    that existing scripts keep working."""
    parser.add_argument("--security", metavar="FILE", help=help)
    parser.add_argument("--group", dest="security", metavar="FILE", help=argparse.SUPPRESS)


def kind(path: str) -> str:
    """What ``path`` holds: ``ours`` (a JSON security file of ours), ``member`` (a member
    state), ``aiocoap-context`` (a context directory), ``aiocoap-credentials`` (a
    ``--credentials`` map) or ``libcoap`` (a ``coap-oscore-conf`` file)."""
    target = Path(path)
    if not target.exists() and Path(f"{path}.gm.json").exists():
        # the member removes its state when the Group Manager ends the membership
        raise ConfigError(
            f"{path} is gone: the membership ended (evicted, or it left); "
            "'grouposcore join' again if the Group Manager allows it"
        )
    if target.is_dir():
        if interop.is_aiocoap_context(target):
            return "aiocoap-context"
        raise ConfigError(
            f"{path} is a directory, not an aiocoap security context "
            "(no settings.json or secret.json in it)"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    start = head.lstrip()
    # any JSON document (a list too), so a wrong one is reported as JSON, not as CBOR
    if start[:1] in (b"{", b"[", b'"') or start[:4] in (b"true", b"null"):
        try:
            document = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "ours"  # read_secret_file says what is wrong with it
        return "aiocoap-credentials" if interop.is_aiocoap_credentials(document) else "ours"
    if interop.is_libcoap_conf(head):
        return "libcoap"
    return "member"


def is_member_state(path: str) -> bool:
    return kind(path) == "member"


def load_context(
    path: str, uri: str | None = None, *, role: str = "any", **group_overrides: Any
) -> AnyContext:
    """The context in ``path``; ``uri`` picks the entry of an aiocoap credentials map;
    ``group_overrides`` (e.g. ``freshness``) apply to group contexts; ``role="server"``
    refuses a file with a Sender ID but no ``sequence_file``. Contexts from files start
    with invalid replay windows. Every failure is a ConfigError."""
    try:
        what = kind(path)
        if what == "member":
            return context_from_state_file(path, **group_overrides)
        if what == "aiocoap-context":
            return interop.aiocoap_context(Path(path))
        if what == "libcoap":
            return interop.libcoap_context(Path(path))
        if what == "aiocoap-credentials":
            document = json.loads(Path(path).read_text(encoding="utf-8"))
            return interop.aiocoap_credentials_context(Path(path), document, uri)
        document = read_secret_file(path)
        if document.get("type") == "group":
            return group_context_from_document(
                document, base=Path(path).parent, role=role, **group_overrides
            )
        return oscore_context_from_document(document, base=Path(path).parent, role=role)
    except ConfigError as exc:
        if str(path) in str(exc):
            raise
        raise ConfigError(f"{path}: {exc}") from exc  # e.g. bad hex: say which file
    except GroupOscoreError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_group_context(path: str, **group_overrides: Any) -> GroupContext:
    context = load_context(path, **group_overrides)
    if not isinstance(context, GroupContext):
        raise ConfigError(f"{path} is not a group security file or member state")
    return context
