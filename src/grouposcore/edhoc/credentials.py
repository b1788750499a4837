"""EDHOC identities: a P-256 private key and its CWT Claims Set (CCS) credential.

The file formats are the ones aiocoap reads, so one device identity serves both stacks:

* the private key is a COSE_Key ``{1: 2, -1: 1, -4: d}`` (EC2, P-256) in CBOR, in a file
  only its owner may read or write (refused otherwise: a key others can read is no secret);
* the credential is ``{14: CCS}`` (the ``kccs`` label aiocoap uses for ``own_cred`` and
  ``peer_cred``) written as CBOR diagnostic notation, or read as CBOR or diagnostic notation;
  a bare CCS is accepted too. The CCS holds the subject (2) and the public key under
  ``cnf`` (8) / ``COSE_Key`` (1), with the key identifier (kid, 2) peers use to refer to it.

EDHOC hashes the credential's bytes into its transcript, so a credential is always handled
in its deterministic (canonical) CBOR encoding, the one aiocoap uses.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from grouposcore.errors import EdhocCredentialError

__all__ = [
    "KCCS",
    "EdhocCredential",
    "EdhocKey",
    "IdCred",
    "edn",
    "parse_id_cred",
    "read_credential_file",
    "read_key_file",
    "write_credential_file",
    "write_key_file",
]

#: The ID_CRED label of a CCS carried by value (RFC 9528 §3.5.3.2).
KCCS = 14
#: The ID_CRED label of a key identifier (COSE header parameter ``kid``).
KID = 4

_PRIVATE_BITS = stat.S_IRWXG | stat.S_IRWXO


def _canonical(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


@dataclass(frozen=True)
class EdhocKey:
    """A static P-256 private key for EDHOC method 3 (static Diffie-Hellman on both sides)."""

    d: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.d, bytes) or len(self.d) != 32:
            raise EdhocCredentialError("a P-256 private key is 32 bytes")
        value = int.from_bytes(self.d, "big")
        if not 0 < value < 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551:
            raise EdhocCredentialError("private key out of range for P-256")

    @classmethod
    def generate(cls) -> EdhocKey:
        """A fresh random key."""
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(key.private_numbers().private_value.to_bytes(32, "big"))

    @classmethod
    def from_cose_key(cls, key: Any) -> EdhocKey:
        """The key from a COSE_Key map; anything but exactly {1: 2, -1: 1, -4: d} is refused,
        as aiocoap does, so a file both read means the same to both."""
        if not isinstance(key, dict):
            raise EdhocCredentialError("EDHOC private key: not a COSE_Key map")
        if key.get(1) != 2 or key.get(-1) != 1:
            raise EdhocCredentialError("EDHOC private key: only EC2 (kty 2) on P-256 (crv 1)")
        if set(key) != {1, -1, -4} or not isinstance(key[-4], bytes):
            raise EdhocCredentialError("EDHOC private key: expected exactly {1: 2, -1: 1, -4: d}")
        return cls(key[-4])

    def cose_key(self) -> dict[int, Any]:
        """The private COSE_Key map (the key file's content)."""
        return {1: 2, -1: 1, -4: self.d}

    def public_xy(self) -> tuple[bytes, bytes]:
        """The public point's coordinates."""
        private = ec.derive_private_key(int.from_bytes(self.d, "big"), ec.SECP256R1())
        numbers = private.public_key().public_numbers()
        return numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")

    def credential(self, kid: bytes, subject: str = "") -> EdhocCredential:
        """This key's CCS credential with key identifier ``kid`` and ``subject``."""
        if not isinstance(kid, bytes) or not kid:
            raise EdhocCredentialError("a credential's kid is a non-empty byte string")
        x, y = self.public_xy()
        cose_key = {1: 2, 2: kid, -1: 1, -2: x, -3: y}
        return EdhocCredential.from_ccs({2: subject, 8: {1: cose_key}})

    def __repr__(self) -> str:  # never print the secret
        return "EdhocKey(<P-256 private>)"


@dataclass(frozen=True)
class EdhocCredential:
    """A CCS credential: its canonical bytes (``value``, what EDHOC hashes), the public key's
    x coordinate (what method 3's static DH uses), its ``kid`` and ``subject``."""

    value: bytes
    x: bytes
    kid: bytes | None
    subject: str | None

    @classmethod
    def from_ccs(cls, ccs: Any) -> EdhocCredential:
        """Validate a decoded CCS map (subject, cnf / COSE_Key EC2 P-256) and encode it."""
        if not isinstance(ccs, dict):
            raise EdhocCredentialError("credential: a CCS is a CBOR map")
        cnf = ccs.get(8)
        cose_key = cnf.get(1) if isinstance(cnf, dict) else None
        if not isinstance(cose_key, dict):
            raise EdhocCredentialError("credential: no cnf (8) / COSE_Key (1) in the CCS")
        if cose_key.get(1) != 2 or cose_key.get(-1) != 1:
            raise EdhocCredentialError("credential: only EC2 (kty 2) keys on P-256 (crv 1)")
        x, y = cose_key.get(-2), cose_key.get(-3)
        if isinstance(y, bool):
            y = None  # compressed form: only the sign bit, the x coordinate is what counts
        if not (isinstance(x, bytes) and len(x) == 32):
            raise EdhocCredentialError("credential: the key's x (-2) is not 32 bytes")
        if y is not None and not (isinstance(y, bytes) and len(y) == 32):
            raise EdhocCredentialError("credential: the key's y (-3) is not 32 bytes")
        try:
            ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"),
                int.from_bytes(y, "big") if y is not None else _y_of(x),
                ec.SECP256R1(),
            ).public_key()
        except ValueError:
            raise EdhocCredentialError("credential: the key is not a point on P-256") from None
        kid = cose_key.get(2)
        if kid is not None and not (isinstance(kid, bytes) and kid):
            raise EdhocCredentialError("credential: the kid is not a non-empty byte string")
        subject = ccs.get(2)
        if subject is not None and not isinstance(subject, str):
            raise EdhocCredentialError("credential: the subject (2) is not a text string")
        return cls(_canonical(ccs), x, kid, subject)

    @classmethod
    def from_bytes(cls, data: bytes) -> EdhocCredential:
        """From a CBOR-encoded CCS (e.g. as carried by value in ID_CRED_x)."""
        try:
            decoded = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError, TypeError) as e:
            raise EdhocCredentialError(f"credential: not CBOR: {e}") from None
        return cls.from_ccs(decoded)

    def ccs(self) -> dict[Any, Any]:
        """The decoded CCS map."""
        ccs: dict[Any, Any] = cbor2.loads(self.value)
        return ccs

    def id_cred(self, by_value: bool) -> bytes:
        """The ID_CRED map (encoded) that names this credential: by value or by kid."""
        if by_value or self.kid is None:
            return _canonical({KCCS: self.ccs()})
        return _canonical({KID: self.kid})

    def describe(self) -> str:
        """For messages and listings: subject and kid."""
        kid = "-" if self.kid is None else self.kid.hex()
        return f"{self.subject or '(no subject)'} (kid {kid})"


def _y_of(x: bytes) -> int:
    """The even y of a compressed-form P-256 point (validity check of an x-only key)."""
    try:
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x02" + x)
    except ValueError:
        raise EdhocCredentialError("credential: the key is not a point on P-256") from None
    return point.public_numbers().y


@dataclass(frozen=True)
class IdCred:
    """A decoded ID_CRED_x: a credential by value, or a reference by kid."""

    credential: EdhocCredential | None = None
    kid: bytes | None = None

    def matches(self, credential: EdhocCredential) -> bool:
        """Whether this ID_CRED names ``credential``."""
        if self.credential is not None:
            return self.credential.value == credential.value
        return self.kid is not None and self.kid == credential.kid

    def describe(self) -> str:
        if self.credential is not None:
            return f"credential by value {self.credential.describe()}"
        return f"kid {self.kid.hex() if self.kid is not None else '?'}"


def parse_id_cred(data: bytes) -> IdCred:
    """Decode the ID_CRED map lakers hands over; only kccs (14) and kid (4) are understood."""
    try:
        decoded = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as e:
        raise EdhocCredentialError(f"ID_CRED is not CBOR: {e}") from None
    if isinstance(decoded, dict) and len(decoded) == 1:
        if KCCS in decoded:
            return IdCred(credential=EdhocCredential.from_ccs(decoded[KCCS]))
        kid = decoded.get(KID)
        if isinstance(kid, bytes) and kid:
            return IdCred(kid=kid)
        if isinstance(kid, int) and not isinstance(kid, bool):
            return IdCred(kid=cbor2.dumps(kid))
    raise EdhocCredentialError("ID_CRED is neither a CCS by value (14) nor a kid (4)")


# --- files ------------------------------------------------------------------------------


def edn(value: Any) -> str:
    """CBOR diagnostic notation of ints, text, bytes, lists and maps (what credential files
    hold; aiocoap's credential maps are written this way)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(edn(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{edn(k)}: {edn(v)}" for k, v in value.items()) + "}"
    raise EdhocCredentialError(f"cannot write {type(value).__name__} as diagnostic notation")


def _load_cbor_or_edn(data: bytes, what: str) -> Any:
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError):
        pass  # a CBOR file must decode whole: anything else is tried as EDN
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise EdhocCredentialError(f"{what}: neither CBOR nor diagnostic notation") from None
    import cbor_diag

    try:
        return cbor2.loads(cbor_diag.diag2cbor(text))
    except (ValueError, cbor2.CBORDecodeError) as e:
        raise EdhocCredentialError(f"{what}: neither CBOR nor diagnostic notation: {e}") from None


def _read_private(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise EdhocCredentialError(f"cannot read {what} {path}: {e}") from None
    try:
        if os.fstat(fd).st_mode & _PRIVATE_BITS:
            raise EdhocCredentialError(
                f"{what} {path} is accessible by other users; run: chmod 600 {path}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def read_key_file(path: str | os.PathLike[str]) -> EdhocKey:
    """The private key in ``path`` (CBOR or EDN COSE_Key); refused unless only its owner
    can access the file."""
    data = _read_private(path, "EDHOC key file")
    return EdhocKey.from_cose_key(_load_cbor_or_edn(data, f"EDHOC key file {path}"))


def write_key_file(path: str | os.PathLike[str], key: EdhocKey) -> Path:
    """Create ``path`` (0600, never over an existing file) holding ``key`` as CBOR."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise EdhocCredentialError(f"{target} exists; not overwriting a key") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(cbor2.dumps(key.cose_key()))
            f.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        target.unlink(missing_ok=True)
        raise
    os.close(fd)
    return target


def read_credential_file(path: str | os.PathLike[str]) -> EdhocCredential:
    """A credential from ``path``: ``{14: CCS}`` or a bare CCS, in CBOR or EDN."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise EdhocCredentialError(f"cannot read credential file {path}: {e}") from None
    loaded = _load_cbor_or_edn(data, f"credential file {path}")
    if isinstance(loaded, bytes):
        return EdhocCredential.from_bytes(loaded)
    if isinstance(loaded, dict) and set(loaded) == {KCCS}:
        loaded = loaded[KCCS]
    return EdhocCredential.from_ccs(loaded)


def write_credential_file(path: str | os.PathLike[str], credential: EdhocCredential) -> Path:
    """Write ``{14: CCS}`` as diagnostic notation (public: 0644)."""
    target = Path(path)
    target.write_text(edn({KCCS: credential.ccs()}) + "\n")
    return target
