"""Views into the model, drawn with Rich: probability colouring, the distribution of each
step, surprisal, attention heatmaps and loss curves.

Each function returns a renderable and never prints; `textgen.render` decides where
(stderr, or stdout for the product) and whether colour is allowed. Nothing here imports
torch: the inputs are plain numbers and strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from rich import box
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

_BLOCKS = " ▏▎▍▌▋▊▉█"


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


def percent(p: float) -> str:
    """0.423 -> ' 42%', 0.004 -> ' <1%'."""
    return " <1%" if 0 < p < 0.005 else f"{p:4.0%}"


def clip(text: str, width: int = 12) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# Probability bands, most likely first: (lower bound, style, legend label).
PROB_BANDS = [
    (0.5, "bold green", "≥50%"),
    (0.2, "green3", "20–50%"),
    (0.05, "yellow", "5–20%"),
    (0.01, "dark_orange", "1–5%"),
    (0.0, "bold red", "<1%"),
]

RenderToken = Callable[[int], str]


def prob_style(prob: float) -> str:
    return next(style for bound, style, _ in PROB_BANDS if prob >= bound)


def prob_legend(title: str = "model probability of each token") -> Text:
    legend = Text(f"{title}: ", style="dim")
    for _, style, label in PROB_BANDS:
        legend.append("■ ", style=style)
        legend.append(label + "  ", style="dim")
    return legend


def surprisal_legend() -> Text:
    legend = Text("surprisal, bits (−log₂ p): ", style="dim")
    for bound, style, _ in PROB_BANDS:
        label = f"<{-math.log2(bound):.1f}" if bound > 0 else f"≥{-math.log2(0.01):.1f}"
        legend.append("■ ", style=style)
        legend.append(label + "  ", style="dim")
    return legend


def coloured(pieces: Sequence[tuple[str, float]]) -> Text:
    """Text whose pieces are coloured by a probability: [(text, prob), ...]."""
    text = Text()
    for piece, prob in pieces:
        text.append(piece, style=prob_style(prob))
    return text


# -- the distribution of one step ------------------------------------------------------------


def distribution(record: Any, render_token: RenderToken, temperature: float) -> Table:
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
    record: Any | None,
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


def top_table(records: Sequence[Any], render_token: RenderToken, k: int) -> Table:
    """One row per generated token: the chosen token, its probability in the distribution
    sampled from and under the model (T=1), then the model's k most likely candidates,
    each as a bar, a percentage and the token. Candidates wrap in narrow terminals."""
    table = Table(box=box.SIMPLE_HEAD, title="top candidates per step", title_justify="left")
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("chosen", no_wrap=True, max_width=14)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("T=1", justify="right", no_wrap=True)
    table.add_column(f"model's top {k} (T=1)", ratio=1)
    for n, record in enumerate(records, 1):
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
    return table


# -- scoring ------------------------------------------------------------------------------


def surprisal_view(pieces: Sequence[tuple[str, float]], summary: dict[str, Any]) -> Group:
    """The scored text coloured by each token's probability, a legend and the totals."""
    totals = Text(score_line(summary), style="bold")
    return Group(coloured(pieces), Text(""), surprisal_legend(), totals)


def score_line(summary: dict[str, Any]) -> str:
    return (
        f"{summary['tokens']} tokens, {summary['bytes']} bytes · "
        f"{summary['bits_per_byte']:.3f} bits/byte · perplexity {summary['perplexity']:.2f} · "
        f"mean surprisal {summary['mean_surprisal_bits']:.2f} bits/token"
    )


# -- attention ------------------------------------------------------------------------------

_SHADES = " ░▒▓█"


def _shade(weight: float) -> tuple[str, str]:
    """A character and a background for an attention weight in [0, 1]."""
    level = min(len(_SHADES) - 1, int(math.sqrt(max(weight, 0.0)) * (len(_SHADES) - 1) + 0.5))
    grey = int(40 + 215 * math.sqrt(max(weight, 0.0)))
    return _SHADES[level] * 2, f"rgb({grey // 3},{grey // 2},{grey})"


def attention_heatmap(
    pattern: Sequence[Sequence[float]], labels: Sequence[str], first_index: int, title: str
) -> Table:
    """Queries down, keys across; each cell shaded by the attention weight (the square
    root, so small weights stay visible). Future keys are masked: blank."""
    n = len(labels)
    table = Table(box=None, padding=0, show_header=True)
    table.add_column("query", no_wrap=True, justify="right", max_width=18)
    for j in range(n):
        table.add_column(f"{(first_index + j) % 100:>2}", no_wrap=True, width=2)
    for i in range(n):
        cells: list[Text | str] = []
        for j in range(n):
            if j > i:
                cells.append("")
            else:
                chars, colour = _shade(pattern[i][j])
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
                chars, colour = _shade(pattern[i][j]) if j <= i else (" ", "")
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


# -- training curves ------------------------------------------------------------------------


def loss_curve(metrics: Sequence[dict[str, Any]], width: int = 60, height: int = 10) -> Text | None:
    """Train and validation loss against steps, drawn in characters. None with < 2 points."""
    points = [m for m in metrics if m.get("val_loss") is not None]
    if len(points) < 2:
        return None
    series = {
        "train": (
            [m["step"] for m in points if m.get("train_loss") is not None],
            [m["train_loss"] for m in points if m.get("train_loss") is not None],
        ),
        "val": ([m["step"] for m in points], [m["val_loss"] for m in points]),
    }
    values = series["train"][1] + series["val"][1]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    first, last = points[0]["step"], points[-1]["step"]
    steps = (last - first) or 1
    grid = [[" "] * width for _ in range(height)]
    styles = [[""] * width for _ in range(height)]
    for name, mark, style in (("train", "•", "cyan"), ("val", "◆", "magenta")):
        xs, ys = series[name]
        for x, y in zip(xs, ys, strict=True):
            col = round((x - first) / steps * (width - 1))
            row = height - 1 - round((y - low) / span * (height - 1))
            grid[row][col], styles[row][col] = mark, style
    text = Text()
    for r in range(height):
        label = f"{high:6.2f} ┤" if r == 0 else f"{low:6.2f} ┤" if r == height - 1 else "       │"
        text.append(label, style="dim")
        for c in range(width):
            text.append(grid[r][c], style=styles[r][c])
        text.append("\n")
    text.append("       └" + "─" * width + "\n", style="dim")
    text.append(f"        step {first:,}".ljust(width - 4) + f"{last:,}\n", style="dim")
    text.append("        • train loss  ", style="cyan")
    text.append("◆ validation loss", style="magenta")
    return text
