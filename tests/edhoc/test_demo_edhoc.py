"""The demo's lights and switch join over EDHOC by default; ``--channels`` keeps the
commissioned channels."""

from __future__ import annotations

import re

from tests.demo.test_demo import demo, needs_netns


@needs_netns
def test_demo_joins_over_edhoc_by_default_and_over_channels_on_request() -> None:
    code, out, err, _ = demo("--lights", "3")
    assert code == 0, out + err
    assert "join with proof of possession over EDHOC channels" in out
    assert re.search(r"^summary ok", out, re.M)
    code, out, err, _ = demo("--lights", "3", "--channels")
    assert code == 0, out + err
    assert "over EDHOC" not in out and re.search(r"^summary ok", out, re.M)
