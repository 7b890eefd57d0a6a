"""The screens about models as a whole: `textgen info` (one model) and `textgen models`
(the models folder). Imports no torch.
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

from textgen.ui.style import count
from textgen.ui.training import loss_curve
from textgen.units import format_duration


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
    curve = loss_curve(metrics)
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
