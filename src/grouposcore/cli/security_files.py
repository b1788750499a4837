"""The one place the command line turns a file into a security context.

Three kinds of file are accepted wherever a command takes ``--security``/``--group``: a
static group file and an OSCORE file (JSON, :mod:`grouposcore.oscore.config`), and a member
state file written by ``grouposcore join --state`` (CBOR; its sequence numbers continue in
the same ``STATE.seq`` reservation file the member itself uses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grouposcore.errors import GroupOscoreError
from grouposcore.manager.runtime import context_from_state_file
from grouposcore.oscore.config import (
    ConfigError,
    group_context_from_document,
    oscore_context_from_document,
    read_secret_file,
)
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.security import AnyContext


def _is_json(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return head.startswith(b"{")


def is_member_state(path: str) -> bool:
    return not _is_json(path)


def load_context(path: str, *, role: str = "any", **group_overrides: Any) -> AnyContext:
    """The context in ``path``; ``group_overrides`` (e.g. ``freshness``) apply to group
    contexts; ``role="server"`` refuses a file with a Sender ID but no ``sequence_file``. Contexts
    from JSON files start with invalid replay windows. Every failure is a ConfigError."""
    try:
        if not _is_json(path):
            return context_from_state_file(path, **group_overrides)
        document = read_secret_file(path)
        if document.get("type") == "group":
            return group_context_from_document(document, base=Path(path).parent, role=role,
                                               **group_overrides)
        return oscore_context_from_document(document, base=Path(path).parent, role=role)
    except ConfigError:
        raise
    except GroupOscoreError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_group_context(path: str, **group_overrides: Any) -> GroupContext:
    context = load_context(path, **group_overrides)
    if not isinstance(context, GroupContext):
        raise ConfigError(f"{path} is not a group security file or member state")
    return context
