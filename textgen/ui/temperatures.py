"""Several temperatures side by side (`generate --temperature 0.2,0.8,1.5`): one sample
each from the same prompt and seed, so the samples differ by the temperature alone.

- stdout a terminal wide enough: one column per temperature, filled as each streams;
  narrower: one sample after another, each under a rule naming its temperature;
- stdout a pipe or a file: the texts alone, separated by a blank line;
- with --show-top: the first step's distribution at each temperature (the same context
  for all, so the columns differ only by how the temperature reshapes it), on stderr.

Draws plain records (`TokenRecord`, `Generation`); imports no torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from textgen.records import Generation, TokenRecord
from textgen.ui.console import live_ok, make_console, notice
from textgen.ui.generation import write_piece
from textgen.ui.style import (
    RenderToken,
    bar,
    clip,
    coloured,
    percent,
    prob_legend,
    visible_controls,
)

MIN_COLUMN = 24  # characters a column of text needs to read as text
GAP = 3  # between columns


def parse_temperatures(value: str) -> list[float]:
    """'0.8' -> [0.8]; '0.2,0.8,1.5' -> [0.2, 0.8, 1.5]. A part that is not a number is
    a ValueError naming it (the range is SampleConfig's to check)."""
    parts = [p.strip() for p in value.split(",")]
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(
                f"{part!r} is not a number; give one temperature (0.8) or several, "
                "comma-separated (0.2,0.8,1.5)"
            ) from None
    return values


def label(temperature: float) -> str:
    return f"T={temperature:g}"


class TemperatureView:
    """Shows one sample per temperature as they stream, one after another."""

    def __init__(
        self,
        console: Console,
        prompt: str,
        temperatures: Sequence[float],
        show_top: int,
        render_token: RenderToken,
        colour_probs: bool,
    ) -> None:
        self.err, self.prompt, self.temperatures = console, prompt, list(temperatures)
        self.show_top, self.render_token = show_top, render_token
        self.out = make_console(stderr=False)
        self.stdout_tty = self.out.is_terminal
        self.colour = colour_probs and self.stdout_tty and "NO_COLOR" not in os.environ
        self.interactive = live_ok(console)
        width = len(self.temperatures) * (MIN_COLUMN + GAP)
        self.side_by_side = self.stdout_tty and live_ok(self.out) and self.out.width >= width
        self.pieces: list[list[tuple[str, float]]] = [[] for _ in self.temperatures]
        self.first_steps: list[TokenRecord | None] = [None for _ in self.temperatures]
        self.current = -1
        self.live: Live | None = None

    def __enter__(self) -> TemperatureView:
        if self.interactive and self.prompt:
            shown = self.prompt if len(self.prompt) <= 400 else "…" + self.prompt[-400:]
            self.err.print(Text(shown, style="dim"), soft_wrap=True)
        if self.side_by_side:
            self.live = Live(
                self._columns(), console=self.out, refresh_per_second=12, redirect_stdout=False
            )
            self.live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Stopped early (Ctrl-C): what was written so far stays on the screen."""
        if not self._stop_live() and exc_type is not None and self.stdout_tty and self.current >= 0:
            self._write("\n", 1.0)

    def _stop_live(self) -> bool:
        """End the side-by-side columns, their last frame left on the screen; whether
        they were on."""
        if self.live is None:
            return False
        self.live.update(self._columns(), refresh=True)
        self.live.stop()
        self.live = None
        return True

    def start(self, index: int) -> None:
        """The sample at `temperatures[index]` begins: under a rule naming its temperature
        on stderr (a terminal's), after a blank line on stdout."""
        self.current = index
        if self.live is not None:
            return
        if index > 0:
            self._write("\n\n", 1.0)
        if self.interactive:
            self.err.rule(label(self.temperatures[index]), style="dim")

    def add(self, record: TokenRecord) -> None:
        prob = math.exp(record.logprob)
        index = self.current
        if record.token_id is not None and self.first_steps[index] is None:
            self.first_steps[index] = record
        self.pieces[index].append((record.text, prob))
        if self.live is not None:
            self.live.update(self._columns())
        elif record.text:
            self._write(record.text, prob)

    def finish(self, generations: Sequence[Generation]) -> None:
        if not self._stop_live() and self.stdout_tty and self.current >= 0:
            self._write("\n", 1.0)
        self.current = -1
        if self.colour:
            self.err.print(prob_legend(), soft_wrap=True)
        if self.show_top and all(self.first_steps):
            if not self.interactive:
                self.err.line()
            steps = [s for s in self.first_steps if s is not None]
            for part in table_parts(len(steps), self.err.width):  # as many as fit a width
                self.err.print(
                    first_step_table(
                        steps[part],
                        self.temperatures[part],
                        self.render_token,
                        self.show_top,
                        self.err.width,
                    )
                )
        if self.interactive:
            tokens = sum(g.samples[0].generated_tokens for g in generations)
            seed = generations[0].seed if generations else None
            notice(
                self.err,
                f"{len(generations)} samples, one a temperature · {tokens} tokens · seed {seed}",
            )

    def _write(self, piece: str, prob: float) -> None:
        write_piece(self.out, piece, prob, self.colour)

    def _columns(self) -> RenderableType:
        table = Table(box=box.SIMPLE_HEAD, padding=(0, GAP // 2 + 1), expand=True)
        for t in self.temperatures:
            table.add_column(label(t), ratio=1, overflow="fold")
        cells = [
            coloured(p) if self.colour else Text(visible_controls("".join(x for x, _ in p)))
            for p in self.pieces
        ]
        table.add_row(*cells)
        return Group(table)


PERCENT_CELL = 8  # a percentage, the chosen mark and padding


def table_parts(count: int, width: int) -> list[slice]:
    """The temperatures' columns in tables that fit `width`: all in one if they do (with
    percentages alone at least), else as many a table as fit."""
    per_table = max(1, (width - 12) // PERCENT_CELL)  # less the token and T=1 columns
    return [slice(i, i + per_table) for i in range(0, count, per_table)]


BAR = 8  # characters of a probability bar
BAR_CELL = BAR + 9  # a bar, its percentage, the chosen mark and padding


def first_step_table(
    steps: Sequence[TokenRecord],
    temperatures: Sequence[float],
    render_token: RenderToken,
    k: int,
    width: int = 200,
) -> Table:
    """The first step's candidates (the model's k most likely, the same for every sample:
    the same prompt) with their probability under the model (T=1) and in each
    temperature's distribution, as bars: how the temperature sharpens or flattens it.
    Narrower than `width` needs for bars: the percentages alone."""
    bars = BAR if width >= 18 + BAR_CELL * (len(temperatures) + 1) else 0
    table = Table(
        box=box.SIMPLE_HEAD,
        title="step 1: the same next-token distribution at each temperature",
        title_justify="left",
        pad_edge=bool(bars),
        collapse_padding=not bars,
    )
    table.add_column("candidate" if bars else "token", no_wrap=True, max_width=16 if bars else 7)
    table.add_column("model (T=1)" if bars else "T=1", no_wrap=True)
    for t in temperatures:
        table.add_column(label(t), no_wrap=True)
    by_temperature = [{c.token_id: c.prob for c in step.candidates} for step in steps]
    for c in steps[0].candidates[:k]:
        model_p = math.exp(c.logprob)
        row: list[RenderableType] = [
            Text(clip(render_token(c.token_id))),
            Text(bar(model_p, bars), style="blue").append(percent(model_p), style="dim"),
        ]
        for probs, step in zip(by_temperature, steps, strict=True):
            p = probs.get(c.token_id, 0.0)
            chosen = step.token_id == c.token_id
            cell = Text(bar(p, bars), style="green").append(percent(p), style="dim")
            if chosen:
                cell.append(" ◀", style="bold cyan")
            row.append(cell)
        table.add_row(*row)
    table.caption = "◀ the token each temperature's sample chose"
    table.caption_justify = "left"
    return table
