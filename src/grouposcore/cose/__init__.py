"""COSE layer: algorithms, keys, credentials and the CBOR structures OSCORE signs and encrypts.

Imports nothing of ours except :mod:`grouposcore.errors`.
"""

from grouposcore.cose.algorithms import *  # noqa: F403
from grouposcore.cose.algorithms import __all__ as _alg_all
from grouposcore.cose.credentials import *  # noqa: F403
from grouposcore.cose.credentials import __all__ as _cred_all
from grouposcore.cose.key_agreement import *  # noqa: F403
from grouposcore.cose.key_agreement import __all__ as _ka_all
from grouposcore.cose.keys import *  # noqa: F403
from grouposcore.cose.keys import __all__ as _keys_all
from grouposcore.cose.signing import *  # noqa: F403
from grouposcore.cose.signing import __all__ as _sig_all
from grouposcore.cose.structures import *  # noqa: F403
from grouposcore.cose.structures import __all__ as _struct_all

__all__ = sorted(
    set(_alg_all) | set(_cred_all) | set(_ka_all) | set(_keys_all) | set(_sig_all)
    | set(_struct_all)
)  # fmt: skip
