"""Sans-I/O tests of the server's request pipeline: one test per decision, on a fake clock.

Requests go in as the message layer delivers them (a ``ServerExchange``); what comes out is
the action the endpoint would carry out. A toy security hook strips or adds the OSCORE
option, so the tests see where bindings lead without any cryptography.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.coap import BlockOption, Code, Message, OptionNumber, Type
from grouposcore.errors import CredentialNotFound, FreshnessRequired, ProtectionError
from grouposcore.transport import Protection, Resource, Site
from grouposcore.transport.blockwise import Block1Sender, BlockwiseLimits
from grouposcore.transport.messagelayer import ServerExchange
from grouposcore.transport.observe import Observer
from grouposcore.transport.serverflow import Drop, Leisure, Park, Render, Respond, ServerFlow

A = ("192.0.2.1", 5683)
#: OSCORE option values: Group Flag | kid flag | PIV length 1 ... and without the flag
GROUP_MODE = b"\x29\x05\x42"
ONE_TO_ONE = b"\x09\x05\x42"


@dataclass(frozen=True)
class Binding:
    identity: bytes


class Toy:
    """Server security that "verifies" by dropping the OSCORE option and "protects" by
    adding an empty one; ``refuse`` makes every protected request fail with it."""

    def __init__(self, refuse: BaseException | None = None) -> None:
        self.refuse = refuse

    def unprotect_request(self, request: Message) -> tuple[Message, Any] | None:
        value = request.options.get(OptionNumber.OSCORE)
        if value is None:
            return None
        if self.refuse is not None:
            raise self.refuse
        plain = request.copy()
        plain.options.remove(OptionNumber.OSCORE)
        return plain, Binding(value)

    def protect_response(self, response: Message, binding: Any) -> Message:
        out = response.copy()
        out.options.set(OptionNumber.OSCORE, b"")
        return out


class Text(Resource):
    """Answers GET with ``body`` and POST with the length of what it got."""

    def __init__(self, body: bytes = b"hello", **attrs: Any) -> None:
        super().__init__(**attrs)
        self.body = body
        self.renders = 0

    async def render_get(self, request: Message) -> Message:
        self.renders += 1
        return Message(Code.CONTENT, payload=self.body)

    async def render_post(self, request: Message) -> Message:
        self.renders += 1
        return Message(Code.CHANGED, payload=str(len(request.payload)).encode())


def flow(
    resource: Resource | None = None,
    *,
    security: Any = None,
    szx: int = 6,
    leisure: float = 5.0,
    seed: int = 7,
) -> tuple[ServerFlow, list[tuple[Resource, Observer]]]:
    site = Site()
    if resource is not None:
        site.add("r", resource)
    changes: list[tuple[Resource, Observer]] = []
    f = ServerFlow(
        site=site,
        security=security,
        limits=BlockwiseLimits(szx=szx, lifetime=60.0),
        leisure=leisure,
        rng=random.Random(seed),
        notify=lambda r, o: changes.append((r, o)),
    )
    return f, changes


def request(
    code: int = Code.GET,
    *,
    path: str = "r",
    payload: bytes = b"",
    oscore: bytes | None = None,
    token: bytes = b"\x07",
    mid: int = 1,
) -> Message:
    msg = Message(code, Type.CON, mid, token, payload=payload)
    msg.options.uri_path = [path]
    if oscore is not None:
        msg.options.set(OptionNumber.OSCORE, oscore)
    return msg


def exchange(msg: Message, multicast: bool = False) -> ServerExchange:
    msg.remote = A
    return ServerExchange(msg, A, multicast)


def render(step: Render) -> Message:
    """Run a resource that does not suspend, the way the endpoint's task would."""
    coro = step.resource.render(step.request)
    try:
        coro.send(None)
    except StopIteration as done:
        result: Message = done.value
        return result
    raise AssertionError("the test resource suspended")


def serve(f: ServerFlow, msg: Message, now: float = 0.0, multicast: bool = False) -> Any:
    """Receive, render if asked to, and return the final action."""
    action = f.receive(exchange(msg, multicast), now)
    if isinstance(action, Render):
        action = f.rendered(action, render(action), now)
    return action


def test_block1_body_is_reassembled_before_the_resource_sees_it() -> None:
    res = Text()
    f, _ = flow(res, szx=0)
    body = bytes(range(40))
    sender = Block1Sender(request(Code.POST, payload=body), 0)
    block: Message | None = sender.first()
    seen = []
    now = 0.0
    while block is not None:
        action = f.receive(exchange(block), now)
        if isinstance(action, Render):
            assert action.request.payload == body  # the whole body, in one request
            assert OptionNumber.BLOCK1 not in action.request.options
            action = f.rendered(action, render(action), now)
        assert isinstance(action, Respond)
        seen.append(action.message.code)
        block = sender.next(action.message)
        now += 1.0
    assert seen == [Code.CONTINUE, Code.CONTINUE, Code.CHANGED]
    assert action.message.payload == b"40"
    assert action.message.options.block1 == BlockOption(2, False, 0)  # echoed (RFC 7959 §2.3)
    assert res.renders == 1


def test_block1_partial_body_expires_on_the_clock() -> None:
    f, _ = flow(Text(), szx=0)
    sender = Block1Sender(request(Code.POST, payload=bytes(40)), 0)
    first = f.receive(exchange(sender.first()), now=0.0)
    assert isinstance(first, Respond) and first.message.code == Code.CONTINUE
    late = f.receive(exchange(sender.next(first.message) or Message()), now=61.0)
    assert isinstance(late, Respond) and late.message.code == Code.REQUEST_ENTITY_INCOMPLETE


def test_later_block2_comes_from_the_cache_without_rendering() -> None:
    res = Text(bytes(range(100)))
    f, _ = flow(res, szx=0)
    first = serve(f, request())
    assert isinstance(first, Respond)
    assert first.message.options.block2 == BlockOption(0, True, 0)
    etag = first.message.options.etag
    nxt = request()
    nxt.options.block2 = BlockOption(1, False, 0)
    action = f.receive(exchange(nxt), now=1.0)
    assert isinstance(action, Respond)  # no Render: the representation was kept
    assert action.message.payload == bytes(range(16, 32))
    assert action.message.options.etag == etag
    assert res.renders == 1


def test_later_block_of_a_post_response_no_longer_held_is_408() -> None:
    res = Text()
    f, _ = flow(res)
    msg = request(Code.POST)
    msg.options.block2 = BlockOption(1, False, 0)
    action = f.receive(exchange(msg), 0.0)
    assert isinstance(action, Respond) and action.message.code == Code.REQUEST_ENTITY_INCOMPLETE
    assert res.renders == 0  # re-running a POST is not safe


def test_unknown_path_gets_404_and_silence_to_multicast() -> None:
    f, _ = flow(Text())
    action = f.receive(exchange(request(path="nowhere")), 0.0)
    assert isinstance(action, Respond) and action.message.code == Code.NOT_FOUND
    action = f.receive(exchange(request(path="nowhere"), multicast=True), 0.0)
    assert isinstance(action, Drop) and action.reason == "suppressed"


def test_unprotected_request_to_a_protected_resource_is_refused() -> None:
    f, _ = flow(Text(protection=Protection()), security=Toy())
    action = f.receive(exchange(request()), 0.0)
    assert isinstance(action, Respond) and action.message.code == Code.UNAUTHORIZED
    assert action.binding is None
    assert f.rejections.counts == {"unprotected": 1}
    assert f.rejections.last is not None and f.rejections.last.answered
    action = f.receive(exchange(request(), multicast=True), 0.0)
    assert isinstance(action, Drop)  # no amplification
    assert f.rejections.last is not None and not f.rejections.last.answered


def test_binding_the_resource_does_not_accept_gets_a_protected_401() -> None:
    res = Text(protection=Protection(accept=lambda b: False))
    f, _ = flow(res, security=Toy())
    action = f.receive(exchange(request(oscore=ONE_TO_ONE)), 0.0)
    assert isinstance(action, Respond) and action.message.code == Code.UNAUTHORIZED
    assert action.binding == Binding(ONE_TO_ONE)
    sent = f.seal(action)
    assert sent is not None and OptionNumber.OSCORE in sent.options
    assert f.rejections.counts == {"not-authorized": 1}
    assert res.renders == 0


def test_group_request_that_fails_verification_gets_no_answer() -> None:
    f, _ = flow(Text(protection=Protection()), security=Toy(ProtectionError("bad tag")))
    action = f.receive(exchange(request(oscore=GROUP_MODE)), 0.0)
    assert isinstance(action, Drop) and action.reason == "silent"
    assert f.rejections.counts == {"verification-failed": 1}
    action = f.receive(exchange(request(oscore=ONE_TO_ONE)), 0.0)
    assert isinstance(action, Respond) and action.message.code == Code.BAD_REQUEST


def test_freshness_challenge_answers_even_a_multicast_request_after_the_leisure() -> None:
    binding = Binding(b"x")
    refusal = FreshnessRequired("window not valid", binding, b"\x01\x02")
    f, _ = flow(Text(protection=Protection()), security=Toy(refusal), leisure=5.0, seed=3)
    action = f.receive(exchange(request(oscore=GROUP_MODE), multicast=True), 0.0)
    assert isinstance(action, Respond) and action.message.code == Code.UNAUTHORIZED
    assert action.message.options.echo == b"\x01\x02"
    assert action.binding is binding
    assert action.delay == random.Random(3).uniform(0.0, 5.0)


def test_multicast_answer_waits_a_leisure_and_unicast_none() -> None:
    f, _ = flow(Text(), leisure=2.0, seed=11)
    action = serve(f, request(), multicast=True)
    assert isinstance(action, Respond) and action.message.code == Code.CONTENT
    assert action.delay == random.Random(11).uniform(0.0, 2.0)
    action = serve(f, request())
    assert isinstance(action, Respond) and action.delay == 0.0


def test_observe_registration_numbers_the_response_and_tracks_the_observer() -> None:
    res = Text(observable=True)
    f, changes = flow(res)
    reg = request()
    reg.options.observe = 0
    action = serve(f, reg, now=3.0)
    assert isinstance(action, Respond) and action.message.options.observe is not None
    [observer] = res.observers
    assert observer.key == (A, b"\x07") and observer.last_con == 3.0
    res.notify()
    assert changes == [(res, observer)]
    note = f.notification(res, observer, Message(Code.CONTENT, payload=b"new"), now=4.0)
    assert note is not None and note.token == b"\x07" and note.payload == b"new"
    assert note.options.observe is not None
    assert note.options.observe > action.message.options.observe
    dereg = request()
    dereg.options.observe = 1
    assert isinstance(f.receive(exchange(dereg), 5.0), Render)
    assert res.observers == [] and not f.is_current(observer)
    assert f.notification(res, observer, Message(Code.CONTENT), now=6.0) is None


def test_error_response_to_an_observe_registration_registers_nothing() -> None:
    class Failing(Text):
        async def render_get(self, request: Message) -> Message:
            return Message(Code.NOT_FOUND)

    res = Failing(observable=True)
    f, _ = flow(res)
    reg = request()
    reg.options.observe = 0
    action = serve(f, reg)
    assert isinstance(action, Respond) and action.message.code == Code.NOT_FOUND
    assert action.message.options.observe is None
    assert res.observers == []


def test_security_hook_crash_becomes_500_but_never_to_a_group_request() -> None:
    f, _ = flow(Text(), security=Toy(RuntimeError("bug")))
    action = f.receive(exchange(request(oscore=ONE_TO_ONE)), 0.0)
    assert isinstance(action, Respond) and action.message.code == Code.INTERNAL_SERVER_ERROR
    action = f.receive(exchange(request(oscore=GROUP_MODE)), 0.0)
    assert isinstance(action, Drop)


def test_render_failure_of_a_verified_request_gets_a_protected_500() -> None:
    f, _ = flow(Text(), security=Toy())
    step = f.receive(exchange(request(oscore=GROUP_MODE)), 0.0)
    assert isinstance(step, Render) and step.binding is not None
    action = f.failed(step.exchange, step.whole, step.binding)
    assert isinstance(action, Respond) and action.message.code == Code.INTERNAL_SERVER_ERROR
    sent = f.seal(action)
    assert sent is not None and OptionNumber.OSCORE in sent.options
    with pytest.raises(TypeError):
        f.rendered(step, "not a message", 0.0)


def test_outer_block1_is_reassembled_before_verification_and_echoed_on_the_answer() -> None:
    f, _ = flow(Text(), security=Toy(), szx=0)
    protected = request(Code.POST, payload=bytes(40), oscore=ONE_TO_ONE)
    sender = Block1Sender(protected, 0)
    block: Message | None = sender.first()
    action: Any = None
    while block is not None:
        action = serve(f, block)
        assert isinstance(action, Respond)
        block = sender.next(action.message)
    assert action.message.payload == b"40"
    sent = f.seal(action)
    assert sent is not None and OptionNumber.OSCORE in sent.options
    assert sent.options.block1 == BlockOption(2, False, 0)  # RFC 8613 §4.1.3.4.2


def test_bad_critical_option_of_a_group_request_gets_no_402() -> None:
    f, _ = flow(Text(), security=Toy())
    for oscore, answered in ((GROUP_MODE, False), (ONE_TO_ONE, True)):
        msg = request(oscore=oscore)
        msg.options.set(65001, b"x")
        action = f.receive(exchange(msg), 0.0)
        assert isinstance(action, Respond) is answered


def test_a_request_whose_senders_credential_is_being_fetched_is_parked() -> None:
    """CredentialNotFound with a fetch under way: Park, carrying what would have been done
    otherwise (silence for a group request, 5.03 + Max-Age for a one-to-one one). Without
    a fetch, or for a request reassembled from outer Block1, that is done at once."""
    fetch = object()
    for oscore, otherwise in ((GROUP_MODE, Drop), (ONE_TO_ONE, Respond)):
        err = CredentialNotFound("no credential for Sender ID 05", kid=b"\x05")
        err.pending = fetch
        f, _ = flow(Text(), security=Toy(refuse=err))
        action = f.receive(exchange(request(oscore=oscore)), 0.0)
        assert isinstance(action, Park) and action.until is fetch
        assert isinstance(action.otherwise, otherwise)
        if isinstance(action.otherwise, Respond):
            assert action.otherwise.message.code == Code.SERVICE_UNAVAILABLE
        assert f.rejections.total == 0  # held: not refused (yet)
        assert f.declined(action) is action.otherwise and f.rejections.total == 1
        nothing = CredentialNotFound("no credential for Sender ID 05", kid=b"\x05")
        f, _ = flow(Text(), security=Toy(refuse=nothing))
        assert isinstance(f.receive(exchange(request(oscore=oscore)), 0.0), otherwise)
        assert f.rejections.total == 1


@settings(max_examples=300)
@given(
    now=st.floats(0.0, 1e6, allow_nan=False),
    delays=st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=1, max_size=20),
    slot=st.sampled_from([0.0, 0.001, 0.02, 5.0 / 32, 0.3]),
)
def test_leisure_slots_never_send_early_and_at_most_one_slot_late(
    now: float, delays: list[float], slot: float
) -> None:
    f, _ = flow(Text())
    held = Leisure(slot)
    base = serve(f, request(), now=now, multicast=True)
    for d in delays:
        held.add(dataclasses.replace(base, delay=d), now)
    released = [a.delay for a, _ in held.pop_due(now + 5.0 + slot + 1.0)]
    assert sorted(released) == sorted(delays)
    for d in delays:
        single = Leisure(slot)
        single.add(dataclasses.replace(base, delay=d), now)
        due = single.next_due()
        assert due is not None and due >= now + d
        if d == 0 or slot == 0:
            assert due == now + d  # no leisure: at once; no grid: its own moment
        else:
            assert due - (now + d) <= slot * (1 + 1e-9) + 1e-9
            assert abs(due / slot - round(due / slot)) < 1e-6  # on the grid


def test_leisure_slots_gather_responses_of_one_process_into_few_turns() -> None:
    """Members hosted by one process (one loop clock) whose random delays fall in one slot
    are due at the same moment, so one timer sends them all."""
    f, _ = flow(Text(), leisure=0.5, seed=3)
    held = Leisure(0.5 / 8)
    for member in range(100):
        held.add(serve(f, request(mid=member), now=10.0, multicast=True), now=10.0 + member * 1e-5)
    turns = 0
    while (due := held.next_due()) is not None:
        assert held.pop_due(due)
        turns += 1
    assert turns <= 9  # 8 slots per leisure (+1: the first is partly before the arrivals)


def test_leisure_releases_held_responses_when_due_in_due_order() -> None:
    f, _ = flow(Text(), leisure=2.0, seed=5)
    held = Leisure()
    actions = [serve(f, request(mid=i), now=10.0, multicast=True) for i in range(4)]
    for a in actions:
        held.add(a, now=10.0)
    dues = sorted(10.0 + a.delay for a in actions)
    assert held.next_due() == dues[0] and len(held) == 4
    assert held.pop_due(dues[0] - 1e-6) == []
    first_two = held.pop_due(dues[1])
    assert [a for a, _ in first_two] == sorted(actions, key=lambda a: a.delay)[:2]
    assert held.next_due() == dues[2]
    assert len(held.pop_due(12.0)) == 2 and held.next_due() is None  # all within the leisure
