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
    # any JSON document (a list too), so a wrong one is reported as JSON, not as CBOR
    return head[:1] in (b"{", b"[", b'"') or head[:4] in (b"true", b"null")


def is_member_state(path: str) -> bool:
    return not _is_json(path)


def load_context(path: str, **group_overrides: Any) -> AnyContext:
    """The context in ``path``; ``group_overrides`` (e.g. ``replay_windows_valid``,
    ``freshness``) apply to group contexts. Every failure is a ConfigError."""
    try:
        if not _is_json(path):
            return context_from_state_file(path, **group_overrides)
        document = read_secret_file(path)
        if document.get("type") == "group":
            return group_context_from_document(document, base=Path(path).parent,
                                               **group_overrides)
        return oscore_context_from_document(document, base=Path(path).parent)
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
