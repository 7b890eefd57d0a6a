"""The screens about models as a whole: `textgen info` (one model) and `textgen models`
(the models folder), as a panel or a table in a terminal and as plain text in a pipe.
Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from textgen.ui.style import one_line
from textgen.ui.training import LossCurve
from textgen.units import count, format_duration


def info_rows(
    meta: dict[str, Any], parameters: int, metrics: list[dict], samples: Sequence[dict] = ()
) -> list[tuple[str, str]]:
    """What `info` says of a model, as (label, value) rows of plain text: with the samples
    it wrote as it trained, the first and the last."""
    model, tok, training = meta["model"], meta.get("tokenizer", {}), meta.get("training", {})
    rows = [
        ("parameters", f"{count(parameters)} ({parameters:,})"),
        (
            "architecture",
            f"{model['n_layer']} layers × {model['n_embd']} wide, {model['n_head']} heads, "
            f"MLP ×{model['mlp_ratio']}, {model['activation']}, {model['norm']}",
        ),
        ("positions", f"{model['position']}, context window {model['context_window']}"),
        (
            "tokenizer",
            f"{tok.get('type', '?')}, {tok.get('vocab_size', '?')} tokens"
            + (", tied unembedding" if model.get("tie_embeddings") else ""),
        ),
    ]
    if training:
        rows.append(("corpus", str(training.get("corpus", "?"))))
        rows.append(
            (
                "training",
                f"{training.get('steps', 0):,} steps, {count(training.get('tokens_seen', 0))} "
                f"tokens, {format_duration(training.get('elapsed_seconds', 0))}",
            )
        )
        if training.get("val_bits_per_byte") is not None:
            rows.append(
                (
                    "validation",
                    f"loss {training['val_loss']:.3f}, "
                    f"{training['val_bits_per_byte']:.3f} bits/byte",
                )
            )
        rows.append(("evaluations", f"{len(metrics)} in metrics.jsonl"))
    if samples:
        shown = [samples[0], samples[-1]] if len(samples) > 1 else [samples[0]]
        for label, sample in zip(("first sample", "last sample"), shown, strict=False):
            rows.append((label, f"step {sample['step']:,}: {_sample_line(sample)}"))
    return rows


SAMPLE_CHARACTERS = 100  # of a sample in `info`'s one line


def _sample_line(sample: dict) -> str:
    """A sample's prompt and text on one line, newlines as ↵, cut to SAMPLE_CHARACTERS."""
    text = one_line(sample["prompt"] + sample["text"])
    return text if len(text) <= SAMPLE_CHARACTERS else text[: SAMPLE_CHARACTERS - 1] + "…"


def info_panel(name: str, rows: Sequence[tuple[str, str]], metrics: list[dict]) -> Panel:
    """The info rows in a panel, with the loss curve below them."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    for label, value in rows:
        table.add_row(label, Text(value, style="bold green" if label == "validation" else ""))
    body = Group(table, Text(""), LossCurve(metrics)) if LossCurve.drawable(metrics) else table
    return Panel(body, title=f"[bold]{escape(name)}[/]", expand=False, box=box.ROUNDED)


def info_text(name: str, rows: Sequence[tuple[str, str]]) -> str:
    """The info rows as `label: value` lines, for a pipe."""
    return "".join(f"{label}: {value}\n" for label, value in [("model", name), *rows])


MODEL_COLUMNS = ("model", "parameters", "layers×width", "vocab", "context", "steps", "bits/byte")


def _model_cells(summary: dict[str, Any]) -> tuple[str, ...]:
    bpb = summary["val_bits_per_byte"]
    return (
        summary["name"],
        count(summary["parameters"]),
        f"{summary['n_layer']}×{summary['n_embd']}",
        str(summary["vocab_size"]),
        str(summary["context_window"]),
        f"{summary['steps']:,}",
        f"{bpb:.3f}" if bpb is not None else "-",
    )


def models_table(summaries: Sequence[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in MODEL_COLUMNS:
        table.add_column(column, justify="left" if column == "model" else "right")
    for summary in summaries:
        table.add_row(*(escape(cell) for cell in _model_cells(summary)))
    return table


def models_text(summaries: Sequence[dict[str, Any]]) -> str:
    """Tab-separated, a header line first, for `grep`, `cut` and `sort`."""
    lines = ["\t".join(MODEL_COLUMNS)] + ["\t".join(_model_cells(s)) for s in summaries]
    return "".join(line + "\n" for line in lines)
