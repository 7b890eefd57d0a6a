"""`textgen info` (one model) and `textgen models` (the models folder). Neither loads
weights: both read config.json, metrics.jsonl and the safetensors header alone. What was
asked for goes to stdout: a panel or a table in a terminal, plain text in a pipe, JSON
with --json."""

from __future__ import annotations

import sys

from textgen.cli.options import (
    JsonOption,
    ModelOption,
    OverwriteOption,
    SaveOption,
    check_picture,
    console,
    resolve,
    save_picture,
)
from textgen.errors import TextgenError
from textgen.ui import jsonout
from textgen.ui import models as screens
from textgen.ui.console import make_console, notice


def info(
    model: ModelOption = "default",
    json_output: JsonOption = False,
    save: SaveOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Architecture, parameter count, tokenizer and training summary of a model; --save
    draws its loss curves."""
    from textgen.store import folder as model_folder
    from textgen.store.metrics import read_metrics, read_samples

    check_picture(save, overwrite)
    folder = resolve(model)
    meta = model_folder.read_config(folder)
    parameters = model_folder.count_parameters(folder)
    metrics, samples = read_metrics(folder), read_samples(folder)
    if json_output:
        jsonout.write(jsonout.model_info(str(folder), meta, parameters, metrics, samples))
    else:
        rows = screens.info_rows(meta, parameters, metrics, samples)
        if sys.stdout.isatty():
            make_console(stderr=False).print(screens.info_panel(model, rows, metrics))
        else:
            sys.stdout.write(screens.info_text(model, rows))
    if save is not None:
        if not metrics:
            raise TextgenError(f"{folder} has no evaluations in metrics.jsonl to draw")
        from textgen.ui.pictures import loss_picture

        save_picture(loss_picture(metrics, folder.name), save)


def models(json_output: JsonOption = False) -> None:
    """List the models under models/ (or $TEXTGEN_HOME), and say where that is."""
    from textgen.store import folder as model_folder

    home = model_folder.models_home()
    summaries, problems = model_folder.survey(home)
    for problem in problems:
        notice(console, problem, warning=True)
    notice(console, model_folder.where_models_live())
    if json_output:
        for summary in summaries:
            jsonout.write(summary)
    elif not summaries:
        notice(console, "no models there yet: try `textgen train --model NAME`")
    elif sys.stdout.isatty():
        make_console(stderr=False).print(screens.models_table(summaries))
    else:
        sys.stdout.write(screens.models_text(summaries))
