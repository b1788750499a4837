"""EDHOC (RFC 9528): authenticated key exchange that turns two static key pairs into an
OSCORE Security Context (RFC 9528 Appendix A), so a node and its Group Manager need no
pre-shared secret. Sans-I/O core in :mod:`.protocol`, credentials and files in
:mod:`.credentials`, the CoAP edge in :mod:`.coap`."""

from grouposcore.edhoc.credentials import (
    EdhocCredential,
    EdhocKey,
    IdCred,
    read_credential_file,
    read_key_file,
    write_credential_file,
    write_key_file,
)
from grouposcore.edhoc.protocol import (
    SUPPORTED_METHODS,
    SUPPORTED_SUITES,
    Established,
    Initiator,
    OscoreParameters,
    Responder,
    ResponderSessions,
)

__all__ = [
    "SUPPORTED_METHODS",
    "SUPPORTED_SUITES",
    "EdhocCredential",
    "EdhocKey",
    "Established",
    "IdCred",
    "Initiator",
    "OscoreParameters",
    "Responder",
    "ResponderSessions",
    "read_credential_file",
    "read_key_file",
    "write_credential_file",
    "write_key_file",
]
