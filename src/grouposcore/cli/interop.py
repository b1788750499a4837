"""OSCORE credentials in the formats of other CoAP tools, usable with ``--security FILE``.

* aiocoap: a security context directory (``settings.json`` and/or ``secret.json`` with
  ``sender-id``, ``recipient-id``, ``secret``, ``salt``, ``id-context`` as ``NAME_hex`` or
  ``NAME_ascii``, ``algorithm``, ``kdf-hashfun``; ``sequence.json`` holds the sequence
  number), or a credentials map (the JSON given to ``aiocoap-client --credentials``:
  URI patterns such as ``coap://host/*`` mapped to ``{"oscore": {"basedir": DIR}}``).
  The Sender Sequence Number continues in the context's own ``sequence.json``, so
  aiocoap and grouposcore can take turns with one context without reusing a nonce (not
  at the same time: neither sees the other's reservations while running).
* libcoap: a ``coap-oscore-conf`` file (``keyword,encoding,value`` lines, as read by
  ``coap-client -E``); its sequence numbers are kept in ``FILE.seq`` next to it.

Only RFC 8613 contexts exist in these formats; a group needs our own group files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from grouposcore._files import exclusive_file, write_private_file
from grouposcore.cose.algorithms import hkdf_by_name
from grouposcore.errors import ConfigError, GroupOscoreError
from grouposcore.oscore import SecurityContext
from grouposcore.oscore.sequence import FileSequenceStore, SenderSequence, next_block

#: COSE AEAD numbers by the names aiocoap and libcoap use
AEAD_NAMES = {
    "AES-CCM-16-64-128": 10, "AES-CCM-16-64-256": 11, "AES-CCM-64-64-128": 12,
    "AES-CCM-64-64-256": 13, "AES-CCM-16-128-128": 30, "AES-CCM-16-128-256": 31,
    "AES-CCM-64-128-128": 32, "AES-CCM-64-128-256": 33, "A128GCM": 1, "A192GCM": 2,
    "A256GCM": 3, "ChaCha20/Poly1305": 24,
}  # fmt: skip
#: libcoap's HKDF identifiers (COSE algorithm numbers) by name and number
_LIBCOAP_HKDF = {
    "COSE_HKDF_ALG_HKDF_SHA_256": "HKDF-SHA-256",
    "-10": "HKDF-SHA-256",
    "COSE_HKDF_ALG_HKDF_SHA_512": "HKDF-SHA-512",
    "-11": "HKDF-SHA-512",
}
_LIBCOAP_LINE = re.compile(r"^\s*(\w+)\s*,\s*(ascii|hex|integer|text|bool)\s*,\s*(.*?)\s*$")


def _refuse_readable(path: Path) -> None:
    """Like our own security files: a secret that other users can read is refused."""
    if path.stat().st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(f"{path} is accessible by other users; run: chmod 600 {path}")


# --- aiocoap ------------------------------------------------------------------------------


def is_aiocoap_context(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("settings.json", "secret.json"))


def is_aiocoap_credentials(document: object) -> bool:
    """A credentials map: URI patterns (or ``:name`` keys) mapped to objects."""
    return (
        isinstance(document, dict)
        and "type" not in document
        and bool(document)
        and all(isinstance(k, str) and (k.startswith(":") or "://" in k) for k in document)
    )


class AiocoapSequenceStore:
    """Sequence number reservations in an aiocoap context's ``sequence.json`` (its
    ``next-to-send``; the replay window is recorded as unknown, which makes aiocoap
    recover it with Echo, as we do after a start).

    Our processes that share the folder reserve under the same lock as
    :class:`~grouposcore.oscore.sequence.FileSequenceStore` (``sequence.json.lock``), from
    where the latest reservation ended, and never lower it. aiocoap itself does not take
    that lock: do not run aiocoap on the same folder at the same time."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "sequence.json"

    def load(self, key: str) -> int | None:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            return int(document["next-to-send"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: unreadable sequence number ({exc})") from None

    def reserve(self, key: str, upto: int) -> None:
        with exclusive_file(self.path):
            self._write(max(upto, self.load(key) or 0))

    def reserve_block(self, key: str, start: int, count: int, end: int) -> int:
        """See :meth:`grouposcore.oscore.sequence.BlockReservingStore.reserve_block`."""
        with exclusive_file(self.path):
            first, upto = next_block(self.load(key) or 0, start, count, end)
            if upto is not None:
                self._write(upto)
        return first

    def _write(self, upto: int) -> None:
        data = json.dumps({"next-to-send": upto, "received": "unknown"}).encode()
        write_private_file(self.path, data, prefix=".sequence-")


def aiocoap_context(directory: Path) -> SecurityContext:
    """The RFC 8613 context of an aiocoap security context directory."""
    data: dict[str, Any] = {}
    for name in ("secret.json", "settings.json"):
        path = directory / name
        if not path.exists():
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: an aiocoap context file is a JSON object")
        for key, value in document.items():
            try:
                if key.endswith("_hex"):
                    key, value = key[:-4], bytes.fromhex(value)
                elif key.endswith("_ascii"):
                    key, value = key[:-6], value.encode("ascii")
            except (ValueError, AttributeError, UnicodeEncodeError):
                raise ConfigError(f"{path}: {key!r} is not valid") from None
            if key in data:
                raise ConfigError(f"{directory}: {key!r} is given twice")
            data[key] = value
            if key == "secret":
                _refuse_readable(path)
    try:
        aead = AEAD_NAMES[data.get("algorithm", "AES-CCM-16-64-128")]
    except KeyError:
        raise ConfigError(f"{directory}: unknown algorithm {data.get('algorithm')!r}") from None
    missing = [k for k in ("sender-id", "recipient-id", "secret") if k not in data]
    if missing:
        raise ConfigError(f"{directory}: an aiocoap context needs {', '.join(missing)}")
    id_context = data.get("id-context")
    try:
        return SecurityContext(
            data["secret"], data["sender-id"], data["recipient-id"],
            master_salt=data.get("salt", b""), id_context=id_context, aead=aead,
            hkdf=hkdf_by_name(str(data.get("kdf-hashfun", "sha256"))),
            sequence=SenderSequence(store=AiocoapSequenceStore(directory), key="aiocoap"),
            send_kid_context=id_context is not None,
            # loaded from storage: requests recorded before this start must not be
            # delivered again, so the window waits for an Echo-proven fresh request
            replay_window_valid=False,
        )  # fmt: skip
    except GroupOscoreError as exc:
        raise ConfigError(f"{directory}: {exc}") from None


def aiocoap_credentials_context(
    path: Path, document: dict[str, Any], uri: str | None
) -> SecurityContext:
    """The OSCORE context a credentials map gives for ``uri`` (the first pattern that
    matches; without a URI, e.g. for a server, the map must hold exactly one)."""
    entries = [
        (k, v["oscore"])
        for k, v in document.items()
        if isinstance(v, dict) and isinstance(v.get("oscore"), dict)
    ]
    if uri is not None:
        chosen = [e for e in entries if not e[0].startswith(":") and fnmatch.fnmatchcase(uri, e[0])]
    else:
        chosen = entries if len(entries) == 1 else []
    if not chosen:
        what = f"for {uri}" if uri is not None else "(a server needs a map with exactly one)"
        raise ConfigError(f"{path}: no OSCORE credentials {what}")
    base = chosen[0][1].get("basedir") or chosen[0][1].get("contextfile")
    if not isinstance(base, str):
        raise ConfigError(f"{path}: the entry {chosen[0][0]!r} names no 'basedir'")
    directory = Path(base) if Path(base).is_absolute() else path.parent / base
    if not is_aiocoap_context(directory):
        raise ConfigError(f"{path}: {directory} is not an aiocoap security context")
    return aiocoap_context(directory)


# --- libcoap ------------------------------------------------------------------------------


def is_libcoap_conf(head: bytes) -> bool:
    """Text whose first meaningful line is ``keyword,encoding,value``."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return _LIBCOAP_LINE.match(line) is not None
    return False


def _libcoap_value(path: Path, number: int, encoding: str, raw: str) -> bytes | int | str:
    value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    try:
        if encoding == "hex":
            return bytes.fromhex(value)
        if encoding == "ascii":
            return value.encode("ascii")
        if encoding == "integer":
            return int(value)
        if encoding == "bool":
            return int(value.lower() == "true")
        return value
    except (ValueError, UnicodeEncodeError):
        raise ConfigError(f"{path}:{number}: not valid {encoding}: {raw!r}") from None


def libcoap_context(path: Path) -> SecurityContext:
    """The RFC 8613 context of a libcoap ``coap-oscore-conf`` file."""
    _refuse_readable(path)
    values: dict[str, Any] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = _LIBCOAP_LINE.match(line)
        if found is None:
            raise ConfigError(f"{path}:{number}: not 'keyword,encoding,value': {line!r}")
        keyword, encoding, raw = found.groups()
        if keyword == "recipient_id" and keyword in values:
            continue  # a server may list several; one context here takes the first
        values[keyword] = _libcoap_value(path, number, encoding, raw)
    missing = [k for k in ("master_secret", "sender_id", "recipient_id") if k not in values]
    if missing:
        raise ConfigError(f"{path}: a libcoap OSCORE file needs {', '.join(missing)}")
    aead: Any = values.get("aead_alg", 10)
    if isinstance(aead, str):
        name = aead.removeprefix("COSE_ALGORITHM_").replace("_", "-")
        aead = AEAD_NAMES.get(name)
        if aead is None:
            raise ConfigError(f"{path}: unknown aead_alg {values['aead_alg']!r}")
    hkdf = _LIBCOAP_HKDF.get(str(values.get("hkdf_alg", -10)))
    if hkdf is None:
        raise ConfigError(f"{path}: unknown hkdf_alg {values['hkdf_alg']!r}")
    id_context = values.get("id_context")
    try:
        return SecurityContext(
            values["master_secret"], values["sender_id"], values["recipient_id"],
            master_salt=values.get("master_salt", b""), id_context=id_context, aead=aead,
            hkdf=hkdf_by_name(hkdf),
            sequence=SenderSequence(store=FileSequenceStore(f"{path}.seq"),
                                    key=f"{(id_context or b'').hex()}:{values['sender_id'].hex()}"),
            send_kid_context=id_context is not None,
            # loaded from storage: requests recorded before this start must not be
            # delivered again, so the window waits for an Echo-proven fresh request
            replay_window_valid=False,
        )  # fmt: skip
    except GroupOscoreError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --- writing ------------------------------------------------------------------------------

_AEAD_BY_ID = {number: name for name, number in AEAD_NAMES.items()}
_LIBCOAP_HKDF_OUT = {"HKDF-SHA-256": -10, "HKDF-SHA-512": -11}
_AIOCOAP_HKDF_OUT = {"HKDF-SHA-256": "sha256", "HKDF-SHA-384": "sha384", "HKDF-SHA-512": "sha512"}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def _aead_name(context: SecurityContext) -> str:
    name = _AEAD_BY_ID.get(context.aead.id)
    if name is None:
        raise ConfigError(f"AEAD {context.aead.name} has no name in these formats")
    return name


def export_aiocoap(context: SecurityContext, directory: Path) -> None:
    """An aiocoap security context directory: ``secret.json`` (0600) and ``sequence.json``
    continuing at the next unused sequence number."""
    hkdf = _AIOCOAP_HKDF_OUT.get(context.hkdf.name)
    if hkdf is None:
        raise ConfigError(f"aiocoap has no {context.hkdf.name}")
    document: dict[str, Any] = {
        "sender-id_hex": context.sender_id.hex(), "recipient-id_hex": context.recipient_id.hex(),
        "secret_hex": context.master_secret.hex(), "salt_hex": context.master_salt.hex(),
        "algorithm": _aead_name(context), "kdf-hashfun": hkdf,
    }  # fmt: skip
    if context.id_context is not None:
        document["id-context_hex"] = context.id_context.hex()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(directory / "secret.json", json.dumps(document, indent=2) + "\n")
    AiocoapSequenceStore(directory).reserve("aiocoap", context.sequence.peek())


def export_libcoap(context: SecurityContext, path: Path) -> None:
    """A libcoap ``coap-oscore-conf`` file (0600); the next unused sequence number goes to
    ``FILE.seq``, where ``--security FILE`` continues."""
    hkdf = _LIBCOAP_HKDF_OUT.get(context.hkdf.name)
    if hkdf is None:
        raise ConfigError(f"libcoap has no {context.hkdf.name}")
    aead = "COSE_ALGORITHM_" + _aead_name(context).replace("-", "_")
    lines = [
        "# OSCORE context written by grouposcore (use this copy only, never both)",
        f'master_secret,hex,"{context.master_secret.hex()}"',
        f'master_salt,hex,"{context.master_salt.hex()}"',
        f'sender_id,hex,"{context.sender_id.hex()}"',
        f'recipient_id,hex,"{context.recipient_id.hex()}"',
        f"aead_alg,text,{aead}",
        f"hkdf_alg,integer,{hkdf}",
    ]
    if context.id_context is not None:
        lines.append(f'id_context,hex,"{context.id_context.hex()}"')
    _write_private(path, "\n".join(lines) + "\n")
    key = f"{(context.id_context or b'').hex()}:{context.sender_id.hex()}"
    FileSequenceStore(f"{path}.seq").reserve(key, context.sequence.peek())
