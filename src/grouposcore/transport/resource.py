"""Server resources: the ``Site`` tree, ``Resource`` handlers and CoRE Link Format (RFC 6690).

A resource answers with plain messages; the endpoint takes care of message types, tokens,
block-wise slicing, Observe numbers and protection. Subclasses override :meth:`render`
or one ``render_<method>`` per method they support; anything else gets 4.05.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from grouposcore.coap import Code, Message
from grouposcore.coap.constants import LINK_FORMAT
from grouposcore.transport.observe import NotificationPolicy, ObserveCounter, Observer
from grouposcore.transport.security import Protection

__all__ = ["Resource", "Site", "WellKnownCore", "link_format"]

_METHODS: dict[int, str] = {
    Code.GET: "get",
    Code.POST: "post",
    Code.PUT: "put",
    Code.DELETE: "delete",
    Code.FETCH: "fetch",
    Code.PATCH: "patch",
    Code.IPATCH: "ipatch",
}


class Resource:
    """Base class of everything a :class:`Site` serves.

    Class attributes (or constructor arguments) describe the resource for
    ``/.well-known/core``: ``rt``, ``if_`` (the ``if`` attribute), ``ct``, ``title``;
    ``observable`` enables Observe registrations and :meth:`notify`; ``protection``
    (a :class:`Protection`) makes it a secured resource; ``hidden`` keeps it out of the
    link format listing.
    """

    rt: str | Sequence[str] | None = None
    if_: str | Sequence[str] | None = None
    ct: int | Sequence[int] | None = None
    title: str | None = None
    observable: bool = False
    protection: Protection | None = None
    hidden: bool = False
    notification_policy: NotificationPolicy = NotificationPolicy()

    def __init__(self, **attrs: Any) -> None:
        for name, value in attrs.items():
            if not hasattr(type(self), name) or name.startswith("_"):
                raise TypeError(f"unknown resource attribute {name!r}")
            setattr(self, name, value)

    def _registry(self) -> dict[Any, Observer]:
        # Created on first use, so subclasses that skip super().__init__() still work.
        reg = self.__dict__.get("_observers")
        if reg is None:
            reg = self.__dict__["_observers"] = {}
            self.__dict__["_observe_counter"] = ObserveCounter()
        return reg

    # --- handling ------------------------------------------------------------------------

    async def render(self, request: Message) -> Message:
        """Dispatch to ``render_<method>``; 4.05 Method Not Allowed if there is none."""
        name = _METHODS.get(request.code)
        handler = getattr(self, f"render_{name}", None) if name else None
        if handler is None:
            return Message(Code.METHOD_NOT_ALLOWED)
        result = handler(request)
        if inspect.isawaitable(result):
            result = await result
        response: Message = result
        return response

    def allowed_methods(self) -> list[int]:
        return [c for c, n in _METHODS.items() if hasattr(self, f"render_{n}")]

    # --- Observe -------------------------------------------------------------------------

    @property
    def observers(self) -> list[Observer]:
        return list(self._registry().values())

    def add_observer(self, observer: Observer) -> None:
        self._registry()[observer.key] = observer

    def remove_observer(self, key: Any) -> Observer | None:
        return self._registry().pop(key, None)

    def next_observe_number(self) -> int:
        self._registry()
        counter: ObserveCounter = self.__dict__["_observe_counter"]
        return counter.next()

    def notify(self) -> None:
        """Tell every observer that the state changed: each gets a fresh rendering."""
        for obs in list(self._registry().values()):
            if obs.trigger is not None:
                obs.trigger(obs)

    # --- link format ---------------------------------------------------------------------

    def link_attributes(self) -> list[tuple[str, str | None]]:
        """``(name, value)`` pairs for RFC 6690; value ``None`` is a bare flag like ``obs``."""
        out: list[tuple[str, str | None]] = []
        for name, value in (("rt", self.rt), ("if", self.if_)):
            if value:
                out.append((name, value if isinstance(value, str) else " ".join(value)))
        if self.ct is not None:
            cts = [self.ct] if isinstance(self.ct, int) else list(self.ct)
            out.append(("ct", " ".join(str(c) for c in cts)))
        if self.title:
            out.append(("title", self.title))
        if self.observable:
            out.append(("obs", None))
        if self.protection is not None:
            if self.protection.oscore:
                out.append(("osc", None))
            if self.protection.group:
                out.append(("gosc", None))
        return out


class Site:
    """A resource tree: path tuple → :class:`Resource`, with ``/.well-known/core`` built in."""

    def __init__(self) -> None:
        self._resources: dict[tuple[str, ...], Resource] = {}
        self.add((".well-known", "core"), WellKnownCore(self))

    @staticmethod
    def _path(path: str | Iterable[str]) -> tuple[str, ...]:
        if isinstance(path, str):
            return tuple(s for s in path.strip("/").split("/") if s) if path.strip("/") else ()
        return tuple(path)

    def add(self, path: str | Iterable[str], resource: Resource) -> Resource:
        self._resources[self._path(path)] = resource
        return resource

    def remove(self, path: str | Iterable[str]) -> Resource | None:
        return self._resources.pop(self._path(path), None)

    def lookup(self, path: Iterable[str]) -> Resource | None:
        return self._resources.get(tuple(path))

    def items(self) -> list[tuple[tuple[str, ...], Resource]]:
        return sorted(self._resources.items())


def _href(path: tuple[str, ...]) -> str:
    return "/" + "/".join(quote(seg, safe="!$&'()*+,;=:@") for seg in path)


def _quote_value(name: str, value: str) -> str:
    if name == "ct" and value.isdigit():
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _matches(pattern: str, candidates: list[str]) -> bool:
    if pattern.endswith("*"):
        return any(c.startswith(pattern[:-1]) for c in candidates)
    return pattern in candidates


def link_format(site: Site, query: Sequence[str] = ()) -> str:
    """The CoRE Link Format document of ``site``, filtered by RFC 6690 §4.1 queries.

    A query ``name=value`` keeps links whose attribute ``name`` has ``value`` among its
    space-separated values (``value*`` matches a prefix); ``href`` matches the link target.
    """
    filters: list[tuple[str, str]] = []
    for q in query:
        name, _, value = q.partition("=")
        filters.append((name, value))
    links = []
    for path, res in site.items():
        if res.hidden:
            continue
        attrs = res.link_attributes()
        href = _href(path)
        ok = True
        for name, value in filters:
            if name == "href":
                ok = _matches(value, [href])
            else:
                vals: list[str] = []
                for an, av in attrs:
                    if an == name:
                        vals.extend(av.split() if av is not None else [""])
                ok = bool(vals) and (value == "" or _matches(value, vals))
            if not ok:
                break
        if not ok:
            continue
        parts = [f"<{href}>"]
        for an, av in attrs:
            parts.append(an if av is None else f"{an}={_quote_value(an, av)}")
        links.append(";".join(parts))
    return ",".join(links)


class WellKnownCore(Resource):
    """``/.well-known/core``: the site's links (RFC 6690 §4); not listed itself."""

    hidden = True
    ct = LINK_FORMAT

    def __init__(self, site: Site) -> None:
        super().__init__()
        self._site = site

    async def render_get(self, request: Message) -> Message:
        body = link_format(self._site, request.options.uri_query).encode("utf-8")
        msg = Message(Code.CONTENT, payload=body)
        msg.options.content_format = LINK_FORMAT
        return msg
