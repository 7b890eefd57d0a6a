"""The screens that look inside the model's layers: the logit lens (`textgen lens`),
embedding neighbours (`textgen neighbors`) and what each head does (`textgen heads`), as
Rich renderables for a terminal and as plain text lines for a pipe.

Inputs are plain records; imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from textgen.records import HeadStats, Lens, Neighbours
from textgen.ui.style import bar, clip, percent, prob_legend, prob_style

Render = Callable[[int], str]  # a token id -> a printable rendering of it


def lens_title(lens: Lens) -> str:
    shown = len(lens.token_ids)
    total = lens.first_position + shown
    cut = f" (the last {shown} of {total} positions)" if lens.first_position else ""
    return f"logit lens: the top prediction at each depth{cut}"


def _depth_name(lens: Lens, depth: int) -> str:
    name = lens.depths[depth]
    return f"{name} = output" if depth == len(lens.depths) - 1 else name


def lens_grid(lens: Lens, render: Render) -> Group:
    """Rows: depths (the last is the model's real prediction); columns: positions, headed
    by the token read there. Each cell: the token predicted next, coloured by its
    probability, underlined where it is the text's real next token."""
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="bold")
    table.add_column("depth ╲ reads", style="dim", no_wrap=True)
    for token_id in lens.token_ids:
        table.add_column(
            Text(clip(render(token_id), 8)), no_wrap=True, max_width=9, overflow="ellipsis"
        )
    following = lens.token_ids[1:]
    for depth, row in enumerate(lens.top):
        cells = []
        for position, candidates in enumerate(row):
            best = candidates[0]
            style = prob_style(best.prob)
            if position < len(following) and best.token_id == following[position]:
                style += " underline"
            cells.append(Text(clip(render(best.token_id), 8), style=style))
        table.add_row(_depth_name(lens, depth), *cells)
    note = Text("underlined: the text's real next token", style="dim")
    return Group(Text(lens_title(lens), style="bold"), table, prob_legend("probability"), note)


def lens_top(lens: Lens, render: Render) -> Table:
    """The candidates at the last position, at each depth, with their probabilities."""
    last = len(lens.token_ids) - 1
    table = Table(
        box=None,
        padding=(0, 2),
        title=f"after {render(lens.token_ids[last])!s}: candidates at each depth",
        title_justify="left",
        title_style="bold",
    )
    table.add_column("depth", style="dim", no_wrap=True)
    table.add_column("candidates, most likely first")
    for depth, row in enumerate(lens.top):
        line = Text()
        for candidate in row[last]:
            line.append(clip(render(candidate.token_id), 12), style=prob_style(candidate.prob))
            line.append(f"{percent(candidate.prob)}  ", style="dim")
        table.add_row(_depth_name(lens, depth), line)
    return table


def lens_text(lens: Lens, render: Render) -> str:
    """Plain text for a pipe: a header line of the tokens read, then per depth its
    predictions (token and probability), tab-separated."""
    lines = ["depth\t" + "\t".join(render(i) for i in lens.token_ids)]
    for depth, row in enumerate(lens.top):
        cells = (f"{render(c[0].token_id)} {c[0].prob:.3f}" for c in row)
        lines.append(f"{lens.depths[depth]}\t" + "\t".join(cells))
    return "\n".join(lines) + "\n"


def describe_terms(found: Neighbours, render: Render) -> str:
    """How each word of the query was read: '"king" = ␣king', or the mean of its tokens."""
    parts = []
    for n, term in enumerate(found.terms):
        sign = "" if n == 0 and term.sign > 0 else ("+ " if term.sign > 0 else "− ")
        tokens = " ".join(render(i) for i in term.token_ids)
        how = (
            f"the mean of {len(term.token_ids)} tokens {tokens}"
            if len(term.token_ids) > 1
            else tokens
        )
        parts.append(f"{sign}{term.text!r} = {how}")
    return " ".join(parts)


def neighbours_view(found: Neighbours, render: Render) -> Group:
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("token", no_wrap=True, max_width=24, overflow="ellipsis")
    table.add_column("cosine", justify="right")
    table.add_column("", no_wrap=True)
    for rank, neighbour in enumerate(found.neighbours, 1):
        shown = max(neighbour.similarity, 0.0)
        table.add_row(
            str(rank),
            render(neighbour.token_id),
            f"{neighbour.similarity:+.3f}",
            Text(bar(shown, 12), style="cyan"),
        )
    heading = Text("nearest embeddings to ", style="bold")
    heading.append(describe_terms(found, render), style="bold cyan")
    return Group(heading, table)


def neighbours_text(found: Neighbours, render: Render) -> str:
    return "".join(f"{render(n.token_id)}\t{n.similarity:.4f}\n" for n in found.neighbours)


_HEAD_COLUMNS = (  # (header, statistic, as a share)
    ("entropy", "entropy_bits", False),
    ("spread", "spread", True),
    ("prev", "previous", True),
    ("first", "first", True),
    ("same", "same_token", True),
    ("induct", "induction", True),
)


def _figure(stats: HeadStats, name: str, share: bool) -> str:
    value = getattr(stats, name)
    return percent(value).strip() if share else f"{value:.2f}"


def heads_table(heads: Sequence[HeadStats], sample: str) -> Group:
    """One row per layer and head: its statistics, and its label where one fits."""
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="bold")
    table.add_column("layer", justify="right")
    table.add_column("head", justify="right")
    for header, _, _ in _HEAD_COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("label", no_wrap=True)
    for stats in heads:
        label = Text(stats.label or "·", style="bold cyan" if stats.label else "dim")
        figures = [_figure(stats, name, share) for _, name, share in _HEAD_COLUMNS]
        table.add_row(str(stats.layer), str(stats.head), *figures, label)
    title = Text(f"attention heads over {sample}", style="bold")
    key = Text(
        "entropy: bits · spread: entropy / its largest · prev, first, same, induct: "
        "attention on the previous token, the first position, earlier same tokens, "
        "the tokens after them",
        style="dim",
    )
    return Group(title, table, key)


def heads_text(heads: Sequence[HeadStats]) -> str:
    header = "layer\thead\t" + "\t".join(name for _, name, _ in _HEAD_COLUMNS) + "\tlabel\n"
    rows = (
        f"{s.layer}\t{s.head}\t"
        + "\t".join(f"{getattr(s, name):.4f}" for _, name, _ in _HEAD_COLUMNS)
        + f"\t{s.label or '-'}\n"
        for s in heads
    )
    return header + "".join(rows)
