"""OSCORE (RFC 8613) and Group OSCORE (RFC 10021): contexts and message protection.

Sans-I/O: every function here maps messages to messages; nothing touches a socket.
"""

from grouposcore.oscore.common import (
    RequestBinding,
    ResponseInfo,
    ServerBinding,
    derive_info,
)
from grouposcore.oscore.context import SecurityContext
from grouposcore.oscore.group import (
    FRESHNESS_POLICIES,
    INSECURE_ACCEPT_REPLAYS,
    CredentialProvider,
    FreshnessPolicy,
    GroupContext,
    RecipientContext,
)
from grouposcore.oscore.option import OscoreOption, decode_option, encode_option
from grouposcore.oscore.replay import ReplayWindow
from grouposcore.oscore.sequence import (
    MAX_SEQUENCE_NUMBER,
    FileSequenceStore,
    MemorySequenceStore,
    SenderSequence,
    SequenceNumberStore,
)

__all__ = [
    "FRESHNESS_POLICIES",
    "INSECURE_ACCEPT_REPLAYS",
    "MAX_SEQUENCE_NUMBER",
    "CredentialProvider",
    "FileSequenceStore",
    "FreshnessPolicy",
    "GroupContext",
    "MemorySequenceStore",
    "OscoreOption",
    "RecipientContext",
    "ReplayWindow",
    "RequestBinding",
    "ResponseInfo",
    "SecurityContext",
    "SenderSequence",
    "SequenceNumberStore",
    "ServerBinding",
    "decode_option",
    "derive_info",
    "encode_option",
]
