"""The training screen: a live progress bar in a terminal (log lines elsewhere), one line
per validation pass, the summary panel and the loss curve.

Draws the plain records a run reports (`textgen.records`); imports no torch.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from textgen.records import (
    EvalReport,
    Notice,
    RunStarted,
    SampleReport,
    StepReport,
    TrainResult,
    Working,
)
from textgen.ui.console import live_ok, no_control_echo, notice, progress_bar
from textgen.ui.style import coloured, one_line, visible_controls
from textgen.units import count, format_duration

ETA_AFTER_SECONDS = 3


class TrainView:
    """Draws training events: a live progress bar in a terminal, log lines elsewhere."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = live_ok(console)
        self.progress: Progress | None = None
        self.task = None
        self.last_line = 0.0
        self.work: Progress | None = None  # before training: tokenizer, encoding
        self.work_task = ""
        self.last_sample: SampleReport | None = None

    def __enter__(self) -> TrainView:
        self._echo = contextlib.ExitStack()
        if self.live:
            self._echo.enter_context(no_control_echo())
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_work()
        if self.progress is not None:
            self.progress.stop()
        self._echo.close()

    def __call__(self, event: object) -> None:
        if isinstance(event, Working):
            self._working(event)
            return
        self._end_work()
        if isinstance(event, Notice):
            notice(self.console, event.message, event.warning)
        elif isinstance(event, RunStarted):
            self._started(event)
        elif isinstance(event, StepReport):
            self._step(event)
        elif isinstance(event, EvalReport):
            self._eval(event)
        elif isinstance(event, SampleReport):
            self._sample(event)

    def _sample(self, event: SampleReport) -> None:
        """The sample in one line: in a terminal the prompt dim and the text in the
        probability colours, newlines shown as ↵ and cut at the screen's edge; in a log
        the whole of it, escaped."""
        self.last_sample = event
        if self.live:
            line = Text(f"sample step {event.step:,} │ ", style="dim")
            line.append(one_line(event.prompt), style="dim")
            line.append_text(coloured([(one_line(t), p) for t, p in event.pieces]))
            self.console.print(line, no_wrap=True, overflow="ellipsis", crop=True)
        else:
            written = json.dumps(event.prompt + event.text, ensure_ascii=False)
            self.console.print(
                f"sample step {event.step:,}: {written}",
                soft_wrap=True,
                markup=False,
                highlight=False,
            )

    def _working(self, event: Working) -> None:
        """A transient bar over the corpus bytes (a pulsing one when the amount of work is
        unknown: `total` 0), in a terminal only."""
        if not self.live:
            return
        if self.work is None or self.work_task != event.task:
            self._end_work()
            self.work = progress_bar(
                self.console,
                TextColumn("{task.description}"),
                BarColumn(bar_width=None),
                TextColumn("{task.fields[size]}"),
                TextColumn("{task.fields[speed]}"),
                TimeElapsedColumn(),
            )
            self.work.start()
            self.work_task = event.task
            self.work_started = time.monotonic()
            self.work.add_task(event.task, total=event.total or None, size="", speed="")
        if not event.total:
            return
        seconds = max(time.monotonic() - self.work_started, 1e-9)
        digits = 0 if event.total >= 10 * 2**20 else 1
        self.work.update(
            self.work.task_ids[0],
            completed=event.done,
            size=f"{event.done / 2**20:,.{digits}f}/{event.total / 2**20:,.{digits}f} MB",
            speed=f"{event.done / 2**20 / seconds:,.1f} MB/s",
        )

    def _end_work(self) -> None:
        if self.work is not None:
            self.work.stop()
            self.work, self.work_task = None, ""

    def _started(self, event: RunStarted) -> None:
        budget = []
        if event.max_steps:
            budget.append(f"{event.max_steps:,} steps")
        if event.time_budget:
            budget.append(format_duration(event.time_budget))
        notice(
            self.console,
            f"model: {count(event.parameters)} parameters on {event.device}; "
            f"{count(event.train_tokens)} training / {count(event.val_tokens)} validation tokens; "
            f"budget {' or '.join(budget)}",
        )
        parts = []
        if event.processes > 1:
            parts.append(f"data parallel over {event.processes} processes")
        if event.accumulation > 1:
            parts.append(f"gradients accumulated over {event.accumulation} micro-batches a step")
        if parts:
            notice(self.console, "; ".join(parts))
        if self.live:
            self.progress = progress_bar(self.console, *self._columns())
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=1.0, step=event.start_step, loss="-", speed="-", eta="-", mfu=""
            )

    def _columns(self) -> list[TextColumn | BarColumn | TimeElapsedColumn]:
        """The progress line's columns, as many as the terminal's width holds."""
        width = self.console.width
        columns = [
            TextColumn("step [bold]{task.fields[step]}[/]"),
            BarColumn(bar_width=None if width >= 60 else max(4, width - 24)),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("loss [cyan]{task.fields[loss]}[/]"),
        ]
        if width < 60:  # narrow: what the run has done, not how fast
            return columns if width >= 36 else columns[:1] + columns[2:3]
        return columns + [
            TextColumn("{task.fields[speed]} tok/s{task.fields[mfu]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
        ]

    def _step(self, event: StepReport) -> None:
        done = event.fraction_done
        # an estimate needs a little history: the first steps pay for warming up
        settled = done >= 0.01 and event.elapsed >= ETA_AFTER_SECONDS
        eta = format_duration(event.elapsed * (1 - done) / done) if settled else "-"
        mfu = f" · MFU {event.mfu:.0%}" if event.mfu is not None else ""
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=done,
                step=f"{event.step:,}",
                loss=f"{event.loss:.3f}",
                speed=count(event.tokens_per_second),
                eta=eta,
                mfu=mfu,
            )
        elif time.monotonic() - self.last_line >= 30:  # a heartbeat line in logs
            self.last_line = time.monotonic()
            self.console.print(
                f"step {event.step:,}  loss {event.loss:.3f}  "
                f"{count(event.tokens_per_second)} tok/s{mfu}  "
                f"{format_duration(event.elapsed)}  {done:.0%}",
                soft_wrap=True,
            )

    def _eval(self, event: EvalReport) -> None:
        r = event.result
        label = "final" if event.final else "eval"
        kept = ""
        if event.kept:
            kept = (
                "  [yellow]★ best, saved[/]" if event.final else "  [yellow]★ best so far, saved[/]"
            )
        self.console.print(
            f"[bold]{label}[/] step {event.step:,} │ train loss {event.train_loss:.3f} │ "
            f"val loss [cyan]{r.loss:.3f}[/] │ [bold green]{r.bits_per_byte:.3f}[/] bits/byte │ "
            f"{format_duration(event.elapsed)}{kept}",
            soft_wrap=True,
        )

    def summary(
        self,
        result: TrainResult,
        model_name: str,
        metrics: Sequence[dict] = (),
        resume_command: str = "textgen train --resume",
    ) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="dim")
        table.add_column()
        table.add_row("model", escape(str(result.folder)))
        table.add_row("parameters", count(result.parameters))
        table.add_row("steps", f"{result.steps:,}")
        table.add_row("tokens seen", count(result.tokens_seen))
        table.add_row("time", format_duration(result.elapsed))
        if result.elapsed > 0:
            table.add_row("throughput", f"{count(result.tokens_seen / result.elapsed)} tok/s")
        if result.kept_eval is not None:
            e = result.kept_eval
            if result.kept_step != result.steps:
                table.add_row("kept", f"the weights of step {result.kept_step:,} (best validation)")
            table.add_row("val loss", f"{e.loss:.3f} (perplexity {e.perplexity:.1f})")
            table.add_row("val bits/byte", f"[bold green]{e.bits_per_byte:.3f}[/]")
        title = "training done"
        if result.stopped_by is not None:
            why = "interrupted" if result.stopped_by == signal.SIGINT else "stopped"
            title = f"{why}: checkpoint saved"
        self.console.print(Panel(table, title=title, expand=False, box=box.ROUNDED))
        if LossCurve.drawable(metrics):
            self.console.print(LossCurve(metrics))
        sample = self.last_sample
        if sample is not None and self.live:  # what it writes now, in full
            text = Text(f"it writes now (step {sample.step:,}):\n", style="dim")
            text.append(visible_controls(sample.prompt), style="dim")
            text.append_text(coloured(sample.pieces))
            self.console.print(text)
        if result.interrupted:
            notice(self.console, f"to go on from here: {resume_command}")
        else:
            prompt = shlex.quote(result.first_word or "The")
            notice(
                self.console, f"try: textgen generate {prompt} --model {shlex.quote(model_name)}"
            )


class LossCurve:
    """Training and validation loss against steps, drawn in characters, as wide as the
    space it is given (at most `MAX_WIDTH` columns of plot): a narrow terminal gets a
    narrower curve, not a broken one."""

    MAX_WIDTH, LABEL = 60, 8  # the plot's columns, and the axis labels' before it

    def __init__(self, metrics: Sequence[dict[str, Any]], height: int = 10) -> None:
        self.points = [m for m in metrics if m.get("val_loss") is not None]
        self.height = height

    @classmethod
    def drawable(cls, metrics: Sequence[dict[str, Any]]) -> bool:
        """Whether there is a curve to draw: two evaluations at least."""
        return len(cls(metrics).points) >= 2

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.LABEL + 12, self.LABEL + self.MAX_WIDTH + 1)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.draw(max(10, min(self.MAX_WIDTH, options.max_width - self.LABEL - 1)))

    def draw(self, width: int) -> Text:
        points, height = self.points, self.height
        series = {
            "train": [
                (m["step"], m["train_loss"]) for m in points if m.get("train_loss") is not None
            ],
            "val": [(m["step"], m["val_loss"]) for m in points],
        }
        values = [y for pairs in series.values() for _, y in pairs]
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        first, last = points[0]["step"], points[-1]["step"]
        steps = (last - first) or 1
        grid = [[" "] * width for _ in range(height)]
        styles = [[""] * width for _ in range(height)]
        for name, mark, style in (("train", "•", "cyan"), ("val", "◆", "magenta")):
            for x, y in series[name]:
                col = round((x - first) / steps * (width - 1))
                row = height - 1 - round((y - low) / span * (height - 1))
                grid[row][col], styles[row][col] = mark, style
        text = Text()
        for r in range(height):
            label = (
                f"{high:6.2f} ┤" if r == 0 else f"{low:6.2f} ┤" if r == height - 1 else "       │"
            )
            text.append(label, style="dim")
            for c in range(width):
                text.append(grid[r][c], style=styles[r][c])
            text.append("\n")
        text.append("       └" + "─" * width + "\n", style="dim")
        ends = f"{first:,}", f"{last:,}"
        text.append(
            " " * self.LABEL + ends[0].ljust(width - len(ends[1])) + ends[1] + "\n", style="dim"
        )
        text.append(" " * self.LABEL + "• train  ", style="cyan")
        text.append("◆ validation loss, by step", style="magenta")
        return text
