"""Content-encryption algorithms (AEAD and the non-AEAD Group Encryption Algorithms) and HKDF.

Every algorithm object is an immutable description; :meth:`AeadAlgorithm.cipher` binds a key
once so the per-message path is a single call into ``cryptography``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher as _BlockCipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from grouposcore.errors import CoseError, DecryptionError, UnknownAlgorithm

__all__ = [
    "A128CBC",
    "A128CTR",
    "A128GCM",
    "A192CBC",
    "A192CTR",
    "A192GCM",
    "A256CBC",
    "A256CTR",
    "A256GCM",
    "AES_CCM_16_64_128",
    "AES_CCM_16_64_256",
    "AES_CCM_16_128_128",
    "AES_CCM_16_128_256",
    "AES_CCM_64_64_128",
    "AES_CCM_64_64_256",
    "AES_CCM_64_128_128",
    "AES_CCM_64_128_256",
    "CHACHA20_POLY1305",
    "HKDF_SHA256",
    "HKDF_SHA384",
    "HKDF_SHA512",
    "AeadAlgorithm",
    "Cipher",
    "HkdfAlgorithm",
    "aead_by_id",
    "hkdf_by_id",
    "hkdf_by_name",
]


def _is_int(v: object) -> bool:
    # bool is an int subclass; True must not look up algorithm 1.
    return isinstance(v, int) and not isinstance(v, bool)


# --- bound ciphers ----------------------------------------------------------------------


class Cipher(abc.ABC):
    """A content-encryption algorithm bound to one key; build once, reuse for every message."""

    __slots__ = ()

    @abc.abstractmethod
    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Return ciphertext (with the tag appended for AEADs)."""

    @abc.abstractmethod
    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        """Return the plaintext or raise :class:`DecryptionError`."""


class _AeadCipher(Cipher):
    """AES-CCM, AES-GCM or ChaCha20/Poly1305 with the key already scheduled."""

    __slots__ = ("_nonce_len", "_prim", "_tag_len")

    def __init__(self, prim: AESCCM | AESGCM | ChaCha20Poly1305, nonce_len: int, tag_len: int):
        self._prim = prim
        self._nonce_len = nonce_len
        self._tag_len = tag_len

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        if len(nonce) != self._nonce_len:
            raise CoseError(f"nonce must be {self._nonce_len} bytes, got {len(nonce)}")
        try:
            return self._prim.encrypt(nonce, plaintext, aad)
        except (ValueError, OverflowError) as e:  # e.g. plaintext too long for CCM's L field
            raise CoseError(f"cannot encrypt: {e}") from None

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        if len(nonce) != self._nonce_len:
            raise CoseError(f"nonce must be {self._nonce_len} bytes, got {len(nonce)}")
        if len(ciphertext) < self._tag_len:
            raise DecryptionError("ciphertext shorter than the authentication tag")
        try:
            return self._prim.decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError, OverflowError):
            raise DecryptionError("authenticated decryption failed") from None


def _no_aad(aad: bytes) -> None:
    # A non-AEAD algorithm cannot protect AAD; silently dropping it would hide a caller bug.
    if aad:
        raise CoseError("non-AEAD algorithms take no additional authenticated data")


class _CtrCipher(Cipher):
    """AES-CTR (RFC 9459) with a 12-byte nonce; the counter block is nonce || 0x00000000."""

    __slots__ = ("_aes",)

    def __init__(self, aes: algorithms.AES):
        self._aes = aes

    def _apply(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        _no_aad(aad)
        if len(nonce) != 12:
            raise CoseError(f"AES-CTR nonce must be 12 bytes, got {len(nonce)}")
        ctx = _BlockCipher(self._aes, modes.CTR(nonce + b"\x00\x00\x00\x00")).encryptor()
        return ctx.update(data) + ctx.finalize()

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        return self._apply(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        return self._apply(nonce, ciphertext, aad)


class _CbcCipher(Cipher):
    """AES-CBC with PKCS#7 padding (RFC 9459); only for draft-23 peers."""

    __slots__ = ("_aes",)

    def __init__(self, aes: algorithms.AES):
        self._aes = aes

    @staticmethod
    def _check_iv(nonce: bytes, aad: bytes) -> None:
        _no_aad(aad)
        if len(nonce) != 16:
            raise CoseError(f"AES-CBC IV must be 16 bytes, got {len(nonce)}")

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        self._check_iv(nonce, aad)
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        ctx = _BlockCipher(self._aes, modes.CBC(nonce)).encryptor()
        return ctx.update(padded) + ctx.finalize()

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        self._check_iv(nonce, aad)
        if not ciphertext or len(ciphertext) % 16:
            raise DecryptionError("AES-CBC ciphertext is not a positive multiple of 16 bytes")
        ctx = _BlockCipher(self._aes, modes.CBC(nonce)).decryptor()
        padded = ctx.update(ciphertext) + ctx.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise DecryptionError("bad PKCS#7 padding") from None


# --- algorithm descriptions -------------------------------------------------------------

_CCM, _GCM, _CHACHA, _CTR, _CBC = "ccm", "gcm", "chacha", "ctr", "cbc"


@dataclass(frozen=True)
class AeadAlgorithm:
    """A COSE content-encryption algorithm; ``is_aead`` is False for CTR/CBC (no tag)."""

    id: int
    name: str
    key_len: int
    nonce_len: int
    tag_len: int
    is_aead: bool
    _family: str = field(default="", repr=False, compare=False)

    def cipher(self, key: bytes) -> Cipher:
        """Bind ``key``; the returned object is what callers cache per Sender/Recipient Key."""
        if len(key) != self.key_len:
            raise CoseError(f"{self.name} needs a {self.key_len}-byte key, got {len(key)}")
        key = bytes(key)
        fam = self._family
        if fam == _CCM:
            return _AeadCipher(AESCCM(key, tag_length=self.tag_len), self.nonce_len, self.tag_len)
        if fam == _GCM:
            return _AeadCipher(AESGCM(key), self.nonce_len, self.tag_len)
        if fam == _CHACHA:
            return _AeadCipher(ChaCha20Poly1305(key), self.nonce_len, self.tag_len)
        if fam == _CTR:
            return _CtrCipher(algorithms.AES(key))
        if fam == _CBC:
            return _CbcCipher(algorithms.AES(key))
        raise UnknownAlgorithm(f"no implementation for {self.name}")


def _alg(id_: int, name: str, key: int, nonce: int, tag: int, fam: str) -> AeadAlgorithm:
    return AeadAlgorithm(id_, name, key, nonce, tag, fam in (_CCM, _GCM, _CHACHA), fam)


AES_CCM_16_64_128 = _alg(10, "AES-CCM-16-64-128", 16, 13, 8, _CCM)
AES_CCM_16_64_256 = _alg(11, "AES-CCM-16-64-256", 32, 13, 8, _CCM)
AES_CCM_64_64_128 = _alg(12, "AES-CCM-64-64-128", 16, 7, 8, _CCM)
AES_CCM_64_64_256 = _alg(13, "AES-CCM-64-64-256", 32, 7, 8, _CCM)
AES_CCM_16_128_128 = _alg(30, "AES-CCM-16-128-128", 16, 13, 16, _CCM)
AES_CCM_16_128_256 = _alg(31, "AES-CCM-16-128-256", 32, 13, 16, _CCM)
AES_CCM_64_128_128 = _alg(32, "AES-CCM-64-128-128", 16, 7, 16, _CCM)
AES_CCM_64_128_256 = _alg(33, "AES-CCM-64-128-256", 32, 7, 16, _CCM)
A128GCM = _alg(1, "A128GCM", 16, 12, 16, _GCM)
A192GCM = _alg(2, "A192GCM", 24, 12, 16, _GCM)
A256GCM = _alg(3, "A256GCM", 32, 12, 16, _GCM)
CHACHA20_POLY1305 = _alg(24, "ChaCha20/Poly1305", 32, 12, 16, _CHACHA)
A128CTR = _alg(-65534, "A128CTR", 16, 12, 0, _CTR)
A192CTR = _alg(-65533, "A192CTR", 24, 12, 0, _CTR)
A256CTR = _alg(-65532, "A256CTR", 32, 12, 0, _CTR)
A128CBC = _alg(-65531, "A128CBC", 16, 16, 0, _CBC)
A192CBC = _alg(-65530, "A192CBC", 24, 16, 0, _CBC)
A256CBC = _alg(-65529, "A256CBC", 32, 16, 0, _CBC)

_REGISTRY: dict[int, AeadAlgorithm] = {
    a.id: a
    for a in (
        AES_CCM_16_64_128, AES_CCM_16_64_256, AES_CCM_64_64_128, AES_CCM_64_64_256,
        AES_CCM_16_128_128, AES_CCM_16_128_256, AES_CCM_64_128_128, AES_CCM_64_128_256,
        A128GCM, A192GCM, A256GCM, CHACHA20_POLY1305, A128CTR, A192CTR, A256CTR,
    )
}  # fmt: skip
_CBC_REGISTRY: dict[int, AeadAlgorithm] = {a.id: a for a in (A128CBC, A192CBC, A256CBC)}


def aead_by_id(alg_id: int, allow_cbc: bool = False) -> AeadAlgorithm:
    """Look up an encryption algorithm; CBC only on request since RFC 10021 forbids it."""
    alg = _REGISTRY.get(alg_id) if _is_int(alg_id) else None
    if alg is not None:
        return alg
    if _is_int(alg_id) and alg_id in _CBC_REGISTRY:
        if allow_cbc:
            return _CBC_REGISTRY[alg_id]
        raise UnknownAlgorithm(f"{_CBC_REGISTRY[alg_id].name} is only allowed for draft-23 peers")
    raise UnknownAlgorithm(f"unsupported encryption algorithm {alg_id!r}")


# --- HKDF -------------------------------------------------------------------------------

_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    5: hashes.SHA256,
    6: hashes.SHA384,
    7: hashes.SHA512,
}


#: one hash descriptor per algorithm (they carry no state), not a new one per derivation
_HASH_OBJECTS: dict[int, hashes.HashAlgorithm] = {i: h() for i, h in _HASHES.items()}


@dataclass(frozen=True)
class HkdfAlgorithm:
    """HKDF (RFC 5869), identified by the COSE id of its HMAC (5, 6, 7) as Group OSCORE does."""

    id: int
    name: str

    def derive(self, salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
        """Extract-and-expand; an empty salt means hash-length zeros (RFC 5869 §2.2)."""
        try:
            kdf = HKDF(
                algorithm=_HASH_OBJECTS[self.id], length=length, salt=salt or None, info=info
            )
            return kdf.derive(ikm)
        except (ValueError, TypeError) as e:
            raise CoseError(f"HKDF failed: {e}") from None


HKDF_SHA256 = HkdfAlgorithm(5, "HKDF-SHA-256")
HKDF_SHA384 = HkdfAlgorithm(6, "HKDF-SHA-384")
HKDF_SHA512 = HkdfAlgorithm(7, "HKDF-SHA-512")
_HKDFS: dict[int, HkdfAlgorithm] = {h.id: h for h in (HKDF_SHA256, HKDF_SHA384, HKDF_SHA512)}
_HKDF_NAMES: dict[str, HkdfAlgorithm] = {"sha256": HKDF_SHA256, "sha384": HKDF_SHA384,
                                         "sha512": HKDF_SHA512}  # fmt: skip


def hkdf_by_id(alg_id: int) -> HkdfAlgorithm:
    """Look up HKDF by its HMAC id (5/6/7); note -10 is *not* an HKDF identifier here."""
    hk = _HKDFS.get(alg_id) if _is_int(alg_id) else None
    if hk is None:
        raise UnknownAlgorithm(f"unsupported HKDF algorithm {alg_id!r}")
    return hk


def hkdf_by_name(name: str) -> HkdfAlgorithm:
    """Accept the spellings found in config files: "HKDF-SHA-256", "SHA-256", "sha256", ..."""
    if not isinstance(name, str):
        raise UnknownAlgorithm(f"unsupported HKDF algorithm {name!r}")
    key = name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    key = key.removeprefix("hkdf")
    hk = _HKDF_NAMES.get(key)
    if hk is None:
        raise UnknownAlgorithm(f"unsupported HKDF algorithm {name!r}")
    return hk
