"""One exception hierarchy for the whole package.

Every parser and protocol step raises a subclass of :class:`GroupOscoreError`, so an
application can catch malformed or hostile input with a single ``except`` clause and
never sees an ``IndexError`` or ``KeyError`` escaping from deep inside.
"""

from __future__ import annotations


class GroupOscoreError(Exception):
    """Base class of every error raised by grouposcore."""


# --- CoAP layer -------------------------------------------------------------------------


class CoapError(GroupOscoreError):
    """A CoAP-level problem."""


class CoapDecodeError(CoapError):
    """Bytes that are not a well-formed CoAP message (RFC 7252 §3)."""


class CoapEncodeError(CoapError):
    """A message that cannot be put on the wire (e.g. token longer than 8 bytes)."""


class OptionValueError(CoapError):
    """An option value that does not fit its registered format or length."""


# --- COSE layer -------------------------------------------------------------------------


class CoseError(GroupOscoreError):
    """A COSE-level problem (algorithms, keys, credentials, structures)."""


class UnknownAlgorithm(CoseError):
    """A COSE algorithm identifier this implementation does not know or support."""


class DecryptionError(CoseError):
    """Authenticated decryption failed (wrong key, nonce, AAD or tampered ciphertext)."""


class SignatureError(CoseError):
    """A signature did not verify."""


class CredentialError(CoseError):
    """An authentication credential (e.g. a CCS) that is malformed or unusable."""


class KeyAgreementError(CoseError):
    """ECDH could not be performed (incompatible or invalid keys)."""
