"""The inspection screens: token boundaries, surprisal, attention patterns and evaluation
figures (`textgen tokenize`, `score`, `attention`, `eval`).

Each function returns a renderable and never prints; the CLI decides where it goes.
Inputs are plain numbers and strings; imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.columns import Columns
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.markup import escape
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from textgen.records import EvalResult
from textgen.ui.console import live_ok, progress_bar
from textgen.ui.style import clip, coloured, shade, surprisal_legend
from textgen.units import plural

# Backgrounds that tell neighbouring tokens apart, picked from the colours each kind of
# terminal has: colours of the 256-colour palette (exact there and in truecolor), and the
# eight standard ones, where any other colour would be rounded onto one of them.
_TOKEN_STYLES = {
    "palette": (
        "white on color(24)",
        "white on color(29)",
        "white on color(90)",
        "white on color(94)",
    ),
    "standard": ("white on blue", "white on magenta", "black on cyan", "white on red"),
}


def compression_line(stats: dict[str, Any]) -> str:
    return (
        f"{plural(stats['tokens'], 'token')}, {plural(stats['bytes'], 'byte')}, "
        f"{plural(stats['words'], 'word')} · "
        f"{stats['bytes_per_token']:.2f} bytes/token · {stats['tokens_per_word']:.2f} tokens/word"
    )


class TokenBoundaries:
    """Text with each token on a background of its own, in the colours the terminal has."""

    def __init__(self, rendered: Sequence[str]) -> None:
        self.rendered = rendered

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        standard = console.color_system in ("standard", "windows")
        styles = _TOKEN_STYLES["standard" if standard else "palette"]
        text = Text()
        for i, piece in enumerate(self.rendered):
            text.append(piece, style=styles[i % len(styles)])
        yield text


def tokens_view(rendered: Sequence[str], stats: dict[str, Any]) -> Table:
    """The text with each token on its own background, then the compression figures."""
    grid = Table.grid()
    grid.add_row(TokenBoundaries(rendered))
    grid.add_row(Text(compression_line(stats), style="dim"))
    return grid


class TokenProgress:
    """A progress bar over tokens on stderr in a terminal; nothing otherwise."""

    def __init__(self, console: Console, label: str) -> None:
        self.progress = None
        if live_ok(console):
            self.progress = progress_bar(
                console,
                TextColumn(label),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,}"),
                TimeElapsedColumn(),
            )
            self.task = self.progress.add_task(label, total=None)

    def __enter__(self) -> TokenProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=total)


def eval_table(corpus: str, result: EvalResult) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    table.add_row("corpus", escape(corpus))
    table.add_row("tokens", f"{result.tokens:,} ({result.bytes:,} bytes)")
    table.add_row("loss", f"{result.loss:.4f}")
    table.add_row("bits per byte", f"[bold green]{result.bits_per_byte:.4f}[/]")
    table.add_row("perplexity", f"{result.perplexity:.2f}")
    return table


def surprisal_view(pieces: Sequence[tuple[str, float]], result: EvalResult) -> Group:
    """The scored text coloured by each token's probability, a legend and the totals."""
    totals = Text(score_line(result), style="bold")
    return Group(coloured(pieces), Text(""), surprisal_legend(), totals)


def score_line(result: EvalResult) -> str:
    return (
        f"{plural(result.tokens, 'token')}, {plural(result.bytes, 'byte')} · "
        f"{result.bits_per_byte:.3f} bits/byte · perplexity {result.perplexity:.2f} · "
        f"mean surprisal {result.loss / math.log(2):.2f} bits/token"
    )


def attention_heatmap(
    pattern: Sequence[Sequence[float]], labels: Sequence[str], first_index: int, title: str
) -> Group:
    """Queries down, keys across; each cell shaded by the attention weight (the square
    root, so small weights stay visible). Future keys are masked: blank."""
    n = len(labels)
    table = Table(box=None, padding=0, show_header=True)
    table.add_column("query ╲ key", no_wrap=True, justify="right", max_width=18)
    for j in range(n):
        table.add_column(f"{(first_index + j) % 100:>2}", no_wrap=True, width=2)
    for i in range(n):
        cells: list[Text | str] = []
        for j in range(n):
            if j > i:
                cells.append("")
            else:
                chars, colour = shade(pattern[i][j])
                cells.append(Text(chars, style=f"{colour}"))
        table.add_row(Text(f"{clip(labels[i], 12)} {first_index + i:>3}"), *cells)
    return Group(Text(title, style="bold"), table)


def attention_grid(
    patterns: Sequence[Sequence[Sequence[float]]],
    labels: Sequence[str],
    first_index: int,
    layer: int,
) -> Group:
    """All heads of a layer side by side, one character per cell."""
    maps = []
    for head, pattern in enumerate(patterns):
        lines = Text(f"head {head}\n", style="bold")
        for i in range(len(labels)):
            for j in range(len(labels)):
                chars, colour = shade(pattern[i][j]) if j <= i else (" ", "")
                lines.append(chars[0], style=colour)
            lines.append("\n")
        maps.append(lines)
    keys = Text(
        "tokens " + " ".join(f"{first_index + i}:{clip(t, 10)}" for i, t in enumerate(labels)),
        style="dim",
    )
    return Group(
        Text(f"layer {layer}: all heads (rows: queries, columns: keys)", style="bold"),
        Columns(maps, padding=(0, 3)),
        keys,
    )
