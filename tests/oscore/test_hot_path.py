"""What the lean protect/unprotect path (issue 14) must keep: no state from a rejected
response, the Observe registration flag found while unwrapping, value semantics of
ResponseInfo."""

from __future__ import annotations

import pytest

from grouposcore.coap import Code, Message, Type
from grouposcore.errors import ProtectionError
from grouposcore.oscore import ResponseInfo, SecurityContext
from grouposcore.oscore.common import RequestBinding
from grouposcore.oscore.inner import unwrap
from tests.oscore.helpers import Member, content, get

A, B = Member(b"\x0a", "a"), Member(b"\x0b", "b")


def _contexts(mode: str) -> tuple[object, object, dict]:
    if mode == "oscore":
        return (
            SecurityContext(b"s" * 16, b"\x01", b"\x02"),
            SecurityContext(b"s" * 16, b"\x02", b"\x01"),
            {},
        )
    kwargs = {"pairwise_with": B.sid} if mode == "pairwise" else {}
    return A.context([B]), B.context([A]), kwargs


@pytest.mark.parametrize("mode", ["oscore", "group", "pairwise"])
def test_rejected_response_leaves_no_response_tracker(mode: str) -> None:
    client, server, kwargs = _contexts(mode)
    request, binding = client.protect_request(get(), **kwargs)  # type: ignore[attr-defined]
    _, sbinding = server.unprotect_request(request)  # type: ignore[attr-defined]
    response = server.protect_response(content(b"x"), sbinding)  # type: ignore[attr-defined]
    forged = Message(
        response.code,
        response.mtype,
        response.mid,
        response.token,
        response.options,
        response.payload[:-1] + bytes([response.payload[-1] ^ 1]),
    )
    with pytest.raises(ProtectionError):
        client.unprotect_response(forged, binding)  # type: ignore[attr-defined]
    assert binding.trackers is None
    client.unprotect_response(response, binding)  # type: ignore[attr-defined]
    assert binding.trackers is not None and len(binding.trackers) == 1


def test_response_tracker_is_kept_only_by_record() -> None:
    binding = RequestBinding(None, b"\x01", b"\x05", b"")  # type: ignore[arg-type]
    tracker = binding.tracker(b"", b"\x02")
    tracker.check(b"\x07")
    assert binding.trackers is None
    binding.record(b"", b"\x02", tracker, b"\x07")
    assert binding.tracker(b"", b"\x02") is tracker
    with pytest.raises(Exception, match="already received"):
        tracker.check(b"\x07")


def _observe_request(value: bytes | None) -> Message:
    msg = get()
    if value is not None:
        msg.options.set(6, value)
    return msg


@pytest.mark.parametrize(
    ("observe", "registration"),
    [
        (None, False),
        (b"", True),
        (b"\x00", True),
        (b"\x01", False),
        (b"\x00\x01", False),
    ],
)
def test_server_binding_observe_is_the_inner_observe_registration(
    observe: bytes | None, registration: bool
) -> None:
    client, server = A.context([B]), B.context([A])
    request, binding = client.protect_request(_observe_request(observe))
    plain, sbinding = server.unprotect_request(request)
    assert sbinding.observe is registration
    assert binding.observe is registration
    assert plain.options.get(6) == observe


def test_unwrap_reports_no_registration_for_a_notification() -> None:
    notification = Message(code=Code.CONTENT, mtype=Type.NON, mid=1, token=b"\x01")
    notification.options.set(6, b"")
    notification.options.set(9, b"")
    message, registration = unwrap(notification, bytes((Code.CONTENT,)) + b"\x60")
    assert registration is False
    assert message.options.get(6) == b""


def test_response_info_compares_by_value_and_is_immutable() -> None:
    info = ResponseInfo(b"\x0b", True, None)
    assert info == ResponseInfo(sender_id=b"\x0b", group_mode=True, piv=None)
    assert (info.sender_id, info.group_mode, info.piv) == (b"\x0b", True, None)
    with pytest.raises(AttributeError):
        info.piv = b"\x01"  # type: ignore[misc]


def test_group_module_keeps_its_public_names_after_the_split() -> None:
    from grouposcore.oscore import group, group_base
    from grouposcore.oscore.freshness import check_freshness_policy

    for name in (
        "GroupContext",
        "RecipientContext",
        "CredentialProvider",
        "FreshnessPolicy",
        "FRESHNESS_POLICIES",
        "INSECURE_ACCEPT_REPLAYS",
        "check_freshness_policy",
    ):
        assert hasattr(group, name)
    assert issubclass(group.GroupContext, group_base.GroupContextBase)
    assert check_freshness_policy("drop") == "drop"
    with pytest.raises(Exception, match="unknown freshness policy"):
        check_freshness_policy("sometimes")


def test_recipient_context_keeps_under_1kib_of_python_heap() -> None:
    """Issue 14 target 4: a member keeps one Recipient Context per other member."""
    import gc
    import tracemalloc

    from grouposcore.cose import EDDSA, Credential

    n = 200
    creds = [
        Credential.build_ccs(EDDSA.generate_private_key().public_key(), -8, f"m{i}").raw
        for i in range(n)
    ]
    ctx = A.context([], max_recipients=n + 1)
    ctx.add_recipient(b"\xff", creds[0])  # one-time set-up outside the measurement
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            ctx.add_recipient(i.to_bytes(2, "big"), creds[i])
        gc.collect()
        per_recipient = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert per_recipient <= 1024, per_recipient
