"""Moving a CoAP message in and out of its OSCORE envelope (RFC 8613 §4, §5.3).

Class E options and the real Code travel encrypted (the *plaintext*); Class U options stay
in the outer message; Observe travels in both. The outer Code is POST / FETCH for requests
and 2.04 / 2.05 for responses, so an observer on the path learns as little as possible.
"""

from __future__ import annotations

from grouposcore.coap import Code, Message, OptionNumber, Options
from grouposcore.coap.codec import decode_options, encode_options
from grouposcore.coap.codes import CODE_TABLE
from grouposcore.coap.options import OscoreClass, option_def
from grouposcore.coap.uri import DEFAULT_PORTS, parse_uri
from grouposcore.errors import CoapError, OscoreDecodeError, OscoreError

_OBSERVE = OptionNumber.OBSERVE
_OSCORE = OptionNumber.OSCORE
_PROXY_URI = OptionNumber.PROXY_URI

# Option class per number, memoised: option_def() is cheap but this is the hot path.
_OUTER_ONLY: dict[int, bool] = {}  # OSCORE (9) and Proxy-Uri (35) are class U too


def _is_outer_only(number: int) -> bool:
    outer = _OUTER_ONLY.get(number)
    if outer is None:
        outer = option_def(number).oscore_class is OscoreClass.U
        _OUTER_ONLY[number] = outer
    return outer


def split(message: Message) -> tuple[Options, bytes, int]:
    """Return (outer options, plaintext, outer code) for ``message``."""
    inner: list[tuple[int, bytes]] = []
    outer: list[tuple[int, bytes]] = []
    proxy_uri = None
    observe = False
    outer_only = _OUTER_ONLY
    for item in message.options._items:
        number = item[0]
        is_outer = outer_only.get(number)
        if is_outer is None:
            is_outer = _is_outer_only(number)
        if is_outer:
            if number == _PROXY_URI:
                proxy_uri = item[1]
            elif number == _OSCORE:
                raise OscoreError("message to protect already carries an OSCORE option")
            else:
                outer.append(item)
        else:
            inner.append(item)
            if number == _OBSERVE:
                outer.append(item)
                observe = True
    # both lists inherit the ascending order of the message's options
    inner_options = Options._from_sorted(inner)
    outer_options = Options._from_sorted(outer)
    if proxy_uri is not None:
        _decompose_proxy_uri(proxy_uri, inner_options, outer_options)
    code = message.code
    if 1 <= code <= 31:
        outer_code = Code.FETCH if observe else Code.POST
    else:
        outer_code = Code.CONTENT if observe else Code.CHANGED
    plaintext = bytes((code,)) + encode_options(inner_options) if inner else bytes((code,))
    if message.payload:
        plaintext += b"\xff" + message.payload
    return outer_options, plaintext, outer_code


def _decompose_proxy_uri(value: bytes, inner: Options, outer: Options) -> None:
    """RFC 8613 §4.1.3.3: only scheme, host and port of a Proxy-Uri may stay outer."""
    try:
        uri = parse_uri(value.decode("utf-8"))
    except (CoapError, UnicodeDecodeError) as exc:
        raise OscoreError(f"cannot decompose Proxy-Uri for OSCORE: {exc}") from exc
    outer.add(OptionNumber.PROXY_SCHEME, uri.scheme)
    # the request goes to the proxy, so the origin's host is always named (IPv6 literals
    # in their URI form, with brackets); the port only when it is not the scheme's default
    outer.add(OptionNumber.URI_HOST, f"[{uri.host}]" if ":" in uri.host else uri.host)
    if uri.port != DEFAULT_PORTS.get(uri.scheme):
        outer.add(OptionNumber.URI_PORT, uri.port)
    for segment in uri.path:
        inner.add(OptionNumber.URI_PATH, segment)
    for query in uri.query:
        inner.add(OptionNumber.URI_QUERY, query)


def _number(item: tuple[int, bytes]) -> int:
    return item[0]


def merge(protected: Message, plaintext: bytes) -> Message:
    """Rebuild the message from the outer part of ``protected`` and the decrypted plaintext."""
    if not plaintext:
        raise OscoreDecodeError("empty plaintext")
    try:
        inner, payload = decode_options(plaintext, 1)
    except CoapError as exc:
        raise OscoreDecodeError(f"malformed inner message: {exc}") from exc
    items = [item for item in inner if not _is_outer_only(item[0])]
    inner_observe = any(item[0] == _OBSERVE for item in items)
    outer = [
        item for item in protected.options
        if item[0] != _OSCORE
        and (_is_outer_only(item[0]) or (item[0] == _OBSERVE and not inner_observe))
    ]
    if outer:  # outer numbers interleave with inner ones; a stable sort keeps value order
        options = Options._from_sorted(sorted(items + outer, key=_number))
    else:
        options = Options._from_sorted(items)
    return Message(
        code=CODE_TABLE[plaintext[0]],
        mtype=protected.mtype,
        mid=protected.mid,
        token=protected.token,
        options=options,
        payload=payload,
        remote=protected.remote,
    )


def assemble(
    original: Message, outer: Options, outer_code: int, option_value: bytes, payload: bytes
) -> Message:
    """The protected message: header fields of ``original``, outer options plus OSCORE."""
    outer.add(_OSCORE, option_value)
    return Message(
        code=outer_code,
        mtype=original.mtype,
        mid=original.mid,
        token=original.token,
        options=outer,
        payload=payload,
        remote=original.remote,
    )
