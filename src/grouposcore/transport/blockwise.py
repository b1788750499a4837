"""Block-wise transfers (RFC 7959, RFC 9175 Request-Tag) as sans-I/O planners.

The endpoint runs these on plain (unprotected) messages, above the security hook, so under
OSCORE each block is protected on its own: that is the "inner" block-wise of RFC 8613 §4.1.3.4.

Client side: :class:`Block1Sender` slices a large request body and follows 2.31 Continue
(adapting to a smaller block size the server asks for); :class:`Block2Collector` follows a
response's Block2 and reassembles it, checking block offsets and ETags.

Server side: :class:`Block1Assembler` reassembles bodies per (peer, resource, Request-Tag),
answering 4.08 for gaps and 4.13 (with Size1) over the limit; :class:`Block2Server` slices
large responses, honours the size a client asks for early, and keeps the whole
representation for a while so every block of one transfer comes from the same version.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Hashable
from dataclasses import dataclass, field

from grouposcore.coap import BlockOption, Code, Message, OptionNumber
from grouposcore.errors import BlockwiseError, OptionValueError, ResponseTooLarge

__all__ = [
    "Block1Assembler",
    "Block1Result",
    "Block1Sender",
    "Block2Collector",
    "Block2Server",
    "BlockwiseLimits",
    "body_key",
    "size_to_szx",
]

_N = OptionNumber
#: Options that describe the transfer rather than the request, so they are not part of
#: the key that ties the blocks of one body together.
_TRANSFER_OPTIONS = frozenset(
    (_N.BLOCK1, _N.BLOCK2, _N.SIZE1, _N.SIZE2, _N.OBSERVE, _N.ECHO, _N.OSCORE, _N.NO_RESPONSE)
)


@dataclass(frozen=True)
class BlockwiseLimits:
    """Block-wise settings of one endpoint."""

    #: Preferred block size exponent (6: 1024 bytes, the largest RFC 7959 allows).
    szx: int = 6
    #: Largest request body a server reassembles (larger: 4.13) and largest response body
    #: a client reassembles (larger: :class:`ResponseTooLarge`).
    max_body: int = 1 << 20
    #: How long a partial request body or a sliced representation is kept (seconds).
    lifetime: float = 60.0
    #: At most this many partial bodies / cached representations at once (oldest dropped).
    max_entries: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.szx <= 6 or self.max_body < 0 or self.max_entries < 1:
            raise ValueError("szx 0..6, max_body >= 0, max_entries >= 1")

    @property
    def block_size(self) -> int:
        return 16 << self.szx


def size_to_szx(size: int) -> int:
    """The SZX of a block size (a power of two 16..1024)."""
    return BlockOption.from_size(0, False, size).szx


def body_key(request: Message, origin: Hashable, *, with_tag: bool = True) -> Hashable:
    """What identifies one request body (or one representation) across its blocks.

    ``origin`` names the peer and its security association; the rest is the method and every
    option except the transfer-related ones, so Uri-Path, Uri-Query, Accept and (for bodies)
    Request-Tag all separate transfers.
    """
    opts = tuple(
        (n, v)
        for n, v in request.options
        if n not in _TRANSFER_OPTIONS and (with_tag or n != _N.REQUEST_TAG)
    )
    return (origin, request.code, opts)


def _response(code: int, **opts: object) -> Message:
    msg = Message(code)
    for name, value in opts.items():
        setattr(msg.options, name, value)
    return msg


# --- client side ----------------------------------------------------------------------


class Block1Sender:
    """Plans the Block1 requests for one request body larger than a block."""

    def __init__(self, request: Message, szx: int, request_tag: bytes | None = None) -> None:
        self._request = request
        self._body = request.payload
        self._szx = szx
        self._tag = request_tag
        self._offset = 0
        self._last: BlockOption | None = None

    @staticmethod
    def needed(request: Message, szx: int) -> bool:
        return len(request.payload) > 16 << szx

    def first(self) -> Message:
        return self._block(self._offset, include_size=True)

    def _block(self, offset: int, include_size: bool = False) -> Message:
        size = 16 << self._szx
        chunk = self._body[offset : offset + size]
        more = offset + size < len(self._body)
        if offset % size:
            raise BlockwiseError("block offset is not a multiple of the block size")
        block = BlockOption(offset // size, more, self._szx)
        msg = self._request.copy(payload=chunk)
        msg.options.block1 = block
        msg.options.remove(_N.BLOCK2)
        if include_size:
            msg.options.size1 = len(self._body)
        if self._tag is not None:
            msg.options.request_tag = self._tag
        self._last = block
        return msg

    def next(self, response: Message) -> Message | None:
        """The next block to send after ``response``, or ``None`` if it is the final answer."""
        last = self._last
        if last is None:
            raise BlockwiseError("next() before first()")
        if response.code != Code.CONTINUE:
            return None  # the final response (success or error) to the whole body
        if not last.more:
            raise BlockwiseError("2.31 Continue to the last block")
        try:
            echoed = response.options.block1
        except OptionValueError as e:
            raise BlockwiseError(f"malformed Block1 in 2.31: {e}") from None
        if echoed is None or echoed.num != last.num:
            raise BlockwiseError("2.31 Continue does not acknowledge the block that was sent")
        if echoed.szx > last.szx:
            raise BlockwiseError("server asked for a larger block size")
        self._offset += last.size
        self._szx = echoed.szx  # the server may ask for smaller blocks (RFC 7959 §2.5)
        return self._block(self._offset)


class Block2Collector:
    """Follows a Block2 response and reassembles its body."""

    def __init__(self, request: Message, max_body: int) -> None:
        self._request = request
        self._max = max_body
        self._buf = bytearray()
        self._etag: bytes | None = None
        self._first: Message | None = None
        self._last: Message | None = None

    @staticmethod
    def continues(response: Message) -> bool:
        """Whether ``response`` is the first block of a larger body."""
        try:
            b2 = response.options.block2
        except OptionValueError:
            return False
        return b2 is not None and b2.more and response.code != Code.CONTINUE

    def feed(self, response: Message) -> Message | None:
        """Take one block; returns the request for the next block or ``None`` when complete."""
        try:
            b2 = response.options.block2
        except OptionValueError as e:
            raise BlockwiseError(f"malformed Block2: {e}") from None
        if b2 is None:
            if self._first is None:
                self._first = response
                self._buf[:] = response.payload
                self._last = response
                return None
            raise BlockwiseError(f"block-wise transfer interrupted by {response!r}")
        if self._first is not None and response.code != self._first.code:
            raise BlockwiseError(f"block-wise transfer interrupted by {response!r}")
        if b2.offset != len(self._buf):
            raise BlockwiseError(f"got block at offset {b2.offset}, expected {len(self._buf)}")
        if b2.more and len(response.payload) != b2.size:
            raise BlockwiseError("non-final block whose payload is not exactly one block")
        etag = response.options.etag
        if self._first is None:
            self._first = response
            self._etag = etag
        elif etag != self._etag:
            raise BlockwiseError("representation changed during a block-wise transfer (ETag)")
        size2 = response.options.size2
        if size2 is not None and size2 > self._max:
            raise ResponseTooLarge(f"response of {size2} bytes exceeds {self._max}")
        self._buf += response.payload
        if len(self._buf) > self._max:
            raise ResponseTooLarge(f"response body exceeds {self._max} bytes")
        self._last = response
        if not b2.more:
            return None
        nxt = self._request.copy()
        opts = nxt.options
        for n in (_N.BLOCK1, _N.SIZE1, _N.OBSERVE, _N.REQUEST_TAG):
            opts.remove(n)
        opts.block2 = BlockOption(b2.num + 1, False, b2.szx)
        if nxt.code != Code.FETCH:
            nxt.payload = b""  # RFC 7959 §2.7: later blocks are asked for without the body
        return nxt

    def result(self) -> Message:
        """The whole response: the last block's message with the full body, Block2 removed."""
        last, first = self._last, self._first
        if last is None or first is None:
            raise BlockwiseError("result() before the first block")
        opts = last.options.copy()
        opts.remove(_N.BLOCK2)
        # Observe is in the first block only (RFC 7959 §3.4); keep it for the caller.
        obs = first.options.observe
        if obs is not None:
            opts.observe = obs
        # dataclasses.replace keeps a security layer's Message subclass and its extra fields.
        return dataclasses.replace(last, options=opts, payload=bytes(self._buf))


# --- server side ----------------------------------------------------------------------


@dataclass
class Block1Result:
    """What :meth:`Block1Assembler.feed` decided."""

    #: The whole request, ready for the resource (``None`` while blocks are missing).
    complete: Message | None = None
    #: An answer to send now instead (2.31, 4.00, 4.08, 4.13).
    response: Message | None = None
    #: Block1 to echo in the final response (``None`` if the request was not block-wise).
    final_block: BlockOption | None = None


@dataclass
class _Partial:
    buf: bytearray
    expires: float
    szx: int = field(default=6)


class Block1Assembler:
    """Reassembles Block1 request bodies on the server."""

    def __init__(self, limits: BlockwiseLimits) -> None:
        self.limits = limits
        self._partial: dict[Hashable, _Partial] = {}

    def feed(self, request: Message, origin: Hashable, now: float) -> Block1Result:
        try:
            b1 = request.options.block1
            size1 = request.options.size1
        except OptionValueError:
            return Block1Result(response=_response(Code.BAD_OPTION))
        if b1 is None:
            return Block1Result(complete=request)
        self._expire(now)
        limit = self.limits.max_body
        key = body_key(request, origin)
        if size1 is not None and size1 > limit:
            self._partial.pop(key, None)
            return Block1Result(response=_response(Code.REQUEST_ENTITY_TOO_LARGE, size1=limit))
        payload = request.payload
        if (b1.more and len(payload) != b1.size) or len(payload) > b1.size:
            return Block1Result(response=_response(Code.BAD_REQUEST))
        part: _Partial | None
        if b1.num == 0:
            part = _Partial(bytearray(), now + self.limits.lifetime, b1.szx)
            self._partial.pop(key, None)
        else:
            part = self._partial.get(key)
            if part is None or b1.offset != len(part.buf):
                return Block1Result(response=_response(Code.REQUEST_ENTITY_INCOMPLETE))
        if len(part.buf) + len(payload) > limit:
            self._partial.pop(key, None)
            return Block1Result(response=_response(Code.REQUEST_ENTITY_TOO_LARGE, size1=limit))
        part.buf += payload
        part.expires = now + self.limits.lifetime
        if b1.more:
            self._partial[key] = part
            self._trim()
            szx = min(b1.szx, self.limits.szx)
            return Block1Result(
                response=_response(Code.CONTINUE, block1=BlockOption(b1.num, True, szx))
            )
        self._partial.pop(key, None)
        opts = request.options.copy()
        opts.remove(_N.BLOCK1)
        opts.remove(_N.SIZE1)
        whole = dataclasses.replace(request, options=opts, payload=bytes(part.buf))
        return Block1Result(complete=whole, final_block=b1)

    def _expire(self, now: float) -> None:
        for k in [k for k, p in self._partial.items() if p.expires <= now]:
            del self._partial[k]

    def _trim(self) -> None:
        while len(self._partial) > self.limits.max_entries:
            del self._partial[next(iter(self._partial))]

    def pending(self) -> int:
        return len(self._partial)


@dataclass
class _Representation:
    response: Message
    expires: float


class Block2Server:
    """Serves large responses in Block2 slices on the server."""

    def __init__(self, limits: BlockwiseLimits) -> None:
        self.limits = limits
        self._cache: dict[Hashable, _Representation] = {}

    def cached(self, request: Message, origin: Hashable, now: float) -> Message | None:
        """A later block of a representation served recently, without asking the resource."""
        try:
            b2 = request.options.block2
        except OptionValueError:
            return _response(Code.BAD_OPTION)
        if b2 is None or b2.num == 0:
            return None
        self._expire(now)
        rep = self._cache.get(body_key(request, origin, with_tag=False))
        if rep is None:
            return None
        return self._slice(request, rep.response, b2, origin, now)

    def slice(self, request: Message, response: Message, origin: Hashable, now: float) -> Message:
        """The block of ``response`` the request asks for (the whole response if it fits)."""
        try:
            b2 = request.options.block2
        except OptionValueError:
            return _response(Code.BAD_OPTION)
        if Block2Collector.continues(response) or response.code == Code.CONTINUE:
            return response  # already sliced by the application
        size = self.limits.block_size if b2 is None else min(b2.size, self.limits.block_size)
        if b2 is None and len(response.payload) <= size:
            return response
        if b2 is None:
            b2 = BlockOption(0, False, self.limits.szx)
        if len(response.payload) <= size and b2.num == 0:
            out = response.copy()
            out.options.block2 = BlockOption(0, False, min(b2.szx, self.limits.szx))
            return out
        if response.options.etag is None and 64 <= response.code < 96:
            response = response.copy()
            response.options.etag = hashlib.sha256(response.payload).digest()[:4]
        self._expire(now)
        self._cache[body_key(request, origin, with_tag=False)] = _Representation(
            response, now + self.limits.lifetime
        )
        while len(self._cache) > self.limits.max_entries:
            del self._cache[next(iter(self._cache))]
        return self._slice(request, response, b2, origin, now)

    def _slice(
        self, request: Message, full: Message, b2: BlockOption, origin: Hashable, now: float
    ) -> Message:
        szx = min(b2.szx, self.limits.szx)
        size = 16 << szx
        # A client that asked with a larger size and then a smaller one keeps its offsets.
        offset = b2.num * (16 << b2.szx)
        num = offset // size
        body = full.payload
        if offset >= len(body) and not (offset == 0 and not body):
            return _response(Code.BAD_OPTION)
        chunk = body[offset : offset + size]
        out = full.copy(payload=chunk)
        out.options.block2 = BlockOption(num, offset + size < len(body), szx)
        if num == 0 or request.options.size2 is not None:
            out.options.size2 = len(body)
        if num:
            out.options.remove(_N.OBSERVE)
        return out

    def _expire(self, now: float) -> None:
        for k in [k for k, r in self._cache.items() if r.expires <= now]:
            del self._cache[k]
