"""`textgen write`: write with the model a token at a time, in a full-screen view."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from textgen.cli.options import (
    DeviceOption,
    MinPOption,
    ModelOption,
    TopKOption,
    TopPOption,
    console,
    resolve,
)
from textgen.errors import SettingError, TextgenError, install_hint
from textgen.settings import SampleConfig
from textgen.ui.console import notice

MAX_CANDIDATES = 9  # one number key each


def write(
    prompt: Annotated[
        str | None,
        typer.Argument(help="Text to start from (default: none).", show_default=False),
    ] = None,
    model: ModelOption = "default",
    temperature: Annotated[
        float,
        typer.Option("--temperature", "-t", help="0 (greedy) to 2 (the cap); + and - change it."),
    ] = 0.8,
    top_k: TopKOption = None,
    top_p: TopPOption = None,
    min_p: MinPOption = None,
    candidates: Annotated[
        int, typer.Option(help=f"Next tokens shown, 1 to {MAX_CANDIDATES} (one number key each).")
    ] = MAX_CANDIDATES,
    stretch: Annotated[int, typer.Option(help="Tokens Enter lets the model write.")] = 48,
    seed: Annotated[int | None, typer.Option(help="Same seed, same keys: same text.")] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            help="The file the s key saves to (default: a new textgen-write-<time>.txt here).",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Let the s key replace an existing --save file.")
    ] = False,
    device: DeviceOption = "auto",
) -> None:
    """Write with the model: the text so far, and its most likely next tokens with their
    probabilities at the current temperature.

    Keys: 1-9 pick a candidate, Tab takes the model's own sample, Enter lets it write a
    stretch (Esc stops it), Backspace takes the last token back, + and - change the
    temperature, s saves the text, Ctrl-C leaves. The text is written to stdout on the
    way out (the view itself is drawn on stderr), so `textgen write > story.txt` keeps it.
    """
    if not 1 <= candidates <= MAX_CANDIDATES:
        raise SettingError(f"--candidates must be 1 to {MAX_CANDIDATES} (one number key each)")
    if stretch < 1:
        raise SettingError("--stretch must be at least 1 token")
    settings = SampleConfig(
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed
    )
    _check_save(save, overwrite)
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise TextgenError(
            "textgen write reads keys from a terminal and draws on one: run it in a terminal "
            "(in a pipe, textgen generate writes the text)"
        )
    try:
        from textgen.ui.write import WriteApp
    except ImportError:
        raise TextgenError(f"textgen write needs Textual: {install_hint('write')}") from None
    from textgen.decode.writing import Draft
    from textgen.model.device import choose_device
    from textgen.store.folder import load

    lm = load(resolve(model), choose_device(device))
    draft = Draft(lm, prompt or "", settings, candidates)
    title = f"textgen write · {lm.folder.name} · seed {draft.seed}"
    app = WriteApp(draft, lm.tokenizer.render, save, stretch, title, overwrite)
    try:
        app.run()
    finally:  # however it ends (Ctrl-C, SIGTERM, SIGHUP), the text is kept on stdout
        text = draft.text
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        sys.stdout.flush()
    if app.saved is not None:
        notice(console, f"saved to {app.saved}")
    added = f"{len(draft.added):,} token{'' if len(draft.added) == 1 else 's'} added"
    notice(console, f"{added}; --seed {draft.seed} repeats the samples")


def _check_save(save: Path | None, overwrite: bool) -> None:
    """--save's file, checked before the view starts (s checks again when pressed)."""
    if save is not None:
        if save.is_dir():
            raise SettingError(f"--save {save}: is a folder; name a file")
        if save.exists() and not overwrite:
            raise SettingError(
                f"--save {save}: exists; name another file, or add --overwrite to replace it"
            )
