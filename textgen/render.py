"""Everything Rich: progress, tables and panels, all drawn on stderr.

stdout carries only the product (generated text), written by the CLI. Nothing here
imports torch. No colour and no live display when stderr is not a terminal or when
NO_COLOR is set.
"""

from __future__ import annotations

import math
import os
import stat
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from textgen import events, views
from textgen.config import format_duration
from textgen.views import count


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


# -- training ------------------------------------------------------------------------------


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

    def __enter__(self) -> TrainView:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_work()
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: Any) -> None:
        if isinstance(event, events.Working):
            self._working(event)
            return
        self._end_work()
        if isinstance(event, events.Notice):
            notice(self.console, event.message, event.warning)
        elif isinstance(event, events.RunStarted):
            self._started(event)
        elif isinstance(event, events.StepReport):
            self._step(event)
        elif isinstance(event, events.EvalReport):
            self._eval(event)

    def _working(self, event: Any) -> None:
        """A transient bar over the corpus bytes, in a terminal only."""
        if not self.live:
            return
        if self.work is None or self.work_task != event.task:
            self._end_work()
            self.work = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=None),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[size]}"),
                TextColumn("{task.fields[speed]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.work.start()
            self.work_task = event.task
            self.work_started = time.monotonic()
            self.work.add_task(event.task, total=max(event.total, 1), size="", speed="")
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
        parts = []
        if event.processes > 1:
            parts.append(f"data parallel over {event.processes} processes")
        if event.accumulation > 1:
            parts.append(f"gradients accumulated over {event.accumulation} micro-batches a step")
        if parts:
            notice(self.console, "; ".join(parts))
        if self.live:
            self.progress = Progress(
                TextColumn("step [bold]{task.fields[step]}[/]"),
                BarColumn(bar_width=None),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("loss [cyan]{task.fields[loss]}[/]"),
                TextColumn("{task.fields[speed]} tok/s{task.fields[mfu]}"),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=1.0, step=event.start_step, loss="-", speed="-", eta="-", mfu=""
            )

    def _step(self, event: Any) -> None:
        done = event.fraction_done
        eta = format_duration(event.elapsed * (1 - done) / done) if done > 0 else "-"
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

    def _eval(self, event: Any) -> None:
        r = event.result
        label = "final" if event.final else "eval"
        kept = "  [yellow]★ best so far, saved[/]" if event.kept and not event.final else ""
        self.console.print(
            f"[bold]{label}[/] step {event.step:,} │ train loss {event.train_loss:.3f} │ "
            f"val loss [cyan]{r.loss:.3f}[/] │ [bold green]{r.bits_per_byte:.3f}[/] bits/byte │ "
            f"{format_duration(event.elapsed)}{kept}",
            soft_wrap=True,
        )

    def summary(self, result: Any, model_name: str, metrics: Sequence[dict] = ()) -> None:
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
        title = "interrupted: checkpoint saved" if result.interrupted else "training done"
        self.console.print(Panel(table, title=title, expand=False, box=box.ROUNDED))
        curve = views.loss_curve(metrics)
        if curve is not None:
            self.console.print(curve)
        if not result.interrupted:
            notice(self.console, f'try: textgen generate "The" --model {model_name}')


# -- generation ----------------------------------------------------------------------------


# -- generation ------------------------------------------------------------------------------


def _stdout_not_a_pipe() -> bool:
    """True for a terminal or a file. A pipe (`| tee`) may well print to the same terminal
    as stderr, where a live display would tangle with the streamed text."""
    try:
        return not stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, ValueError):
        return False


class GenerateView:
    """Shows a completion as it streams.

    stdout gets the text: raw when piped, coloured by each token's probability in a
    terminal (unless turned off). With --show-top in a terminal, stderr shows a live view
    of the text and the current step's distribution; after the text, the per-step table.
    """

    def __init__(
        self,
        console: Console,
        prompt: str,
        settings: Any,
        show_top: int,
        render_token,
        colour_probs: bool,
    ) -> None:
        self.err, self.prompt, self.settings = console, prompt, settings
        self.show_top, self.render_token = show_top, render_token
        self.out = make_console(stderr=False)
        self.stdout_tty = self.out.is_terminal
        self.colour = colour_probs and self.stdout_tty and "NO_COLOR" not in os.environ
        self.interactive = live_ok(console)
        self.single = settings.num_samples == 1
        self.live: Live | None = None
        self.pieces: list[tuple[str, float]] = []
        self.steps = 0

    def __enter__(self) -> GenerateView:
        if self.show_top and self.interactive and self.single and _stdout_not_a_pipe():
            self.live = Live(console=self.err, transient=True, refresh_per_second=12)
            self.live.start()
        elif self.interactive and self.single and self.prompt:
            self._show_prompt()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def _show_prompt(self) -> None:
        shown = self.prompt if len(self.prompt) <= 400 else "…" + self.prompt[-400:]
        self.err.print(shown, style="dim", end="", soft_wrap=True, markup=False)
        self.err.file.flush()

    def _write(self, piece: str, prob: float) -> None:
        if self.colour:
            self.out.print(Text(piece, style=views.prob_style(prob)), end="", soft_wrap=True)
            self.out.file.flush()
        else:
            sys.stdout.write(piece)
            sys.stdout.flush()

    def add(self, record: Any) -> None:
        if not self.single:
            return
        prob = math.exp(record.logprob)
        self.pieces.append((record.text, prob))
        if record.token_id is not None:
            self.steps += 1
        if self.live is not None:
            if not self.stdout_tty and record.text:
                self._write(record.text, prob)
            if record.token_id is not None:
                self.live.update(
                    views.live_generation(
                        self.prompt,
                        self.pieces,
                        record,
                        self.render_token,
                        self.settings.temperature,
                        self.steps,
                    )
                )
        elif record.text:
            self._write(record.text, prob)

    def finish(self, completion: Any) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            if self.stdout_tty:  # the live view held the text back: print it now
                self._show_prompt()
                for piece, prob in self.pieces:
                    self._write(piece, prob)
        if not self.single:
            for i, records in enumerate(completion.records):
                if self.interactive:
                    self.err.rule(f"sample {i + 1}", style="dim")
                for r in records:
                    self._write(r.text, math.exp(r.logprob))
                if i < len(completion.records) - 1:
                    self._write("\n\n", 1.0)
        if not completion.texts[-1].endswith("\n"):  # end the line in a terminal, not a pipe
            if self.stdout_tty:
                self._write("\n", 1.0)
            elif self.interactive:
                self.err.line()
        if self.colour:
            self.err.print(views.prob_legend(), soft_wrap=True)
        if self.show_top:
            if not self.interactive:
                self.err.line()  # stderr and stdout may share a log file: start a fresh line
            records = [r for r in completion.records[0] if r.token_id is not None]
            self.err.print(views.top_table(records, self.render_token, self.show_top))
        if self.interactive:
            reasons = {"length": "max tokens", "stop": "stop string", "end_of_text": "end of text"}
            ended = ", ".join(sorted({reasons[r] for r in completion.finish_reasons}))
            notice(
                self.err,
                f"{sum(completion.token_counts)} tokens · seed {completion.seed} · "
                f"ended by {ended}",
            )


# -- tokenize, info, models -----------------------------------------------------------------

_TOKEN_STYLES = ("on #264653", "on #2a6f5f", "on #5c4d7d", "on #7a4e3b")


def compression_line(stats: dict[str, Any]) -> str:
    return (
        f"{stats['tokens']} tokens, {stats['bytes']} bytes, {stats['words']} words · "
        f"{stats['bytes_per_token']:.2f} bytes/token · {stats['tokens_per_word']:.2f} tokens/word"
    )


def tokens_view(rendered: Sequence[str], stats: dict[str, Any]) -> Table:
    """The text with each token on its own background, then the compression figures."""
    text = Text()
    for i, piece in enumerate(rendered):
        text.append(piece, style=_TOKEN_STYLES[i % len(_TOKEN_STYLES)])
    grid = Table.grid()
    grid.add_row(text)
    grid.add_row(Text(compression_line(stats), style="dim"))
    return grid


class TokenProgress:
    """A progress bar over tokens on stderr in a terminal; nothing otherwise."""

    def __init__(self, console: Console, total: int, label: str) -> None:
        self.progress = None
        if live_ok(console):
            self.progress = Progress(
                TextColumn(label),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.task = self.progress.add_task(label, total=total)

    def __enter__(self) -> TokenProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)


def eval_table(figures: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    table.add_row("corpus", escape(str(figures["corpus"])))
    table.add_row("tokens", f"{figures['tokens']:,} ({figures['bytes']:,} bytes)")
    table.add_row("loss", f"{figures['loss']:.4f}")
    table.add_row("bits per byte", f"[bold green]{figures['bits_per_byte']:.4f}[/]")
    table.add_row("perplexity", f"{figures['perplexity']:.2f}")
    return table


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
    curve = views.loss_curve(metrics)
    body = table if curve is None else Group(table, Text(""), curve)
    return Panel(body, title=f"[bold]{escape(name)}[/]", expand=False, box=box.ROUNDED)


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
