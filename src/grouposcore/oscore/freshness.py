"""What a Group OSCORE member does with a request whose replay window is not valid."""

from __future__ import annotations

from typing import Literal

from grouposcore.errors import OscoreError

#: What to do with a request whose replay window is not valid (RFC 10021 §2.6.1.2 allows
#: only dropping it, the Echo procedure, or a new Security Context):
#:
#: * ``"echo"`` (default): answer a protected 4.01 with an Echo option; the repeated request
#:   carrying that Echo value proves freshness and makes the window valid.
#: * ``"drop"``: drop the request; the window stays invalid until a new Security Context.
#: * ``INSECURE_ACCEPT_REPLAYS`` (``"insecure-accept-replays-after-restart"``): deliver the
#:   first verified request and make the window valid from it. NOT what the RFC allows: a
#:   request recorded before a restart is delivered again, and so is every newer recorded
#:   one. Only for peers that cannot answer a group Echo (e.g. aiocoap clients).
FreshnessPolicy = Literal["echo", "drop", "insecure-accept-replays-after-restart"]

#: The explicitly insecure freshness policy, named as what it does.
INSECURE_ACCEPT_REPLAYS: FreshnessPolicy = "insecure-accept-replays-after-restart"
FRESHNESS_POLICIES: tuple[FreshnessPolicy, ...] = ("echo", "drop", INSECURE_ACCEPT_REPLAYS)
#: Policies of earlier versions, refused with what to use instead.
RETIRED_FRESHNESS = {
    "drop-first": "'drop-first' made the window valid from a dropped, unverified-fresh "
    "request (a replay of one old request then lets newer recorded ones "
    "through); use 'echo' or 'drop'",
    "accept": f"'accept' delivered requests of unknown freshness; use 'echo', or "
    f"{INSECURE_ACCEPT_REPLAYS!r} for peers that cannot answer an Echo",
}


def check_freshness_policy(policy: object) -> FreshnessPolicy:
    """``policy`` if it is one of FRESHNESS_POLICIES; an OscoreError that says what to use
    instead otherwise."""
    if isinstance(policy, str) and policy in RETIRED_FRESHNESS:
        raise OscoreError(
            f"freshness policy {policy!r} is no longer supported: {RETIRED_FRESHNESS[policy]}"
        )
    for known in FRESHNESS_POLICIES:
        if policy == known:
            return known
    raise OscoreError(
        f"unknown freshness policy {policy!r} (one of {', '.join(FRESHNESS_POLICIES)})"
    )
