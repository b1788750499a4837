"""What the sans-I/O Group Manager hands back to its edge: responses, notifications, errors.

Kept apart from :mod:`grouposcore.manager.core` so that the resource handlers, the rekeying
code and the proof-of-possession code can build answers without importing the manager.
"""

from __future__ import annotations

from dataclasses import dataclass

from grouposcore.errors import GroupManagerRequestError
from grouposcore.manager.params import (
    CF_PROBLEM_DETAILS,
    Code,
    ErrorId,
    encode_problem_details,
)

__all__ = [
    "GmResponse",
    "Notification",
    "error_response",
    "eviction_notice",
    "forbidden",
    "only_members",
    "reject",
]


@dataclass(frozen=True)
class Notification:
    """Something the edge must deliver to ``node``: an Observe notification on ``path``.

    Rekeying messages go out as 2.05 notifications of /ace-group/GROUPNAME (or are picked up by
    polling); an eviction as an unsolicited 4.04 on /ace-group/GROUPNAME/nodes/NODENAME.
    """

    node: str
    group: str
    path: tuple[str, ...]
    code: int
    payload: bytes
    content_format: int | None


@dataclass(frozen=True)
class GmResponse:
    """The answer to one request, plus the notifications that request caused."""

    code: int
    payload: bytes = b""
    content_format: int | None = None
    location_path: tuple[str, ...] = ()
    observable: bool = False
    notifications: tuple[Notification, ...] = ()
    #: seconds after which a refused request may be sent again (CoAP Max-Age of a 5.03)
    max_age: int | None = None


def reject(
    detail: str, error_id: int | None = None, code: int = Code.BAD_REQUEST
) -> GroupManagerRequestError:
    """A client error (4.00 by default), with an 'ace-groupcomm-error' id when one applies."""
    return GroupManagerRequestError(detail, code=code, error_id=error_id)


def forbidden(detail: str, error_id: int | None = None) -> GroupManagerRequestError:
    """4.03."""
    return GroupManagerRequestError(detail, code=Code.FORBIDDEN, error_id=error_id)


def only_members() -> GroupManagerRequestError:
    """4.03 with error-id 0: the operation is for group members."""
    return forbidden("operation permitted only to group members", ErrorId.ONLY_MEMBERS)


def error_response(e: GroupManagerRequestError) -> GmResponse:
    """The wire form of an error: problem details whenever there is something to say."""
    if e.error_id is None and e.code != Code.BAD_REQUEST:
        return GmResponse(e.code, str(e).encode()[:200])
    return GmResponse(e.code, encode_problem_details(e.error_id, str(e)), CF_PROBLEM_DETAILS)


def eviction_notice(group: str, node: str) -> Notification:
    """The unsolicited 4.04 (error-id 5) that ends ``node``'s observation of its node resource."""
    return Notification(
        node,
        group,
        ("ace-group", group, "nodes", node),
        Code.NOT_FOUND,
        encode_problem_details(ErrorId.MEMBERSHIP_TERMINATED, "membership terminated"),
        CF_PROBLEM_DETAILS,
    )
