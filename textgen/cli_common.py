"""What the command modules share: the stderr console, common options, and reading
prompts and option values. Imports no torch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from textgen import render
from textgen.errors import SettingError

console = render.make_console()

ModelOption = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Model name (under models/) or a folder path like ./my-model."
    ),
]
DeviceOption = Annotated[
    str, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def read_text_argument(text: str | None) -> str:
    """`-`, or no argument with stdin not a terminal, reads stdin (one trailing newline
    dropped, as `echo` adds it). No argument at a terminal is the empty text."""
    if text == "-" or (text is None and not sys.stdin.isatty()):
        data = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        return data[:-1] if data.endswith("\n") else data
    return text or ""


def parsed(option: str, parse, text: str):
    """Parse an option's text, naming the option in the error."""
    try:
        return parse(text)
    except SettingError as exc:
        raise SettingError(f"{option}: {exc}") from None


def resolve(name: str) -> Path:
    from textgen import modeldir

    return modeldir.resolve(name)
