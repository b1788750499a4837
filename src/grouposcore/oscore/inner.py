"""Moving a CoAP message in and out of its OSCORE envelope (RFC 8613 §4, §5.3).

Class E options and the real Code travel encrypted (the *plaintext*); Class U options stay
in the outer message; Observe travels in both. The outer Code is POST / FETCH for requests
and 2.04 / 2.05 for responses, so an observer on the path learns as little as possible.
"""

from __future__ import annotations

from operator import itemgetter

from grouposcore.coap import Code, Message, OptionNumber, Options
from grouposcore.coap.codec import _encode_items, decode_option_items
from grouposcore.coap.codes import CODE_TABLE
from grouposcore.coap.options import OscoreClass, option_def
from grouposcore.coap.uri import CoapUri, parse_uri
from grouposcore.errors import CoapError, OscoreDecodeError, OscoreError

_OBSERVE = OptionNumber.OBSERVE
_OSCORE = OptionNumber.OSCORE
_PROXY_URI = OptionNumber.PROXY_URI

# Option class per number, memoised: option_def() is cheap but this is the hot path.
_OUTER_ONLY: dict[int, bool] = {}  # OSCORE (9) and Proxy-Uri (35) are class U too


_EMPTY_OBSERVE = (int(_OBSERVE), b"")
_OSCORE_NUMBER = int(_OSCORE)


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
    code = message.code
    is_request = 1 <= code <= 31
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
        elif number == _OBSERVE:
            # RFC 8613 §4.1.3.5: a request's inner Observe is the request's value (0 or
            # 1); a response's inner Observe is empty and only the outer carries the value
            inner.append(item if is_request else _EMPTY_OBSERVE)
            outer.append(item)
            observe = True
        else:
            inner.append(item)
    # both lists inherit the ascending order of the message's options
    outer_options = Options._from_sorted(outer)
    if proxy_uri is not None:
        inner_options = Options._from_sorted(inner)
        _decompose_proxy_uri(proxy_uri, inner_options, outer_options)
        inner = inner_options._items
    if is_request:
        outer_code = Code.FETCH if observe else Code.POST
    else:
        outer_code = Code.CONTENT if observe else Code.CHANGED
    plain = bytearray((code,))
    if inner:
        _encode_items(inner, plain)
    if message.payload:
        plain.append(0xFF)
        plain += message.payload
    return outer_options, bytes(plain), outer_code


def _decompose_proxy_uri(value: bytes, inner: Options, outer: Options) -> None:
    """RFC 8613 §4.1.3.3: the outer Proxy-Uri is the composition of scheme, host and port
    only; Uri-Path and Uri-Query travel inside."""
    try:
        uri = parse_uri(value.decode("utf-8"))
    except (CoapError, UnicodeDecodeError) as exc:
        raise OscoreError(f"cannot decompose Proxy-Uri for OSCORE: {exc}") from exc
    # the composition without a path ends in "/" (RFC 7252 §6.5 step 8): drop it
    outer.add(_PROXY_URI, str(CoapUri(uri.scheme, uri.host, uri.port))[:-1])
    for segment in uri.path:
        inner.add(OptionNumber.URI_PATH, segment)
    for query in uri.query:
        inner.add(OptionNumber.URI_QUERY, query)


def _recompose_proxy_uri(items: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The inverse of :func:`_decompose_proxy_uri` on a request: outer scheme, host and
    port and the inner Uri-Path / Uri-Query become the one Proxy-Uri the client wrote."""
    path = [v for n, v in items if n == OptionNumber.URI_PATH]
    query = [v for n, v in items if n == OptionNumber.URI_QUERY]
    base = next(v for n, v in items if n == _PROXY_URI)
    try:
        uri = parse_uri(base.decode("utf-8"))
        uri.path = [v.decode("utf-8") for v in path]
        uri.query = [v.decode("utf-8") for v in query]
        composed = str(uri).encode("utf-8")
    except (CoapError, UnicodeDecodeError) as exc:
        raise OscoreDecodeError(f"cannot recompose Proxy-Uri: {exc}") from exc
    if not uri.path and not uri.query:
        composed = composed[:-1]
    kept = [
        item
        for item in items
        if item[0] not in (OptionNumber.URI_PATH, OptionNumber.URI_QUERY, _PROXY_URI)
    ]
    return sorted([*kept, (int(_PROXY_URI), composed)], key=_number)


_number = itemgetter(0)


def merge(protected: Message, plaintext: bytes) -> Message:
    """Rebuild the message from the outer part of ``protected`` and the decrypted plaintext."""
    return unwrap(protected, plaintext)[0]


def unwrap(protected: Message, plaintext: bytes) -> tuple[Message, bool]:
    """:func:`merge`, and whether the result is an Observe registration (a request whose
    Observe is 0), found on the way instead of by searching the options again."""
    if not plaintext:
        raise OscoreDecodeError("empty plaintext")
    try:
        items, payload = decode_option_items(plaintext, 1)
    except CoapError as exc:
        raise OscoreDecodeError(f"malformed inner message: {exc}") from exc
    outer_only = _OUTER_ONLY
    inner_observe: bytes | None = None
    strip = False
    for number, value in items:
        is_outer = outer_only.get(number)
        if is_outer is None:
            is_outer = _is_outer_only(number)
        if is_outer:
            strip = True  # a class U option inside: not ours to deliver, dropped
        elif number == _OBSERVE and inner_observe is None:
            inner_observe = value
    if strip:
        items = [item for item in items if not _is_outer_only(item[0])]
    is_response = plaintext[0] >= 64
    outer: list[tuple[int, bytes]] = []
    outer_observe: list[tuple[int, bytes]] = []
    proxy = False
    for item in protected.options._items:
        number = item[0]
        if number == _OSCORE:
            continue
        is_outer = outer_only.get(number)
        if is_outer is None:
            is_outer = _is_outer_only(number)
        if is_outer:
            outer.append(item)
            proxy = proxy or number == _PROXY_URI
        elif number == _OBSERVE:
            outer_observe.append(item)
    # Observe: the inner option says whether this is an observation (RFC 8613 §4.1.3.5);
    # a notification's value travels outer (its inner one is empty), so a response takes
    # the outer value when there is one, a request keeps its inner value
    if inner_observe is not None and is_response and outer_observe:
        items = [item for item in items if item[0] != _OBSERVE]
        outer += outer_observe
    if outer:
        if not items or outer[-1][0] < items[0][0]:
            items = outer + items  # the usual request: Uri-Host/Port before everything inner
        else:  # numbers interleave; a stable sort keeps value order (inner first on ties)
            items = sorted(items + outer, key=_number)
        if proxy and not is_response:
            items = _recompose_proxy_uri(items)
    message = Message(
        CODE_TABLE[plaintext[0]],
        protected.mtype,
        protected.mid,
        protected.token,
        Options._from_sorted(items),
        payload,
        protected.remote,
    )
    registration = inner_observe is not None and not is_response and not any(inner_observe)
    return message, registration


def assemble(
    original: Message, outer: Options, outer_code: int, option_value: bytes, payload: bytes
) -> Message:
    """The protected message: header fields of ``original``, outer options plus OSCORE."""
    items = outer._items
    if not items or items[-1][0] <= _OSCORE_NUMBER:
        items.append((_OSCORE_NUMBER, option_value))
    else:
        outer.add(_OSCORE, option_value)
    return Message(
        outer_code, original.mtype, original.mid, original.token, outer, payload, original.remote
    )
