"""`textgen info` (one model) and `textgen models` (the models folder). Neither loads
weights: both read config.json, metrics.jsonl and the safetensors header alone."""

from __future__ import annotations

from textgen.cli.options import ModelOption, console, resolve
from textgen.errors import TextgenError
from textgen.ui import models as screens
from textgen.ui.console import notice
from textgen.ui.style import count


def info(model: ModelOption = "default") -> None:
    """Architecture, parameter count, tokenizer and training summary of a model."""
    from textgen.model import folder as model_folder

    folder = resolve(model)
    meta = model_folder.read_config(folder)
    parameters = model_folder.count_parameters(folder)
    metrics = model_folder.read_metrics(folder)
    console.print(screens.info_panel(model, meta, parameters, metrics))


def models() -> None:
    """List the models under models/ (or $TEXTGEN_HOME)."""
    from textgen.model import folder as model_folder

    home = model_folder.models_home()
    rows = []
    for folder in sorted(p for p in home.glob("*") if (p / model_folder.CONFIG).exists()):
        try:
            meta = model_folder.read_config(folder)
            params = count(model_folder.count_parameters(folder))
        except TextgenError as exc:
            notice(console, str(exc), warning=True)
            continue
        m, training = meta["model"], meta.get("training", {})
        bpb = training.get("val_bits_per_byte")
        rows.append(
            {
                "name": folder.name,
                "parameters": params,
                "shape": f"{m['n_layer']}×{m['n_embd']}",
                "vocab": m["vocab_size"],
                "context": m["context_window"],
                "steps": f"{training.get('steps', 0):,}",
                "bpb": f"{bpb:.3f}" if bpb is not None else "-",
            }
        )
    if not rows:
        notice(console, f"no models in {home}/ yet: try `textgen train --model NAME`")
        return
    console.print(screens.models_table(rows))
