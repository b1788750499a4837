"""The CoAP message model: header fields, options and payload, with no I/O attached.

``remote`` carries transport metadata (addresses, interface, multicast flag) so a message
can travel through the sans-I/O layers with it, but it is never encoded nor compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grouposcore.coap import codec as _codec
from grouposcore.coap.codes import Code, Type, code_name
from grouposcore.coap.options import OptionNumber, Options, format_option_value, option_def

__all__ = ["Message"]

_URI_NUMBERS = frozenset(
    (OptionNumber.URI_HOST, OptionNumber.URI_PORT, OptionNumber.URI_PATH, OptionNumber.URI_QUERY)
)
_TYPE_NAMES = ("CON", "NON", "ACK", "RST")


@dataclass(slots=True, repr=False)
class Message:
    """One CoAP message (RFC 7252 §3)."""

    code: int = Code.EMPTY
    mtype: Type = Type.CON
    mid: int = 0
    token: bytes = b""
    options: Options = field(default_factory=Options)
    payload: bytes = b""
    remote: Any = field(default=None, compare=False)

    def encode(self) -> bytes:
        return _codec.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Message:
        return _codec.decode(data)

    def is_request(self) -> bool:
        return 0 < self.code < 32

    def is_response(self) -> bool:
        return 64 <= self.code < 192

    def is_empty(self) -> bool:
        return self.code == 0

    def copy(self, **changes: Any) -> Message:
        """Copy with some fields replaced; the options are copied unless replaced too."""
        if not changes:  # the common case, without building keyword arguments
            return Message(
                self.code,
                self.mtype,
                self.mid,
                self.token,
                Options._from_sorted(self.options._items.copy()),
                self.payload,
                self.remote,
            )
        kw: dict[str, Any] = {
            "code": self.code,
            "mtype": self.mtype,
            "mid": self.mid,
            "token": self.token,
            "options": self.options.copy(),
            "payload": self.payload,
            "remote": self.remote,
        }
        kw.update(changes)
        return Message(**kw)

    def __repr__(self) -> str:
        mtype = self.mtype
        t = _TYPE_NAMES[mtype] if isinstance(mtype, int) and 0 <= mtype <= 3 else repr(mtype)
        c = code_name(self.code) if isinstance(self.code, int) else repr(self.code)
        parts = [t, c, f"mid={self.mid}"]
        if self.token:
            parts.append(f"token={bytes(self.token).hex()}")
        opts = self.options
        if self.is_request():
            parts.append(f"uri={_uri_ref(opts)}")
        for number, value in opts:
            if number in _URI_NUMBERS and self.is_request():
                continue
            parts.append(f"{option_def(number).name}={format_option_value(number, value)}")
        if self.payload:
            parts.append(f"payload={len(self.payload)}B")
        return f"<{' '.join(parts)}>"

    __str__ = __repr__


def _uri_ref(opts: Options) -> str:
    """Compact relative reference from the Uri-* options (for display only)."""
    out = ""
    host = opts.get(OptionNumber.URI_HOST)
    port = opts.get(OptionNumber.URI_PORT)
    if host is not None or port is not None:
        out = "//" + (host.decode("utf-8", "replace") if host is not None else "")
        if port is not None:
            out += f":{int.from_bytes(port, 'big')}"
    segs = opts.get_all(OptionNumber.URI_PATH)
    out += "/" + "/".join(s.decode("utf-8", "replace") for s in segs)
    query = opts.get_all(OptionNumber.URI_QUERY)
    if query:
        out += "?" + "&".join(q.decode("utf-8", "replace") for q in query)
    return out
