"""grouposcore: Group OSCORE (RFC 10021) and OSCORE (RFC 8613) for CoAP.

The names most programs need are importable from here; the layers (``coap``, ``cose``,
``oscore``, ``transport``, ``manager``) hold the rest.
"""

from importlib.metadata import PackageNotFoundError, version

from grouposcore.coap import Code, Message, Options, Type
from grouposcore.errors import GroupOscoreError
from grouposcore.oscore import GroupContext, SecurityContext, SenderSequence

# pyproject.toml is the one place the version is written; the installed metadata carries it.
try:
    __version__ = version("grouposcore")
except PackageNotFoundError:  # a source tree used without installing it
    __version__ = "0+unknown"

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
