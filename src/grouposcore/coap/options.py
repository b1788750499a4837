"""CoAP options: registry, number-bit rules, value formats and the ordered option container.

Values are stored as raw bytes exactly as they appear on the wire, so decoding a message
and encoding it again is byte-identical and OSCORE can move options between the inner
and outer message without reinterpreting them. Typed accessors convert on demand.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum, IntEnum
from operator import itemgetter
from typing import Any, Generic, TypeVar, overload

from grouposcore.errors import OptionValueError

__all__ = [
    "MAX_OPTION_NUMBER",
    "MAX_OPTION_VALUE_LENGTH",
    "BlockOption",
    "OptionDef",
    "OptionFormat",
    "OptionNumber",
    "OptionValue",
    "Options",
    "OscoreClass",
    "decode_uint",
    "encode_uint",
    "format_option_value",
    "is_critical",
    "is_no_cache_key",
    "is_unsafe",
    "option_def",
    "registered_options",
]

#: Option numbers are 16-bit (RFC 7252 §12.2).
MAX_OPTION_NUMBER = 0xFFFF
#: Longest value the 14-extension of the length nibble can express: 65535 + 269.
MAX_OPTION_VALUE_LENGTH = 0xFFFF + 269

OptionValue = bytes | bytearray | memoryview | int | str


class OptionNumber(IntEnum):
    """Registered option numbers this implementation knows by name."""

    IF_MATCH = 1
    URI_HOST = 3
    ETAG = 4
    IF_NONE_MATCH = 5
    OBSERVE = 6
    URI_PORT = 7
    LOCATION_PATH = 8
    OSCORE = 9
    URI_PATH = 11
    CONTENT_FORMAT = 12
    MAX_AGE = 14
    URI_QUERY = 15
    HOP_LIMIT = 16
    ACCEPT = 17
    Q_BLOCK1 = 19
    LOCATION_QUERY = 20
    EDHOC = 21
    BLOCK2 = 23
    BLOCK1 = 27
    SIZE2 = 28
    Q_BLOCK2 = 31
    PROXY_URI = 35
    PROXY_SCHEME = 39
    SIZE1 = 60
    ECHO = 252
    NO_RESPONSE = 258
    REQUEST_TAG = 292


class OptionFormat(Enum):
    """Value formats of RFC 7252 §3.2."""

    EMPTY = "empty"
    OPAQUE = "opaque"
    UINT = "uint"
    STRING = "string"


class OscoreClass(Enum):
    """Where OSCORE puts an option (RFC 8613 §4.1): inner (E), outer (U), or both (EU)."""

    E = "E"
    U = "U"
    EU = "EU"


@dataclass(frozen=True)
class OptionDef:
    """Registry entry of one option number."""

    number: int
    name: str
    format: OptionFormat
    repeatable: bool
    min_len: int
    max_len: int
    oscore_class: OscoreClass

    @property
    def critical(self) -> bool:
        return is_critical(self.number)

    @property
    def unsafe(self) -> bool:
        return is_unsafe(self.number)

    @property
    def no_cache_key(self) -> bool:
        return is_no_cache_key(self.number)


_E, _U, _EU = OscoreClass.E, OscoreClass.U, OscoreClass.EU
_EMPTY, _OPAQUE = OptionFormat.EMPTY, OptionFormat.OPAQUE
_UINT, _STRING = OptionFormat.UINT, OptionFormat.STRING
_N = OptionNumber

# (number, name, format, repeatable, min_len, max_len, OSCORE class); lengths from RFC 7252
# §5.10, RFC 7641 (Observe), RFC 7959 (Block), RFC 7967 (No-Response), RFC 8613 (OSCORE),
# RFC 8768 (Hop-Limit), RFC 9175 (Echo, Request-Tag), RFC 9177 (Q-Block), RFC 9668 (EDHOC).
_REGISTRY_ROWS: tuple[tuple[int, str, OptionFormat, bool, int, int, OscoreClass], ...] = (
    (_N.IF_MATCH, "If-Match", _OPAQUE, True, 0, 8, _E),
    (_N.URI_HOST, "Uri-Host", _STRING, False, 1, 255, _U),
    (_N.ETAG, "ETag", _OPAQUE, True, 1, 8, _E),
    (_N.IF_NONE_MATCH, "If-None-Match", _EMPTY, False, 0, 0, _E),
    (_N.OBSERVE, "Observe", _UINT, False, 0, 3, _EU),
    (_N.URI_PORT, "Uri-Port", _UINT, False, 0, 2, _U),
    (_N.LOCATION_PATH, "Location-Path", _STRING, True, 0, 255, _E),
    (_N.OSCORE, "OSCORE", _OPAQUE, False, 0, 255, _U),
    (_N.URI_PATH, "Uri-Path", _STRING, True, 0, 255, _E),
    (_N.CONTENT_FORMAT, "Content-Format", _UINT, False, 0, 2, _E),
    (_N.MAX_AGE, "Max-Age", _UINT, False, 0, 4, _EU),
    (_N.URI_QUERY, "Uri-Query", _STRING, True, 0, 255, _E),
    (_N.HOP_LIMIT, "Hop-Limit", _UINT, False, 1, 1, _U),
    (_N.ACCEPT, "Accept", _UINT, False, 0, 2, _E),
    (_N.Q_BLOCK1, "Q-Block1", _UINT, False, 0, 3, _EU),
    (_N.LOCATION_QUERY, "Location-Query", _STRING, True, 0, 255, _E),
    (_N.EDHOC, "EDHOC", _EMPTY, False, 0, 0, _U),
    (_N.BLOCK2, "Block2", _UINT, False, 0, 3, _EU),
    (_N.BLOCK1, "Block1", _UINT, False, 0, 3, _EU),
    (_N.SIZE2, "Size2", _UINT, False, 0, 4, _EU),
    (_N.Q_BLOCK2, "Q-Block2", _UINT, True, 0, 3, _EU),
    (_N.PROXY_URI, "Proxy-Uri", _STRING, False, 1, 1034, _U),
    (_N.PROXY_SCHEME, "Proxy-Scheme", _STRING, False, 1, 255, _U),
    (_N.SIZE1, "Size1", _UINT, False, 0, 4, _EU),
    (_N.ECHO, "Echo", _OPAQUE, False, 1, 40, _EU),
    (_N.NO_RESPONSE, "No-Response", _UINT, False, 0, 1, _EU),
    (_N.REQUEST_TAG, "Request-Tag", _OPAQUE, True, 0, 8, _EU),
)

_REGISTRY: dict[int, OptionDef] = {
    int(row[0]): OptionDef(int(row[0]), *row[1:]) for row in _REGISTRY_ROWS
}


def registered_options() -> dict[int, OptionDef]:
    """A copy of the registry: every option number this implementation recognizes."""
    return dict(_REGISTRY)


def option_def(number: int) -> OptionDef:
    """Registry entry for ``number``; unknown numbers get a permissive synthesized entry.

    Unknown options are class E for OSCORE (RFC 8613 §4.1: protect what you do not know).
    """
    d = _REGISTRY.get(number)
    if d is None:
        d = OptionDef(number, f"Option{number}", _OPAQUE, True, 0, MAX_OPTION_VALUE_LENGTH, _E)
    return d


def is_critical(number: int) -> bool:
    """Odd numbers are critical (RFC 7252 §5.4.6)."""
    return bool(number & 1)


def is_unsafe(number: int) -> bool:
    """Bit 1 set: a proxy must not forward the option without understanding it."""
    return bool(number & 2)


def is_no_cache_key(number: int) -> bool:
    """Bits 1-4 equal to 0b1110: the option is not part of the cache key (safe options only)."""
    return (number & 0x1E) == 0x1C


# Small uints (the vast majority: content formats, ports, observe counters) come from a
# table instead of int.to_bytes.
_SMALL_UINT: tuple[bytes, ...] = (b"", *(bytes((i,)) for i in range(1, 256)))


def encode_uint(value: int) -> bytes:
    """Minimal big-endian encoding of a non-negative integer; 0 is the empty string."""
    if 0 <= value < 256:
        return _SMALL_UINT[value]
    if value < 0:
        raise OptionValueError(f"uint option value must be non-negative, got {value}")
    return value.to_bytes((value.bit_length() + 7) >> 3, "big")


def decode_uint(data: bytes) -> int:
    """Big-endian integer; leading zero bytes are tolerated as RFC 7252 §3.2 requires."""
    return int.from_bytes(data, "big")


_BLOCK_SIZES = {16 << i: i for i in range(7)}


@dataclass(frozen=True)
class BlockOption:
    """Value of Block1/Block2 (RFC 7959 §2.2): block number, More flag, size exponent."""

    num: int
    more: bool
    szx: int

    def __post_init__(self) -> None:
        if not 0 <= self.num < 1 << 20:
            raise OptionValueError(f"block number {self.num} out of range 0..2**20-1")
        if not 0 <= self.szx <= 6:
            raise OptionValueError(f"block SZX {self.szx} out of range 0..6 (7 is reserved)")

    @property
    def size(self) -> int:
        return 1 << (self.szx + 4)

    @property
    def offset(self) -> int:
        """Byte offset of this block in the whole body."""
        return self.num << (self.szx + 4)

    def encode(self) -> bytes:
        return encode_uint(self.num << 4 | (8 if self.more else 0) | self.szx)

    @classmethod
    def decode(cls, data: bytes) -> BlockOption:
        if len(data) > 3:
            raise OptionValueError(f"block option value of {len(data)} bytes (at most 3)")
        v = int.from_bytes(data, "big")
        if v & 7 == 7:
            raise OptionValueError("block option with reserved SZX 7")
        return cls(v >> 4, bool(v & 8), v & 7)

    @classmethod
    def from_size(cls, num: int, more: bool, size: int) -> BlockOption:
        szx = _BLOCK_SIZES.get(size)
        if szx is None:
            raise OptionValueError(f"block size {size} is not a power of two in 16..1024")
        return cls(num, more, szx)

    def __str__(self) -> str:
        return f"{self.num}/{int(self.more)}/{self.size}"


def _to_bytes(value: OptionValue) -> bytes:
    """Normalize an option value given by an application to its wire bytes."""
    t = type(value)
    if t is bytes:
        return value  # type: ignore[return-value]
    if t is str:
        return value.encode("utf-8")  # type: ignore[union-attr]
    if isinstance(value, int):
        return encode_uint(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"option value must be bytes, int or str, not {t.__name__}")


def _check_number(number: int) -> None:
    if not 0 <= number <= MAX_OPTION_NUMBER:
        raise OptionValueError(f"option number {number} out of range 0..65535")


def _text(number: int, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise OptionValueError(
            f"{option_def(number).name} value is not valid UTF-8: {value.hex()}"
        ) from None


_key = itemgetter(0)


def format_option_value(number: int, value: bytes) -> str:
    """Readable rendering of one value for logs and reprs."""
    d = option_def(number)
    if number in (_N.BLOCK1, _N.BLOCK2):
        try:
            return str(BlockOption.decode(value))
        except OptionValueError:
            return f"h'{value.hex()}'"
    if d.format is _UINT:
        return str(decode_uint(value))
    if d.format is _STRING:
        try:
            return repr(value.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    if d.format is _EMPTY and not value:
        return ""
    return f"h'{value.hex()}'"


_T = TypeVar("_T")


class _Accessor(Generic[_T]):
    """A typed attribute of :class:`Options` for one option number (a property whose
    getter and setter are shared helpers that take the number)."""

    __slots__ = ("getter", "number", "setter")

    def __init__(
        self, number: int, getter: Callable[[Any, int], _T], setter: Callable[[Any, int, Any], None]
    ) -> None:
        self.number = number
        self.getter = getter
        self.setter = setter

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Accessor[_T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> _T | _Accessor[_T]:
        if obj is None:
            return self
        return self.getter(obj, self.number)

    def __set__(self, obj: object, value: _T) -> None:
        self.setter(obj, self.number, value)


class Options:
    """Ordered multi-map option number -> raw values, kept in wire order.

    Internally a list of ``(number, value)`` tuples sorted by number (stable for equal
    numbers), so encoding walks it directly and appending in ascending order, the common
    case, is O(1).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[int, OptionValue]] | None = None) -> None:
        self._items: list[tuple[int, bytes]] = []
        if items is not None:
            for number, value in items:
                self.add(number, value)

    @classmethod
    def _from_sorted(cls, items: list[tuple[int, bytes]]) -> Options:
        """Adopt a list already in wire order (used by the decoder; no checks, no copy)."""
        o = cls.__new__(cls)
        o._items = items
        return o

    # --- generic access ---------------------------------------------------------------

    def add(self, number: int, value: OptionValue) -> None:
        """Append a value after any existing values of the same number."""
        _check_number(number)
        value = _to_bytes(value)
        items = self._items
        if not items or items[-1][0] <= number:
            items.append((number, value))
        else:
            items.insert(bisect_right(items, number, key=_key), (number, value))

    def set(self, number: int, value: OptionValue) -> None:
        """Replace all values of ``number`` with the single ``value``."""
        self.set_all(number, (value,))

    def set_all(self, number: int, values: Iterable[OptionValue]) -> None:
        """Replace all values of ``number`` with ``values`` (empty removes the option)."""
        _check_number(number)
        new = [(number, _to_bytes(v)) for v in values]
        items = self._items
        lo = bisect_left(items, number, key=_key)
        hi = lo
        n = len(items)
        while hi < n and items[hi][0] == number:
            hi += 1
        items[lo:hi] = new

    def get(self, number: int, default: bytes | None = None) -> bytes | None:
        """First value of ``number``, or ``default``."""
        items = self._items
        i = bisect_left(items, number, key=_key)
        if i < len(items) and items[i][0] == number:
            return items[i][1]
        return default

    def get_all(self, number: int) -> list[bytes]:
        items = self._items
        i = bisect_left(items, number, key=_key)
        out = []
        n = len(items)
        while i < n and items[i][0] == number:
            out.append(items[i][1])
            i += 1
        return out

    def remove(self, number: int) -> None:
        """Drop every value of ``number``; absent numbers are fine."""
        items = self._items
        lo = bisect_left(items, number, key=_key)
        hi = lo
        n = len(items)
        while hi < n and items[hi][0] == number:
            hi += 1
        if hi > lo:
            del items[lo:hi]

    def numbers(self) -> list[int]:
        """Distinct option numbers present, ascending."""
        out: list[int] = []
        for number, _ in self._items:
            if not out or out[-1] != number:
                out.append(number)
        return out

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        items = self._items
        i = bisect_left(items, number, key=_key)
        return i < len(items) and items[i][0] == number

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def copy(self) -> Options:
        return Options._from_sorted(self._items.copy())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Options):
            return self._items == other._items
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = [f"{option_def(n).name}={format_option_value(n, v)}" for n, v in self._items]
        return f"Options({', '.join(parts)})"

    # --- typed helpers ----------------------------------------------------------------

    def _get_str(self, number: int) -> str | None:
        v = self.get(number)
        return None if v is None else _text(number, v)

    def _set_opt(self, number: int, value: OptionValue | None) -> None:
        if value is None:
            self.remove(number)
        else:
            self.set(number, value)

    def _get_uint(self, number: int) -> int | None:
        v = self.get(number)
        return None if v is None else int.from_bytes(v, "big")

    def _get_strs(self, number: int) -> list[str]:
        return [_text(number, v) for v in self.get_all(number)]

    def _set_strs(self, number: int, values: Iterable[str] | None) -> None:
        if isinstance(values, (str, bytes)):
            raise TypeError("expected a list of segments, not a single string")
        self.set_all(number, values or ())

    def _get_block(self, number: int) -> BlockOption | None:
        v = self.get(number)
        return None if v is None else BlockOption.decode(v)

    def _set_block(self, number: int, value: BlockOption | None) -> None:
        if value is None:
            self.remove(number)
        else:
            self.set(number, value.encode())

    def _get_bytes(self, number: int) -> bytes | None:
        return self.get(number)

    def _get_bytes_list(self, number: int) -> list[bytes]:
        return self.get_all(number)

    def _set_bytes_list(self, number: int, values: Iterable[bytes] | None) -> None:
        self.set_all(number, values or ())

    # --- typed properties -------------------------------------------------------------
    # One accessor per option, built from the helpers above: reading gives the decoded
    # value (None / [] when absent), assigning None (or an empty list) removes the option.

    uri_host = _Accessor[str | None](_N.URI_HOST, _get_str, _set_opt)
    uri_port = _Accessor[int | None](_N.URI_PORT, _get_uint, _set_opt)
    uri_path = _Accessor[list[str]](_N.URI_PATH, _get_strs, _set_strs)
    uri_query = _Accessor[list[str]](_N.URI_QUERY, _get_strs, _set_strs)
    location_path = _Accessor[list[str]](_N.LOCATION_PATH, _get_strs, _set_strs)
    location_query = _Accessor[list[str]](_N.LOCATION_QUERY, _get_strs, _set_strs)
    content_format = _Accessor[int | None](_N.CONTENT_FORMAT, _get_uint, _set_opt)
    accept = _Accessor[int | None](_N.ACCEPT, _get_uint, _set_opt)
    max_age = _Accessor[int | None](_N.MAX_AGE, _get_uint, _set_opt)
    observe = _Accessor[int | None](_N.OBSERVE, _get_uint, _set_opt)
    etag = _Accessor[bytes | None](_N.ETAG, _get_bytes, _set_opt)
    block1 = _Accessor[BlockOption | None](_N.BLOCK1, _get_block, _set_block)
    block2 = _Accessor[BlockOption | None](_N.BLOCK2, _get_block, _set_block)
    size1 = _Accessor[int | None](_N.SIZE1, _get_uint, _set_opt)
    size2 = _Accessor[int | None](_N.SIZE2, _get_uint, _set_opt)
    echo = _Accessor[bytes | None](_N.ECHO, _get_bytes, _set_opt)
    request_tag = _Accessor[bytes | None](_N.REQUEST_TAG, _get_bytes, _set_opt)
    oscore = _Accessor[bytes | None](_N.OSCORE, _get_bytes, _set_opt)
    no_response = _Accessor[int | None](_N.NO_RESPONSE, _get_uint, _set_opt)
    proxy_uri = _Accessor[str | None](_N.PROXY_URI, _get_str, _set_opt)
    proxy_scheme = _Accessor[str | None](_N.PROXY_SCHEME, _get_str, _set_opt)
    if_match = _Accessor[list[bytes]](_N.IF_MATCH, _get_bytes_list, _set_bytes_list)

    @property
    def if_none_match(self) -> bool:
        return _N.IF_NONE_MATCH in self

    @if_none_match.setter
    def if_none_match(self, value: bool) -> None:
        if value:
            self.set(_N.IF_NONE_MATCH, b"")
        else:
            self.remove(_N.IF_NONE_MATCH)
