"""grouposcore: Group OSCORE (RFC 10021) and OSCORE (RFC 8613) for CoAP.

The names most programs need are importable from here; the layers (``coap``, ``cose``,
``oscore``, ``transport``, ``manager``) hold the rest.
"""

from grouposcore.coap import Code, Message, Options, Type
from grouposcore.errors import GroupOscoreError
from grouposcore.oscore import GroupContext, SecurityContext, SenderSequence

__version__ = "0.1.0"

__all__ = [
    "Code",
    "GroupContext",
    "GroupOscoreError",
    "Message",
    "Options",
    "SecurityContext",
    "SenderSequence",
    "Type",
    "__version__",
]
