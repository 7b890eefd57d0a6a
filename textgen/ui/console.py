"""Where output goes: the stderr console (notices, progress, errors) and the rules for
colour and live displays.

stdout carries only the product, written by the CLI; everything else goes to stderr. No
colour and no live display when the stream is not a terminal or when NO_COLOR is set.
"""

from __future__ import annotations

import os
import stat
import sys

from rich.console import Console
from rich.markup import escape


def make_console(stderr: bool = True) -> Console:
    """A console on stderr (or stdout); plain text when not a terminal or NO_COLOR is set."""
    return Console(stderr=stderr, highlight=False, no_color="NO_COLOR" in os.environ or None)


def live_ok(console: Console) -> bool:
    return console.is_terminal and "NO_COLOR" not in os.environ and not console.is_dumb_terminal


def error(console: Console, message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def notice(console: Console, message: str, warning: bool = False) -> None:
    style = "[yellow]warning:[/] " if warning else "[dim]›[/] "
    console.print(style + escape(message), soft_wrap=True)


def stdout_is_a_pipe() -> bool:
    """A pipe (`| tee`) may well print to the same terminal as stderr, where a live display
    would tangle with the streamed text; a terminal or a file cannot."""
    try:
        return stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, ValueError):
        return True
