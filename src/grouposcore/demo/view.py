"""How the demo and the firmware push show what happens: a live ``rich`` table and progress
bar on a terminal, one ``key=value`` line per event otherwise, JSON Lines with ``--json``.

Plain lines (stable, for scripts and tests)::

    step NAME: TITLE
    light NAME sid=HEX state=STATE verified=MODE|- rtt_ms=MS|- [note=TEXT]
    round COMMAND: V of N verified, whole group in MS ms
    push blocks=SENT/TOTAL complete=C/M repairs=R
    result NAME ok|FAILED: DETAIL
    summary ok|FAILED: P of S steps verified in SECONDS s (MODE)
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from grouposcore.demo.report import DemoReport, LightRow, RoundSummary, StepResult
from grouposcore.push.runner import PushResult

__all__ = ["JsonView", "PlainView", "RichView", "choose_view"]


def _rtt(row: LightRow) -> str:
    return "-" if row.rtt_ms is None else f"{row.rtt_ms:.1f}"


class PlainView:
    """One parseable line per event."""

    def __init__(self, out: TextIO | None = None, *, quiet: bool = False) -> None:
        self.out = out if out is not None else sys.stdout
        #: no progress lines, only results
        self.quiet = quiet
        self._last_push = -1

    def _emit(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def step(self, name: str, title: str) -> None:
        self._emit(f"step {name}: {title}")

    def note(self, text: str) -> None:
        self._emit(f"note {text}")

    def round_start(self, command: str, rows: list[LightRow]) -> None:
        pass

    def round_update(self, row: LightRow) -> None:
        pass

    def round_end(self, summary: RoundSummary) -> None:
        for row in summary.rows:
            note = f" note={row.note.replace(' ', '_')}" if row.note else ""
            self._emit(
                f"light {row.name} sid={row.sender_id} state={row.state.replace(' ', '_')}"
                f" verified={row.verified} rtt_ms={_rtt(row)}{note}"
            )
        self._emit(f"round {summary.command}: {summary.line}")

    def push_start(self, size: int, blocks: int, members: int) -> None:
        self._last_push = -1

    def push_progress(
        self, blocks_sent: int, blocks: int, complete: int, members: int, repairs: int
    ) -> None:
        # a line per tenth of the blocks and per completed member, not per block
        if self.quiet:
            return
        mark = (blocks_sent * 10 // max(1, blocks), complete)
        key = mark[0] * 100_000 + mark[1]
        if key != self._last_push:
            self._last_push = key
            self._emit(
                f"push blocks={blocks_sent}/{blocks} complete={complete}/{members} "
                f"repairs={repairs}"
            )

    def push_end(self, result: PushResult) -> None:
        s = result.sender
        self._emit(
            f"push blocks={result.blocks_sent}/{s.nblocks} complete={s.completed()}/"
            f"{len(s.expected)} repairs={result.repairs_sent} seconds="
            f"{result.seconds:.2f}"
        )

    def result(self, step: StepResult) -> None:
        self._emit(f"result {step.name} {'ok' if step.ok else 'FAILED'}: {step.detail}")

    def finish(self, report: DemoReport) -> None:
        passed = sum(s.ok for s in report.steps)
        self._emit(
            f"summary {'ok' if report.ok else 'FAILED'}: {passed} of "
            f"{len(report.steps)} steps verified in {report.seconds:.2f} s "
            f"({report.mode})"
        )


class JsonView:
    """JSON Lines: ``{"event": ...}`` per step, light answer, round, push update, result."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout

    def _emit(self, **fields: Any) -> None:
        self.out.write(json.dumps(fields) + "\n")
        self.out.flush()

    def step(self, name: str, title: str) -> None:
        self._emit(event="step", name=name, title=title)

    def note(self, text: str) -> None:
        self._emit(event="note", text=text)

    def round_start(self, command: str, rows: list[LightRow]) -> None:
        pass

    def round_update(self, row: LightRow) -> None:
        pass

    def round_end(self, summary: RoundSummary) -> None:
        self._emit(
            event="round", command=summary.command, expected=summary.expected,
            verified=summary.verified, ms=round(summary.seconds * 1000, 2),
            lights=[
                {"name": r.name, "sender_id": r.sender_id, "state": r.state,
                 "verified": r.verified, "rtt_ms": None if r.rtt_ms is None
                 else round(r.rtt_ms, 2), "ok": r.ok, "note": r.note}
                for r in summary.rows
            ],
        )  # fmt: skip

    def push_start(self, size: int, blocks: int, members: int) -> None:
        self._emit(event="push-start", size=size, blocks=blocks, members=members)

    def push_progress(
        self, blocks_sent: int, blocks: int, complete: int, members: int, repairs: int
    ) -> None:
        pass  # the end record says it all; scripts do not want thousands of lines

    def push_end(self, result: PushResult) -> None:
        self._emit(event="push", **result.as_dict())

    def result(self, step: StepResult) -> None:
        self._emit(
            event="result",
            name=step.name,
            ok=step.ok,
            detail=step.detail,
            seconds=round(step.seconds, 3),
            data=step.data,
        )

    def finish(self, report: DemoReport) -> None:
        self._emit(
            event="summary",
            ok=report.ok,
            seconds=round(report.seconds, 3),
            mode=report.mode,
            steps=len(report.steps),
            passed=sum(s.ok for s in report.steps),
            failed=[s.name for s in report.failed()],
        )


class RichView:
    """A terminal: a live table per command round, a progress bar for the push."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console if console is not None else Console()
        self._live: Live | None = None
        self._rows: dict[str, LightRow] = {}
        self._command = ""
        self._progress: Progress | None = None
        self._tasks: tuple[Any, Any] | None = None

    def step(self, name: str, title: str) -> None:
        self.console.rule(f"[bold]{title}")

    def note(self, text: str) -> None:
        self.console.print(f"  {text}")

    def _table(self) -> Table:
        table = Table(title=f"switch: {self._command}", title_justify="left")
        for col in ("light", "Sender ID", "state", "verified", "round trip ms"):
            table.add_column(col, justify="right" if col == "round trip ms" else "left")
        for row in self._rows.values():
            verified = row.verified if row.verified == "-" else f"[green]✓ {row.verified}"
            if row.note.startswith("evicted"):
                verified = f"[yellow]{row.note}"
            elif row.note:
                verified = f"[red]✗ {row.note}"
            table.add_row(row.name, row.sender_id, row.state, verified, _rtt(row))
        return table

    def round_start(self, command: str, rows: list[LightRow]) -> None:
        self._command = command
        self._rows = {r.name: r for r in rows}
        self._live = Live(self._table(), console=self.console, refresh_per_second=20)
        self._live.start()

    def round_update(self, row: LightRow) -> None:
        self._rows[row.name] = row
        if self._live is not None:
            self._live.update(self._table())

    def round_end(self, summary: RoundSummary) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()
            self._live = None  # the step's result line below says how the round went

    def push_start(self, size: int, blocks: int, members: int) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=self.console,
        )  # fmt: skip
        self._tasks = (
            self._progress.add_task("blocks sent", total=blocks),
            self._progress.add_task("members complete", total=members),
        )
        self._progress.start()

    def push_progress(
        self, blocks_sent: int, blocks: int, complete: int, members: int, repairs: int
    ) -> None:
        if self._progress is not None and self._tasks is not None:
            self._progress.update(
                self._tasks[0],
                completed=blocks_sent,
                description=f"blocks sent (+{repairs} repairs)",
            )
            self._progress.update(self._tasks[1], completed=complete)

    def push_end(self, result: PushResult) -> None:
        if self._progress is not None and self._tasks is not None:
            s = result.sender
            self._progress.update(self._tasks[0], completed=result.blocks_sent)
            self._progress.update(self._tasks[1], completed=s.completed())
            self._progress.stop()
            self._progress = None

    def result(self, step: StepResult) -> None:
        mark = "[green]✓" if step.ok else "[red]✗ FAILED:"
        self.console.print(f"{mark} {step.detail}")

    def finish(self, report: DemoReport) -> None:
        passed = sum(s.ok for s in report.steps)
        color = "green" if report.ok else "red"
        self.console.rule(
            f"[bold {color}]{passed} of {len(report.steps)} steps verified "
            f"in {report.seconds:.2f} s ({report.mode})"
        )
        for s in report.failed():
            self.console.print(f"[red]failed: {s.name}: {s.detail}")


def choose_view(json_output: bool, out: TextIO | None = None) -> Any:
    """JSON if asked, rich on a terminal, plain lines otherwise."""
    stream = out if out is not None else sys.stdout
    if json_output:
        return JsonView(stream)
    if stream.isatty():
        return RichView(Console(file=stream))
    return PlainView(stream)
