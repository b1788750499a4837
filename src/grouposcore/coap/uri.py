"""coap:// and coaps:// URIs and their mapping to Uri-* options (RFC 7252 §6).

Parsing is done by hand instead of with ``urllib.parse`` because CoAP needs the exact
RFC 7252 §6.4 decomposition (empty segments kept, ``+`` not a space, no userinfo, no
fragment) and because every failure must surface as :class:`UriError`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from grouposcore.coap.constants import COAP_PORT, COAPS_PORT
from grouposcore.coap.options import Options
from grouposcore.errors import OptionValueError, UriError

__all__ = ["DEFAULT_PORTS", "CoapUri", "options_to_uri", "parse_uri", "uri_to_options"]

DEFAULT_PORTS: dict[str, int] = {"coap": COAP_PORT, "coaps": COAPS_PORT}

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(.*)", re.S)
_PCT = r"%[0-9A-Fa-f]{2}"
_REG_NAME_RE = re.compile(rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|{_PCT})*")
_PATH_RE = re.compile(rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|{_PCT})*")
_QUERY_RE = re.compile(rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|{_PCT})*")
_PORT_RE = re.compile(r"[0-9]*")

# Characters left as they are when serializing (RFC 7252 §6.5 steps 5, 7, 8).
_SAFE_HOST = "!$&'()*+,;="
_SAFE_SEGMENT = "!$&'()*+,;=:@"
_SAFE_QUERY = "!$'()*+,;=:@/?"


@dataclass
class CoapUri:
    """A decomposed CoAP URI; ``host`` holds IPv6 literals without brackets."""

    scheme: str
    host: str
    port: int
    path: list[str] = field(default_factory=list)
    query: list[str] = field(default_factory=list)

    @property
    def host_is_ip(self) -> bool:
        return is_ip_literal(self.host)

    def __str__(self) -> str:
        return _build(self.scheme, self.host, self.port, self.path, self.query)


def is_ip_literal(host: str) -> bool:
    """True for IPv4 dotted-quad and IPv6 addresses (optionally with a zone)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _decode_component(text: str, what: str) -> str:
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise UriError(f"{what} {text!r} is not UTF-8 after percent-decoding") from None


def _parse_ipv6(literal: str) -> str:
    addr, sep, zone = literal.partition("%25")
    if literal[:1] in ("v", "V"):
        raise UriError(f"IPvFuture literal [{literal}] is not supported")
    try:
        ip = ipaddress.IPv6Address(addr)
    except ValueError:
        raise UriError(f"invalid IPv6 literal [{literal}]") from None
    if sep:
        if not zone or not _REG_NAME_RE.fullmatch(zone):
            raise UriError(f"invalid zone identifier in [{literal}]")
        return f"{ip.compressed}%{_decode_component(zone, 'zone')}"
    return ip.compressed


def parse_uri(uri: str) -> CoapUri:
    """Split an absolute coap/coaps URI into host, port, path segments and query arguments."""
    if not isinstance(uri, str):
        raise UriError(f"URI must be a str, not {type(uri).__name__}")
    m = _SCHEME_RE.fullmatch(uri)
    if m is None:
        raise UriError(f"not an absolute URI: {uri!r}")
    scheme = m.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise UriError(f"unsupported scheme {scheme!r} (expected coap or coaps)")
    rest = m.group(2)
    if "#" in rest:
        raise UriError("CoAP URIs must not have a fragment")
    if not rest.startswith("//"):
        raise UriError(f"missing authority (//host) in {uri!r}")
    rest = rest[2:]
    cut = len(rest)
    for sep in "/?":
        k = rest.find(sep)
        if k != -1 and k < cut:
            cut = k
    authority, rest = rest[:cut], rest[cut:]
    path_part, has_query, query_part = rest.partition("?")

    if "@" in authority:
        raise UriError("user information is not allowed in CoAP URIs")
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise UriError(f"unterminated IPv6 literal in {uri!r}")
        host = _parse_ipv6(authority[1:close])
        after = authority[close + 1 :]
        if after and after[0] != ":":
            raise UriError(f"unexpected {after!r} after IPv6 literal")
        port_text = after[1:]
    else:
        host_text, _, port_text = authority.partition(":")
        if not host_text:
            raise UriError(f"empty host in {uri!r}")
        if not _REG_NAME_RE.fullmatch(host_text):
            raise UriError(f"invalid character in host {host_text!r}")
        host = _decode_component(host_text, "host").lower()
        if not host:
            raise UriError(f"empty host in {uri!r}")

    if port_text:
        if not _PORT_RE.fullmatch(port_text) or int(port_text) > 0xFFFF:
            raise UriError(f"invalid port {port_text!r}")
        port = int(port_text)
    else:
        port = DEFAULT_PORTS[scheme]

    if not _PATH_RE.fullmatch(path_part):
        raise UriError(f"invalid character in path {path_part!r}")
    if path_part in ("", "/"):
        path: list[str] = []
    else:
        path = [_decode_component(s, "path segment") for s in path_part[1:].split("/")]

    if has_query and not _QUERY_RE.fullmatch(query_part):
        raise UriError(f"invalid character in query {query_part!r}")
    query = [_decode_component(q, "query") for q in query_part.split("&")] if query_part else []
    return CoapUri(scheme, host, port, path, query)


def uri_to_options(uri: CoapUri | str, options: Options | None = None) -> Options:
    """Set Uri-Host/-Port/-Path/-Query from ``uri`` (RFC 7252 §6.4); returns ``options``.

    Uri-Host is omitted for IP literals and Uri-Port for the scheme's default port, since
    the receiver derives both from the datagram's destination.
    """
    if isinstance(uri, str):
        uri = parse_uri(uri)
    if options is None:
        options = Options()
    default = DEFAULT_PORTS.get(uri.scheme)
    if default is None:
        raise UriError(f"unsupported scheme {uri.scheme!r}")
    for what, items in (("path segment", uri.path), ("query argument", uri.query)):
        for s in items:
            if len(s.encode("utf-8")) > 255:
                raise UriError(f"{what} longer than 255 bytes cannot be a Uri option")
    if len(uri.host.encode("utf-8")) > 255:
        raise UriError("host longer than 255 bytes cannot be a Uri-Host option")
    try:
        options.uri_host = None if is_ip_literal(uri.host) else uri.host
        options.uri_port = None if uri.port == default else uri.port
    except OptionValueError as e:
        raise UriError(str(e)) from None
    options.uri_path = uri.path
    options.uri_query = uri.query
    return options


def _build(scheme: str, host: str, port: int, path: list[str], query: list[str]) -> str:
    if ":" in host:
        addr, _, zone = host.partition("%")
        host_part = f"[{addr}%25{quote(zone, safe='')}]" if zone else f"[{addr}]"
    else:
        host_part = quote(host, safe=_SAFE_HOST)
    port_part = "" if port == DEFAULT_PORTS.get(scheme) else f":{port}"
    out = f"{scheme}://{host_part}{port_part}/" + "/".join(
        quote(s, safe=_SAFE_SEGMENT) for s in path
    )
    if query:
        out += "?" + "&".join(quote(q, safe=_SAFE_QUERY) for q in query)
    return out


def options_to_uri(
    options: Options, host: str | None = None, port: int | None = None, scheme: str = "coap"
) -> str:
    """Rebuild the request URI (RFC 7252 §6.5) from the options and the request's endpoint.

    ``host``/``port`` are the destination the request was sent to; Uri-Host and Uri-Port
    override them when present.
    """
    if scheme not in DEFAULT_PORTS:
        raise UriError(f"unsupported scheme {scheme!r}")
    try:
        h = options.uri_host
        p = options.uri_port
        path = options.uri_path
        query = options.uri_query
    except OptionValueError as e:
        raise UriError(str(e)) from None
    if h is None:
        h = host
    if h is None:
        raise UriError("no Uri-Host option and no host given")
    if p is None:
        p = DEFAULT_PORTS[scheme] if port is None else port
    return _build(scheme, h, p, path, query)
