"""The generation screen: the text as it streams (coloured by probability in a terminal),
the live view of each step's next-token distribution, and the per-step table after.

Draws plain records (`TokenRecord`, `Generation`); imports no torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Sequence

from rich import box
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from textgen.records import Generation, TokenRecord
from textgen.settings import SampleConfig
from textgen.ui.console import (
    live_display,
    live_ok,
    make_console,
    no_control_echo,
    notice,
    stdout_is_a_pipe,
)
from textgen.ui.style import (
    RenderToken,
    bar,
    clip,
    coloured,
    percent,
    prob_legend,
    prob_style,
    visible_controls,
)


def write_piece(out: Console, piece: str, prob: float, colour: bool) -> None:
    """A piece of generated text onto stdout (`out`), now: in a terminal with control
    characters spelled out, coloured by its probability with `colour`; elsewhere as it is."""
    if out.is_terminal:
        piece = visible_controls(piece)
    if colour:
        out.print(Text(piece, style=prob_style(prob)), end="", soft_wrap=True)
        out.file.flush()
    else:
        sys.stdout.write(piece)
        sys.stdout.flush()


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
        settings: SampleConfig,
        show_top: int,
        render_token: RenderToken,
        colour_probs: bool,
        all_steps: bool = False,
    ) -> None:
        self.all_steps = all_steps
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
        self.line_open = False  # a terminal line holds text not yet ended by a newline

    def __enter__(self) -> GenerateView:
        self._echo = contextlib.ExitStack()
        if self.show_top and self.interactive and self.single and not stdout_is_a_pipe():
            self._echo.enter_context(no_control_echo())
            self.live = live_display(self.err)
            self.live.start()
        elif self.interactive and self.single and self.prompt:
            self._show_prompt()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Stopped early (Ctrl-C): what was generated stays on the screen, on a line of its
        own, before the notice that follows."""
        if exc_type is not None:
            self._end_live(keep_last_frame=True)
            self._end_line()
        self._echo.close()

    def _end_live(self, keep_last_frame: bool = False) -> None:
        """Stop the live view. It held the text back from a terminal's stdout: print it
        now; elsewhere the text went to stdout already, and the view's last frame can stay
        (on stderr) to show where it stopped."""
        if self.live is None:
            return
        live, self.live = self.live, None
        live.transient = self.stdout_tty or not keep_last_frame
        live.stop()
        if self.stdout_tty:
            self._show_prompt()
            for piece, prob in self.pieces:
                self._write(piece, prob)

    def _end_line(self) -> None:
        """End the text's line in a terminal (a pipe gets exactly the text)."""
        if not self.line_open:
            return
        if self.stdout_tty:
            self._write("\n", 1.0)
        else:
            self.err.line()
        self.line_open = False

    def _show_prompt(self) -> None:
        shown = self.prompt if len(self.prompt) <= 400 else "…" + self.prompt[-400:]
        shown = visible_controls(shown)
        self.err.print(shown, style="dim", end="", soft_wrap=True, markup=False)
        self.err.file.flush()
        self.line_open = not shown.endswith("\n")

    def _write(self, piece: str, prob: float) -> None:
        if self.stdout_tty and piece:
            self.line_open = not piece.endswith("\n")
        write_piece(self.out, piece, prob, self.colour)

    def add(self, record: TokenRecord) -> None:
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
                    live_generation(
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

    def finish(self, generation: Generation) -> None:
        self._end_live()
        samples = generation.samples
        if not self.single:
            for i, sample in enumerate(samples):
                if self.interactive:
                    self.err.rule(f"sample {i + 1}", style="dim")
                for r in sample.tokens:
                    self._write(r.text, math.exp(r.logprob))
                if i < len(samples) - 1:
                    self._write("\n\n", 1.0)
        self._end_line()
        if self.colour:
            self.err.print(prob_legend(), soft_wrap=True)
        if self.show_top:
            if not self.interactive:
                self.err.line()  # stderr and stdout may share a log file: start a fresh line
            records = [r for r in samples[0].tokens if r.token_id is not None]
            self.err.print(top_table(records, self.render_token, self.show_top, self.all_steps))
        if self.interactive:
            reasons = {"length": "max tokens", "stop": "stop string", "end_of_text": "end of text"}
            ended = ", ".join(sorted({reasons[s.finish_reason] for s in samples}))
            tokens = sum(s.generated_tokens for s in samples)
            notice(self.err, f"{tokens} tokens · seed {generation.seed} · ended by {ended}")


def distribution(record: TokenRecord, render_token: RenderToken, temperature: float) -> Table:
    """The step's most likely candidates, each with its probability under the model (T=1)
    and in the distribution actually sampled from (after temperature and filters)."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left")
    table.add_column("candidate", no_wrap=True, max_width=16)
    table.add_column("model (T=1)", no_wrap=True)
    table.add_column(f"sampled (T={temperature:g})", no_wrap=True)
    for c in record.candidates:
        model_p = math.exp(c.logprob)
        chosen = c.token_id == record.token_id
        table.add_row(
            Text(
                ("▶ " if chosen else "  ") + clip(render_token(c.token_id)),
                style="bold cyan" if chosen else "",
            ),
            Text(bar(model_p, 10), style="blue").append(percent(model_p), style="dim"),
            Text(bar(c.prob, 10), style="green").append(percent(c.prob), style="dim"),
        )
    return table


def live_generation(
    prompt: str,
    pieces: Sequence[tuple[str, float]],
    record: TokenRecord | None,
    render_token: RenderToken,
    temperature: float,
    step: int,
) -> RenderableType:
    """The live view: the end of the text so far (the prompt dim, the generated text
    coloured by probability) above the current step's distribution."""
    budget, shown = 400, []
    for piece, prob in reversed(pieces):  # the last `budget` characters of generated text
        if budget <= 0:
            break
        shown.append((piece[-budget:], prob))
        budget -= len(piece)
    context = prompt[-budget:] if budget > 0 else ""
    cut = budget <= 0 or len(prompt) > len(context)
    text = Text(("…" if cut else "") + context, style="dim")
    text.append_text(coloured(shown[::-1]))
    parts: list[RenderableType] = [text, Text("")]
    if record is not None:
        parts.append(Text(f"step {step}: next-token distribution", style="bold"))
        parts.append(distribution(record, render_token, temperature))
    return Group(*parts)


SUMMARY_STEPS = 10  # the steps the table after the text shows, unless asked for all


def top_table(
    records: Sequence[TokenRecord], render_token: RenderToken, k: int, all_steps: bool = False
) -> Table:
    """The steps of a generation with the model's k most likely candidates at each: the
    chosen token, its probability in the distribution sampled from and under the model
    (T=1), then the candidates, each as a bar, a percentage and the token.

    A long generation is summed up by its `SUMMARY_STEPS` least likely choices (where
    sampling surprised the model most, in text order) unless `all_steps`; the caption
    says how the rest went."""
    numbered = list(enumerate(records, 1))
    shown = numbered
    if not all_steps and len(numbered) > SUMMARY_STEPS:
        surprises = sorted(numbered, key=lambda pair: pair[1].logprob)[:SUMMARY_STEPS]
        shown = sorted(surprises, key=lambda pair: pair[0])
    title = "top candidates per step"
    if len(shown) < len(numbered):
        title = f"the {len(shown)} least likely of {len(numbered)} steps (--all-steps: every one)"
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left")
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("chosen", no_wrap=True, max_width=14)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("T=1", justify="right", no_wrap=True)
    table.add_column(f"model's top {k} (T=1)", ratio=1)
    for n, record in shown:
        items = []
        for c in record.candidates[:k]:
            prob = math.exp(c.logprob)
            item = Text(bar(prob, 3), style="green")
            item.append(percent(prob), style="dim")
            style = "bold cyan" if c.token_id == record.token_id else ""
            item.append(" " + clip(render_token(c.token_id)), style=style)
            items.append(item)
        model_p = math.exp(record.logprob)
        table.add_row(
            str(n),
            Text(clip(render_token(record.token_id)), style="bold cyan"),
            percent(record.prob),
            Text(percent(model_p), style=prob_style(model_p)),
            Columns(items, padding=(0, 2)),  # wraps whole candidates, never inside one
        )
    table.caption = _choices_line(records)
    table.caption_justify = "left"
    return table


def _choices_line(records: Sequence[TokenRecord]) -> str:
    """How sampling went over all the steps, in one line."""
    if not records:
        return ""
    top = sum(1 for r in records if r.candidates and r.candidates[0].token_id == r.token_id)
    mean = sum(math.exp(r.logprob) for r in records) / len(records)
    return (
        f"the model's own first choice at {top} of {len(records)} steps; the tokens chosen "
        f"had {mean:.0%} probability on average"
    )


def prompt_notice(prompt: str, prompt_tokens: int | None, kept_tokens: int) -> str | None:
    """What to tell the user about how the prompt was read, if anything: cut to the
    context window (`prompt_tokens` None: too long to count), empty, or only whitespace."""
    if prompt_tokens is None or prompt_tokens + 1 > kept_tokens:
        size = (
            f"{prompt_tokens} tokens"
            if prompt_tokens is not None
            else f"{len(prompt):,} characters"
        )
        return f"the prompt is {size}; kept its last {kept_tokens} tokens (the context window)"
    if not prompt:
        return "no prompt: writing from the start of a text"
    if not prompt.strip():
        return "the prompt is only whitespace: continuing it"
    return None
