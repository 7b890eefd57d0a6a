"""What the command modules share: the stderr console, common options, and reading
prompts and option values. Imports no torch."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from textgen.errors import SettingError, TextgenError
from textgen.settings import check_vocab_size
from textgen.ui.console import make_console
from textgen.units import parse_count

T = TypeVar("T")

console = make_console()

ModelOption = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Model name (under models/) or a folder path like ./my-model."
    ),
]
DeviceOption = Annotated[
    str, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")
]
# the filters of sampling, as generate and write take them
TopKOption = Annotated[int | None, typer.Option(help="Sample from the k most likely only.")]
TopPOption = Annotated[
    float | None, typer.Option(help="Sample from the smallest set reaching probability p.")
]
MinPOption = Annotated[
    float | None, typer.Option(help="Drop tokens below min-p × the top probability.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
FieldOption = Annotated[
    list[str] | None,
    typer.Option(
        "--field",
        help="For datasets (.jsonl, .csv, .tsv, .parquet, also .gz): the field of each record "
        "that holds its text (repeatable: joined by a blank line).  [default: text]",
        metavar="NAME",
        show_default=False,
    ),
]
TemplateOption = Annotated[
    str | None,
    typer.Option(
        help='For datasets: each record\'s text from its fields, e.g. "{title}\\n\\n{body}" '
        "(\\n and \\t are understood).",
        metavar="TEXT",
        show_default=False,
    ),
]


def corpus_reading(fields: list[str] | None, template: str | None):  # noqa: ANN201 - Reading
    """How a dataset's records read, from --field and --template (torch-free)."""
    from textgen.text.structured import Reading

    try:
        return Reading.of(fields, None if template is None else unescape(template))
    except TextgenError as exc:
        raise SettingError(str(exc)) from None


CorpusArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Text files, folders, glob patterns, or - for stdin. "
        "None: the built-in corpus (Python's documentation).",
        show_default=False,
        metavar="CORPUS",
    ),
]
SaveOption = Annotated[
    Path | None,
    typer.Option(
        "--save",
        metavar="FILE",
        help="Also draw it as a picture: FILE.png or FILE.svg (needs textgen-cli[plot]).",
        show_default=False,
    ),
]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace the file --save (or --html) names.")
]
VocabSizeOption = Annotated[
    str | None,
    typer.Option(
        help="Tokenizer vocabulary, e.g. 2048 or 4k (k = 1,000). Default: sized to the corpus."
    ),
]


def read_text_argument(text: str | None) -> str:
    """`-`, or no argument with stdin not a terminal, reads stdin (one trailing newline
    dropped, as `echo` adds it). No argument at a terminal is the empty text."""
    if text == "-" or (text is None and not sys.stdin.isatty()):
        data = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        return data[:-1] if data.endswith("\n") else data
    return text or ""


def check_picture(save: Path | None, overwrite: bool) -> None:
    """--save's file: a .png or .svg, not replaced unasked, matplotlib installed."""
    if save is not None:
        from textgen.ui.pictures import check_picture_path

        check_picture_path(save, overwrite)


def save_picture(figure: object, save: Path) -> None:
    from textgen.ui.console import notice
    from textgen.ui.pictures import save_figure

    save_figure(figure, save)
    notice(console, f"saved the picture to {save}")


# The options whose names are not their setting's (`textgen.settings`) spelled as a flag.
OPTION_NAMES = {
    "time_budget": "--time",
    "learning_rate": "--lr",
    "save_every_steps": "--save-every",
    "save_every_seconds": "--save-every",
    "weight_decay": "weight decay",  # no option: a resumed run's saved setting
}


def option_for(setting: str | None) -> str | None:
    """The command-line option that sets `setting` (top_k -> --top-k)."""
    if setting is None:
        return None
    return OPTION_NAMES.get(setting, "--" + setting.replace("_", "-"))


def parsed(option: str, parse: Callable[[str], T], text: str) -> T:
    """Parse an option's text, naming the option in the error."""
    try:
        return parse(text)
    except SettingError as exc:
        raise SettingError(f"{option}: {exc}") from None


def parse_vocab_size(text: str | None) -> int | None:
    """--vocab-size: a count (`2048`, `4k`) of at least 257 tokens; None when not given."""
    return check_vocab_size(parsed("--vocab-size", parse_count, text)) if text else None


def unescape(text: str) -> str:
    r"""--stop '\n\n' means two newlines: read \n, \t and \\ as a shell user means them."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def resolve(name: str) -> Path:
    """--model's value as a folder (`textgen.store.folder.resolve`)."""
    from textgen.store.folder import resolve as resolve_folder

    return resolve_folder(name)
