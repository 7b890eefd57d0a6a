"""`textgen export`: a trained model in the formats other tools run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from textgen.cli.options import ModelOption, console, resolve
from textgen.errors import SettingError
from textgen.ui.console import notice

LOADING = {
    "hf": "load it with transformers: AutoModelForCausalLM.from_pretrained({out!r}) and "
    "AutoTokenizer.from_pretrained({out!r})",
    "gguf": "run it with llama.cpp: llama-cli -m {out} -p 'The'",
}


def export(
    out: Annotated[
        Path,
        typer.Argument(
            metavar="OUT", help="Where to write: a folder (transformers) or a .gguf file."
        ),
    ],
    model: ModelOption = "default",
    form: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="hf (a Hugging Face transformers folder) or gguf (llama.cpp, ollama). "
            "Default: gguf for a .gguf file, else hf.",
            show_default=False,
        ),
    ] = None,
    dtype: Annotated[
        str, typer.Option(help="The weights' precision: float32, float16 or bfloat16 (hf only).")
    ] = "float32",
    overwrite: Annotated[bool, typer.Option(help="Replace a previous export at OUT.")] = False,
) -> None:
    """Export a trained model for other tools: Hugging Face transformers (a folder) or
    llama.cpp and ollama (a GGUF file). The exported model computes exactly what the
    textgen model does; one that has no exact equivalent there is refused."""
    from textgen.model.export import FORMATS, check_destination
    from textgen.model.export import export as write_export

    form = form or ("gguf" if out.suffix.lower() == ".gguf" else "hf")
    if form not in FORMATS:
        raise SettingError(f"--format: use one of {', '.join(FORMATS)}")
    check_destination(out, form, overwrite)

    from textgen.model.folder import load

    lm = load(resolve(model))
    target = write_export(lm, out, form, dtype)
    notice(console, f"wrote {out}: {target.name} architecture, {dtype}")
    notice(console, LOADING[form].format(out=str(out)))
