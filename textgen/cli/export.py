"""`textgen export`: a trained model in the formats other tools run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from textgen.cli.options import ModelOption, console, resolve
from textgen.export import FORMATS
from textgen.ui.console import notice

_FOLDER = next(f.name for f in FORMATS.values() if not f.is_file)
_BY_SUFFIX = ", ".join(f"{f.name} for a {f.suffix} file" for f in FORMATS.values() if f.is_file)


def export(
    out: Annotated[
        Path,
        typer.Argument(
            metavar="OUT",
            help="Where to write: "
            + " or ".join(
                f"a {f.suffix} file ({f.tool})" if f.is_file else f"a folder ({f.tool})"
                for f in FORMATS.values()
            )
            + ".",
        ),
    ],
    model: ModelOption = "default",
    form: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="; ".join(f"{f.name}: {f.summary}" for f in FORMATS.values())
            + f". Default: {_BY_SUFFIX}, else {_FOLDER}.",
            show_default=False,
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="The weights' precision: "
            + "; ".join(f"{f.precisions} ({f.name})" for f in FORMATS.values())
            + ".  [default: float32]",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a previous export at OUT.")] = False,
) -> None:
    """Export a trained model for other tools: Hugging Face transformers (a folder) or
    llama.cpp and ollama (a GGUF file). The exported model computes exactly what the
    textgen model does; one that has no exact equivalent there is refused."""
    from textgen.export import check_destination, choose_format
    from textgen.export import export as write_export

    chosen = choose_format(out, form)
    check_destination(out, chosen, overwrite)

    from textgen.store.folder import load

    lm = load(resolve(model))
    target = write_export(lm, out, chosen.name, dtype)
    notice(console, f"wrote {out}: {target.name} architecture, {dtype or chosen.dtypes[0]}")
    for line in chosen.loading.format(out=str(out), context=lm.model_config.context_window).split(
        "\n"
    ):
        notice(console, line)
