"""Security files: static groups and OSCORE contexts provisioned without a Group Manager.

One JSON document per member. Byte strings are lowercase hex; the private key is a
CBOR-encoded COSE_Key in hex. Files that hold secrets are written with mode 0600 and a
file that others can read is refused on load, so a key never sits world-readable.

Group file (``"type": "group"``)::

    {
      "type": "group",
      "name": "lights",                      # invariant group name (informational)
      "gid": "44616c",                       # ID Context / Group Identifier
      "master_secret": "0102...", "master_salt": "9e7c...",
      "hkdf": "HKDF-SHA-256",
      "aead": 10, "group_enc": 10, "signature": -8, "key_agreement": -27,   # null = unset
      "gm_cred": "a202..." ,                 # Group Manager credential, "" when none
      "sender_id": "25",                     # null for a silent server
      "private_key": "a4...", "credential": "a202...",
      "members": [{"sender_id": "52", "credential": "a202...", "name": "light-1"}],
      "freshness": "echo",                   # echo | drop-first | accept
      "replay_windows_valid": true,
      "sequence_file": "lights.seq"          # optional, relative to this file
    }

OSCORE file (``"type": "oscore"``): ``master_secret``, ``master_salt``, ``sender_id``,
``recipient_id``, optional ``id_context``, ``aead``, ``hkdf``, ``sequence_file``.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from grouposcore.cose import (
    Credential,
    hkdf_by_name,
    private_key_from_bytes,
    private_key_to_bytes,
    signature_by_id,
)
from grouposcore.errors import GroupOscoreError
from grouposcore.oscore.context import SecurityContext
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.sequence import FileSequenceStore, SenderSequence


class ConfigError(GroupOscoreError):
    """A security file that is missing, unsafe or malformed."""


def write_secret_file(path: str | os.PathLike[str], document: dict[str, Any]) -> Path:
    """Write ``document`` as JSON to ``path`` with mode 0600 (atomically replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(document, indent=2) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_secret_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a security file, refusing one that other users can read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise ConfigError(f"security file not found: {path}") from exc
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(f"{path} is accessible by other users; run: chmod 600 {path}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: a security file is a JSON object")
    return document


def _hex(document: dict[str, Any], key: str, *, optional: bool = False) -> bytes | None:
    value = document.get(key)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"missing field {key!r}")
    if not isinstance(value, str):
        raise ConfigError(f"field {key!r} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise ConfigError(f"field {key!r} is not valid hex") from exc


def _req(document: dict[str, Any], key: str) -> bytes:
    value = _hex(document, key)
    assert value is not None
    return value


def _sequence(document: dict[str, Any], base: Path | None, key: str) -> SenderSequence:
    seq_file = document.get("sequence_file")
    if seq_file is None:
        return SenderSequence()
    if not isinstance(seq_file, str):
        raise ConfigError("field 'sequence_file' must be a path")
    path = Path(seq_file)
    if base is not None and not path.is_absolute():
        path = base / path
    return SenderSequence(store=FileSequenceStore(path), key=key)


def group_context_from_document(
    document: dict[str, Any], *, base: Path | None = None, **overrides: Any
) -> GroupContext:
    """Build a :class:`GroupContext` from a parsed group file."""
    if document.get("type") != "group":
        raise ConfigError("not a group security file (type must be 'group')")
    try:
        sender_id = _hex(document, "sender_id", optional=True)
        private_key = None
        credential = None
        if sender_id is not None:
            private_key = private_key_from_bytes(_req(document, "private_key"))
            credential = Credential.from_ccs(_req(document, "credential"))
        peers: dict[bytes, bytes] = {}
        members = document.get("members", [])
        if not isinstance(members, list):
            raise ConfigError("field 'members' must be a list")
        for entry in members:
            if not isinstance(entry, dict):
                raise ConfigError("each member is an object with sender_id and credential")
            peers[_req(entry, "sender_id")] = _req(entry, "credential")
        gid = _req(document, "gid")
        key = f"{gid.hex()}:{'' if sender_id is None else sender_id.hex()}"
        kwargs: dict[str, Any] = dict(
            master_salt=_hex(document, "master_salt", optional=True) or b"",
            hkdf=hkdf_by_name(document.get("hkdf", "HKDF-SHA-256")),
            aead=document.get("aead", 10),
            group_enc=document.get("group_enc", 10),
            signature=document.get("signature", -8),
            key_agreement=document.get("key_agreement", -27),
            gm_cred=_hex(document, "gm_cred", optional=True) or b"",
            sender_id=sender_id,
            private_key=private_key,
            credential=credential,
            peers=peers,
            freshness=document.get("freshness", "echo"),
            replay_windows_valid=bool(document.get("replay_windows_valid", True)),
            sequence=_sequence(document, base, key),
        )
        kwargs.update(overrides)
        return GroupContext(_req(document, "master_secret"), gid, **kwargs)
    except ConfigError:
        raise
    except GroupOscoreError as exc:
        raise ConfigError(f"invalid group security file: {exc}") from exc


def oscore_context_from_document(
    document: dict[str, Any], *, base: Path | None = None
) -> SecurityContext:
    """Build an RFC 8613 :class:`SecurityContext` from a parsed OSCORE file."""
    if document.get("type") != "oscore":
        raise ConfigError("not an OSCORE security file (type must be 'oscore')")
    try:
        sender_id, recipient_id = _req(document, "sender_id"), _req(document, "recipient_id")
        id_context = _hex(document, "id_context", optional=True)
        return SecurityContext(
            _req(document, "master_secret"),
            sender_id,
            recipient_id,
            master_salt=_hex(document, "master_salt", optional=True) or b"",
            id_context=id_context,
            aead=document.get("aead", 10),
            hkdf=hkdf_by_name(document.get("hkdf", "HKDF-SHA-256")),
            sequence=_sequence(document, base, f"{(id_context or b'').hex()}:{sender_id.hex()}"),
            send_kid_context=id_context is not None,
        )
    except ConfigError:
        raise
    except GroupOscoreError as exc:
        raise ConfigError(f"invalid OSCORE security file: {exc}") from exc


def load_security(path: str | os.PathLike[str]) -> GroupContext | SecurityContext:
    """Load a group or OSCORE security file."""
    path = Path(path)
    document = read_secret_file(path)
    if document.get("type") == "group":
        return group_context_from_document(document, base=path.parent)
    return oscore_context_from_document(document, base=path.parent)


def provision_static_group(
    names: list[str],
    *,
    name: str = "group",
    gid: bytes | None = None,
    signature: int = -8,
    aead: int | None = 10,
    group_enc: int | None = 10,
    key_agreement: int | None = -27,
    gm_cred: bytes = b"",
) -> dict[str, dict[str, Any]]:
    """Fresh keying material and one key pair per member: a group file document per name.

    Sender IDs are 1, 2, 3, ... (one byte while they fit). This is the offline equivalent
    of a Group Manager for deployments and tests that do not run one.
    """
    sig = signature_by_id(signature)
    common = {
        "type": "group",
        "name": name,
        "gid": (gid or secrets.token_bytes(4)).hex(),
        "master_secret": secrets.token_bytes(16).hex(),
        "master_salt": secrets.token_bytes(8).hex(),
        "hkdf": "HKDF-SHA-256",
        "aead": aead,
        "group_enc": group_enc,
        "signature": signature,
        "key_agreement": key_agreement,
        "gm_cred": gm_cred.hex(),
    }
    identities = []
    for index, member in enumerate(names, start=1):
        key = sig.generate_private_key()
        cred = Credential.build_ccs(key.public_key(), signature, member)
        sid = index.to_bytes(max(1, (index.bit_length() + 7) // 8), "big")
        identities.append((member, sid, key, cred))
    documents = {}
    for member, sid, key, cred in identities:
        documents[member] = dict(
            common,
            sender_id=sid.hex(),
            private_key=private_key_to_bytes(key).hex(),
            credential=cred.raw.hex(),
            members=[
                {"name": other, "sender_id": osid.hex(), "credential": ocred.raw.hex()}
                for other, osid, _, ocred in identities
                if other != member
            ],
        )
    return documents
