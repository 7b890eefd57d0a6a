"""Everything Rich: progress, tables and panels, all drawn on stderr.

stdout carries only the product (generated text), written by the CLI. Nothing here
imports torch. No colour and no live display when stderr is not a terminal or when
NO_COLOR is set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.columns import Columns
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from textgen.config import format_duration

_BLOCKS = " ▏▎▍▌▋▊▉█"


def make_console(stderr: bool = True) -> Console:
    """A console on stderr (or stdout); plain text when not a terminal or NO_COLOR is set."""
    return Console(stderr=stderr, highlight=False, no_color="NO_COLOR" in os.environ or None)


def live_ok(console: Console) -> bool:
    return console.is_terminal and "NO_COLOR" not in os.environ and not console.is_dumb_terminal


def error(console: Console, message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def notice(console: Console, message: str, warning: bool = False) -> None:
    style = "[yellow]warning:[/] " if warning else "[dim]›[/] "
    console.print(style + escape(message), soft_wrap=True)


def count(n: float) -> str:
    """1234 -> '1.2k', 2_500_000 -> '2.5M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def bar(fraction: float, width: int = 10) -> str:
    """A horizontal bar of `width` cells, in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (_BLOCKS[part] if part else "")).ljust(width)


# -- training ------------------------------------------------------------------------------


class TrainView:
    """Draws training events: a live progress bar in a terminal, log lines elsewhere."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = live_ok(console)
        self.progress: Progress | None = None
        self.task = None
        self.last_line = 0.0

    def __enter__(self) -> TrainView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: Any) -> None:
        from textgen import train as t  # the event types; train imports torch, already loaded

        if isinstance(event, t.Notice):
            notice(self.console, event.message, event.warning)
        elif isinstance(event, t.RunStarted):
            self._started(event)
        elif isinstance(event, t.StepReport):
            self._step(event)
        elif isinstance(event, t.EvalReport):
            self._eval(event)

    def _started(self, event: Any) -> None:
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
        if self.live:
            self.progress = Progress(
                TextColumn("step [bold]{task.fields[step]}[/]"),
                BarColumn(bar_width=None),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("loss [cyan]{task.fields[loss]}[/]"),
                TextColumn("{task.fields[speed]} tok/s"),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=1.0, step=event.start_step, loss="-", speed="-", eta="-"
            )

    def _step(self, event: Any) -> None:
        done = event.fraction_done
        eta = format_duration(event.elapsed * (1 - done) / done) if done > 0 else "-"
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=done,
                step=f"{event.step:,}",
                loss=f"{event.loss:.3f}",
                speed=count(event.tokens_per_second),
                eta=eta,
            )
        elif time.monotonic() - self.last_line >= 30:  # a heartbeat line in logs
            self.last_line = time.monotonic()
            self.console.print(
                f"step {event.step:,}  loss {event.loss:.3f}  "
                f"{count(event.tokens_per_second)} tok/s  {format_duration(event.elapsed)}  "
                f"{done:.0%}",
                soft_wrap=True,
            )

    def _eval(self, event: Any) -> None:
        r = event.result
        label = "final" if event.final else "eval"
        self.console.print(
            f"[bold]{label}[/] step {event.step:,} │ train loss {event.train_loss:.3f} │ "
            f"val loss [cyan]{r.loss:.3f}[/] │ [bold green]{r.bits_per_byte:.3f}[/] bits/byte │ "
            f"{format_duration(event.elapsed)}",
            soft_wrap=True,
        )

    def summary(self, result: Any, model_name: str) -> None:
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
        if result.final_eval is not None:
            e = result.final_eval
            table.add_row("val loss", f"{e.loss:.3f} (perplexity {e.perplexity:.1f})")
            table.add_row("val bits/byte", f"[bold green]{e.bits_per_byte:.3f}[/]")
        title = "interrupted: checkpoint saved" if result.interrupted else "training done"
        self.console.print(Panel(table, title=title, expand=False, box=box.ROUNDED))
        if not result.interrupted:
            notice(self.console, f'try: textgen generate "The" --model {model_name}')


# -- generation ----------------------------------------------------------------------------


def percent(p: float) -> str:
    """0.423 -> ' 42%', 0.004 -> ' <1%'."""
    return " <1%" if 0 < p < 0.005 else f"{p:4.0%}"


def clip(text: str, width: int = 12) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def top_table(records: Sequence[Any], render_token, k: int) -> Table:
    """One row per generated token: the chosen token and its probability, then the k most
    likely candidates of the distribution it was drawn from, each as a bar, a percentage
    and the token (the chosen one highlighted). Candidates wrap in narrow terminals."""
    table = Table(box=box.SIMPLE_HEAD, title="top candidates per step", title_justify="left")
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("chosen", no_wrap=True, max_width=14)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column(f"top {k} candidates", ratio=1)
    for n, record in enumerate(records, 1):
        candidates = []
        for token_id, prob in record.candidates[:k]:
            item = Text(bar(prob, 3), style="green")
            item.append(percent(prob), style="dim")
            style = "bold cyan" if token_id == record.token_id else ""
            item.append(" " + clip(render_token(token_id)), style=style)
            candidates.append(item)
        cell = Columns(candidates, padding=(0, 2))  # wraps whole candidates, never inside one
        table.add_row(
            str(n),
            Text(clip(render_token(record.token_id)), style="bold cyan"),
            percent(record.prob),
            cell,
        )
    return table


# -- tokenize, info, models -----------------------------------------------------------------

_TOKEN_STYLES = ("on #264653", "on #2a6f5f", "on #5c4d7d", "on #7a4e3b")


def tokens_view(pieces: Sequence[tuple[int, str]], total_bytes: int) -> Table:
    """The text with each token on its own background, then a table of ids and tokens."""
    text = Text()
    for i, (_, rendered) in enumerate(pieces):
        text.append(rendered, style=_TOKEN_STYLES[i % len(_TOKEN_STYLES)])
    grid = Table.grid()
    grid.add_row(text)
    per = total_bytes / len(pieces) if pieces else 0.0
    grid.add_row(
        Text(f"{len(pieces)} tokens, {total_bytes} bytes, {per:.2f} bytes/token", style="dim")
    )
    return grid


def info_panel(name: str, meta: dict[str, Any], parameters: int, metrics: list[dict]) -> Panel:
    model = meta["model"]
    tok = meta.get("tokenizer", {})
    training = meta.get("training", {})
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    table.add_row("parameters", f"{count(parameters)} ({parameters:,})")
    table.add_row(
        "architecture",
        f"{model['n_layer']} layers × {model['n_embd']} wide, {model['n_head']} heads, "
        f"MLP ×{model['mlp_ratio']}, {model['activation']}, {model['norm']}",
    )
    table.add_row("positions", f"{model['position']}, context window {model['context_window']}")
    table.add_row(
        "tokenizer",
        f"{tok.get('type', '?')}, {tok.get('vocab_size', '?')} tokens"
        + (", tied unembedding" if model.get("tie_embeddings") else ""),
    )
    if training:
        table.add_row("corpus", escape(str(training.get("corpus", "?"))))
        table.add_row(
            "training",
            f"{training.get('steps', 0):,} steps, {count(training.get('tokens_seen', 0))} "
            f"tokens, {format_duration(training.get('elapsed_seconds', 0))}",
        )
        if training.get("val_bits_per_byte") is not None:
            table.add_row(
                "validation",
                f"loss {training['val_loss']:.3f}, "
                f"[bold green]{training['val_bits_per_byte']:.3f}[/] bits/byte",
            )
        table.add_row("evaluations", f"{len(metrics)} in metrics.jsonl")
    return Panel(table, title=f"[bold]{escape(name)}[/]", expand=False, box=box.ROUNDED)


def models_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("model", "parameters", "layers×width", "vocab", "context", "steps", "bits/byte"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(
            *(
                escape(str(row[c]))
                for c in ("name", "parameters", "shape", "vocab", "context", "steps", "bpb")
            )
        )
    return table
