"""What the demo is asked (:class:`DemoConfig`), what it reports and the interface of the
views that show it: one row per light and command round, a summary per round, a result per
step, and the whole run's report.

Plain data, apart from :mod:`~grouposcore.demo.scenario` that fills it, so the views
(:mod:`~grouposcore.demo.view`) and scripts depend on these types only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from grouposcore.coap.constants import ALL_COAP_NODES_V4, ALL_COAP_NODES_V6_LINK
from grouposcore.push.runner import PushResult

__all__ = ["DemoConfig", "DemoReport", "DemoView", "LightRow", "RoundSummary", "StepResult"]

DEFAULT_V4_GROUP = ALL_COAP_NODES_V4  # 224.0.1.187


@dataclass
class DemoConfig:
    lights: int = 8
    db: Path | None = None
    interface: str = "lo"
    ipv6: bool = False
    port: int = 5683
    #: no multicast: the switch sends the group-mode request to each light in turn
    unicast: bool = False
    firmware: int | None = None
    #: how long a command round waits for answers at most (it ends when all answered)
    timeout: float = 3.0
    seed: int | None = None
    #: worker processes for the lights (1: all in this process)
    processes: int = 1
    #: nodes reach the GM with EDHOC (their own key pair, the GM's credential); False:
    #: with channel material the GM commissions (what a channel file holds)
    edhoc: bool = True

    @property
    def group_address(self) -> str:
        return ALL_COAP_NODES_V6_LINK if self.ipv6 else DEFAULT_V4_GROUP

    @property
    def leisure(self) -> float:
        """Spread of the lights' answers to a multicast command: grows with the group."""
        return min(0.2, 0.002 * (self.lights + 1))


@dataclass
class LightRow:
    name: str
    sender_id: str
    state: str = "-"
    verified: str = "-"
    rtt_ms: float | None = None
    note: str = ""
    ok: bool = False


@dataclass
class RoundSummary:
    command: str
    expected: int
    verified: int
    seconds: float
    rows: list[LightRow]

    @property
    def line(self) -> str:
        return (
            f"{self.verified} of {self.expected} verified, whole group in "
            f"{self.seconds * 1000:.1f} ms"
        )


@dataclass
class StepResult:
    name: str
    ok: bool
    detail: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoReport:
    steps: list[StepResult]
    seconds: float
    mode: str

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if not s.ok]


class DemoView(Protocol):
    """What the demo shows; the CLI picks a rich, plain or JSON implementation."""

    def step(self, name: str, title: str) -> None: ...
    def note(self, text: str) -> None: ...
    def round_start(self, command: str, rows: list[LightRow]) -> None: ...
    def round_update(self, row: LightRow) -> None: ...
    def round_end(self, summary: RoundSummary) -> None: ...
    def push_start(self, size: int, blocks: int, members: int) -> None: ...
    def push_progress(
        self, blocks_sent: int, blocks: int, complete: int, members: int, repairs: int
    ) -> None: ...
    def push_end(self, result: PushResult) -> None: ...
    def result(self, step: StepResult) -> None: ...
