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
      "gm_cred": "a202...",                  # Group Manager credential (hex), see below
      "sender_id": "25",                     # null for a silent server
      "private_key": "a4...", "credential": "a202...",
      "members": [{"sender_id": "52", "credential": "a202...", "name": "light-1"}],
      "freshness": "echo",                   # see below
      "sequence_file": "lights.seq"          # relative to this file
    }

``gm_cred`` is what enters every external_aad as the Group Manager's credential: the GM's
credential in hex; absent for a static group without a Group Manager (the empty byte string
h'', a byte string as RFC 10021 requires); or ``null`` to interoperate with a static group
as aiocoap configures one (CBOR null in the external_aad). ``""`` is refused: it was read
as h'' before and is easily meant as "none" (null).

``freshness`` says what happens to a request whose sender's replay window is not valid
(RFC 10021 §2.6.1.2; a context loaded from a file always starts that way, because a file
cannot prove which requests were already delivered):

* ``"echo"`` (default): a 4.01 with an Echo option; the client's repeated request carrying
  it proves freshness and makes the window valid (RFC 9175).
* ``"drop"``: drop such requests; the window stays invalid until a new Security Context.
* ``"insecure-accept-replays-after-restart"``: deliver the first verified request and make
  the window valid from it. Outside what the RFC allows: every request recorded before the
  restart can be delivered once more. Only for clients that cannot answer a group Echo
  (aiocoap's group client), on a network where that risk is accepted.

The values ``"drop-first"`` and ``"accept"`` of earlier versions are refused (ConfigError
saying what to use instead).

OSCORE file (``"type": "oscore"``): ``master_secret``, ``master_salt``, ``sender_id``,
``recipient_id``, optional ``id_context``, ``aead``, ``hkdf``, ``sequence_file``.

A file never makes replay windows valid: a loaded context starts with invalid windows and
recovers them with Echo. Only a caller that restores replay state it persisted itself (or
knows the context was never used) may say so: ``replay_windows_valid=True`` together with
``replay_state_persisted=True``.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grouposcore._files import write_private_file
from grouposcore.cose import (
    Credential,
    hkdf_by_name,
    private_key_from_bytes,
    private_key_to_bytes,
    signature_by_id,
)
from grouposcore.errors import ConfigError, CredentialError, GroupOscoreError
from grouposcore.oscore.context import SecurityContext
from grouposcore.oscore.group import GroupContext, check_freshness_policy
from grouposcore.oscore.sequence import FileSequenceStore, SenderSequence


def write_secret_file(path: str | os.PathLike[str], document: dict[str, Any]) -> Path:
    """Write ``document`` as JSON to ``path`` with mode 0600 (atomically replaced)."""
    data = (json.dumps(document, indent=2) + "\n").encode()
    return write_private_file(path, data, prefix=f".{Path(path).name}.")


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


def _private_key(raw: bytes) -> Any:
    """A COSE_Key (CBOR), or the raw 32-byte seed other tools keep an Ed25519 key as."""
    try:
        return private_key_from_bytes(raw)
    except CredentialError as exc:
        if len(raw) == 32:
            return Ed25519PrivateKey.from_private_bytes(raw)
        raise ConfigError(
            "field 'private_key' is neither a COSE_Key (CBOR, hex) nor a raw 32-byte Ed25519 "
            f"seed (hex): {exc}"
        ) from None


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
    if not path.is_absolute():
        if base is None:
            # resolving against the working directory would give another file (and reused
            # sequence numbers) whenever the program starts elsewhere
            raise ConfigError(
                f"relative sequence_file {seq_file!r} needs base= (the folder of the security file)"
            )
        path = base / path
    return SenderSequence(store=FileSequenceStore(path), key=key)


def _gm_cred(document: dict[str, Any]) -> bytes | None:
    """The GM credential for the external_aad: hex bytes, null (CBOR null), or absent (h'')."""
    if "gm_cred" not in document:
        return b""
    value = document["gm_cred"]
    if value is None:
        return None
    if value == "":
        raise ConfigError(
            "field 'gm_cred' is \"\": give the GM credential in hex, leave the "
            "field out for h'' (a group without a Group Manager), or write null "
            "for CBOR null (aiocoap's static groups)"
        )
    return _hex(document, "gm_cred")


def _replay_windows_valid(
    document: dict[str, Any], overrides: dict[str, Any], persisted: bool
) -> bool:
    """Secure by default: windows of a loaded context start invalid (Echo recovers them)."""
    if document.get("replay_windows_valid"):
        raise ConfigError(
            "'replay_windows_valid' in a security file is not honoured: a file "
            "cannot prove which requests were delivered before; remove it "
            "(windows start invalid and Echo recovers them)"
        )
    valid = bool(overrides.pop("replay_windows_valid", False))
    if valid and not persisted:
        raise ConfigError(
            "replay_windows_valid=True only with replay_state_persisted=True: "
            "valid windows after a restart accept every recorded request again"
        )
    return valid


def _check_role(document: dict[str, Any], role: str, what: str) -> None:
    """A server answers with its own Partial IVs (notifications, Echo challenges): without a
    sequence file they would start at 0 again after a restart and reuse nonces."""
    if role not in ("any", "server"):
        raise ValueError(f"unknown role {role!r}")
    if (
        role == "server"
        and document.get("sender_id") is not None
        and not document.get("sequence_file")
    ):
        raise ConfigError(
            f"{what} server file needs 'sequence_file': without it the server's "
            "Partial IVs restart at 0 after a restart and reuse nonces; add e.g. "
            '"sequence_file": "server.seq"'
        )


def _freshness(document: dict[str, Any]) -> str:
    try:
        return check_freshness_policy(document.get("freshness", "echo"))
    except GroupOscoreError as exc:
        raise ConfigError(str(exc)) from exc


def group_context_from_document(
    document: dict[str, Any],
    *,
    base: Path | None = None,
    role: str = "any",
    replay_state_persisted: bool = False,
    **overrides: Any,
) -> GroupContext:
    """Build a :class:`GroupContext` from a parsed group file.

    Its replay windows start invalid (see the module docstring); ``replay_windows_valid=True``
    is honoured only with ``replay_state_persisted=True``. ``overrides`` replace
    constructor arguments (e.g. ``freshness``). ``base`` is the folder a relative
    ``sequence_file`` is found in. With ``role="server"`` a file that has a Sender ID but
    no ``sequence_file`` is refused.
    """
    if document.get("type") != "group":
        raise ConfigError("not a group security file (type must be 'group')")
    overrides = dict(overrides)
    windows_valid = _replay_windows_valid(document, overrides, replay_state_persisted)
    if "freshness" in overrides:
        overrides["freshness"] = _freshness({"freshness": overrides["freshness"]})
    if "sequence" not in overrides:
        _check_role(document, role, "a group")
    try:
        sender_id = _hex(document, "sender_id", optional=True)
        private_key = None
        credential = None
        if sender_id is not None:
            private_key = _private_key(_req(document, "private_key"))
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
            gm_cred=_gm_cred(document),
            sender_id=sender_id,
            private_key=private_key,
            credential=credential,
            peers=peers,
            freshness=_freshness(document),
            replay_windows_valid=windows_valid,
        )
        if "sequence" not in overrides:  # a caller's own sequence replaces the file's
            kwargs["sequence"] = _sequence(document, base, key)
        kwargs.update(overrides)
        return GroupContext(_req(document, "master_secret"), gid, **kwargs)
    except ConfigError:
        raise
    except GroupOscoreError as exc:
        raise ConfigError(f"invalid group security file: {exc}") from exc


def oscore_context_from_document(
    document: dict[str, Any],
    *,
    base: Path | None = None,
    role: str = "any",
    replay_window_valid: bool = False,
    replay_state_persisted: bool = False,
) -> SecurityContext:
    """Build an RFC 8613 :class:`SecurityContext` from a parsed OSCORE file.

    The replay window starts invalid (Echo recovers it, RFC 8613 B.1.2) unless the caller
    restores persisted state: ``replay_window_valid=True`` with
    ``replay_state_persisted=True``. With ``role="server"`` a file without
    ``sequence_file`` is refused: the server's own Partial IVs (notifications, Echo
    challenges) would start at 0 again after a restart and reuse nonces.
    """
    if document.get("type") != "oscore":
        raise ConfigError("not an OSCORE security file (type must be 'oscore')")
    windows_valid = _replay_windows_valid(
        document, {"replay_windows_valid": replay_window_valid}, replay_state_persisted
    )
    _check_role(document, role, "an OSCORE")
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
            replay_window_valid=windows_valid,
            send_kid_context=id_context is not None,
        )
    except ConfigError:
        raise
    except GroupOscoreError as exc:
        raise ConfigError(f"invalid OSCORE security file: {exc}") from exc


def load_security(
    path: str | os.PathLike[str], *, role: str = "any"
) -> GroupContext | SecurityContext:
    """Load a group or OSCORE security file (replay windows start invalid; ``role="server"``
    refuses a sending server without ``sequence_file``)."""
    path = Path(path)
    document = read_secret_file(path)
    if document.get("type") == "group":
        return group_context_from_document(document, base=path.parent, role=role)
    return oscore_context_from_document(document, base=path.parent, role=role)


def provision_static_group(
    names: list[str],
    *,
    name: str = "group",
    gid: bytes | None = None,
    signature: int = -8,
    aead: int | None = 10,
    group_enc: int | None = 10,
    key_agreement: int | None = -27,
    gm_cred: bytes | None = b"",
) -> dict[str, dict[str, Any]]:
    """Fresh keying material and one key pair per member: a group file document per name.

    Sender IDs are 1, 2, 3, ... (one byte while they fit). This is the offline equivalent
    of a Group Manager for deployments and tests that do not run one. ``gm_cred``: b''
    (the field is left out: h'' in the external_aad), a GM credential, or None (``null``:
    CBOR null, to match aiocoap's static groups). Each document names its own sequence
    file, ``NAME.seq`` next to the file it is written to, so a member reloaded from it
    never reuses a Partial IV.
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
    }
    if gm_cred is None or gm_cred:
        common["gm_cred"] = None if gm_cred is None else gm_cred.hex()
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
            sequence_file=f"{member}.seq",
            private_key=private_key_to_bytes(key).hex(),
            credential=cred.raw.hex(),
            members=[
                {"name": other, "sender_id": osid.hex(), "credential": ocred.raw.hex()}
                for other, osid, _, ocred in identities
                if other != member
            ],
        )
    return documents
