"""Where output goes: the stderr console (notices, progress, errors) and the rules for
colour and live displays.

stdout carries only the product, written by the CLI; everything else goes to stderr. No
colour and no live display when the stream is not a terminal or when NO_COLOR is set.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import stat
import sys
from collections.abc import Iterator
from typing import IO

from rich.console import Console
from rich.file_proxy import FileProxy
from rich.live import Live
from rich.markup import escape
from rich.progress import Progress, ProgressColumn


class _Stderr:
    """sys.stderr (whichever it is at the time of each write) that drops what can no longer
    be written: with `2>&1 | head`, a closed stderr must not stop a training run."""

    closed_pipe = False

    @property
    def _stream(self) -> IO[str]:
        stream = sys.stderr or io.StringIO()  # None: closed from the start (`2>&-`)
        # a live display stands a proxy in for sys.stderr that prints through its console:
        # the console's own writes go to what the proxy stands for
        return stream.rich_proxied_file if isinstance(stream, FileProxy) else stream

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ValueError):  # a closed pipe; a closed file
                self.closed_pipe = True
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    raise
                self.closed_pipe = True
        return len(text)

    def flush(self) -> None:
        self.write("")
        if not self.closed_pipe:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.closed_pipe = True

    def isatty(self) -> bool:
        return not self.closed_pipe and self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"


def make_console(stderr: bool = True) -> Console:
    """A console on stderr (or stdout); plain text when not a terminal or NO_COLOR is set.
    Output to stderr that cannot be written (a closed pipe) is dropped."""
    no_color = "NO_COLOR" in os.environ or None
    if stderr:
        return Console(file=_Stderr(), highlight=False, no_color=no_color)  # type: ignore[arg-type]
    return Console(highlight=False, no_color=no_color)


@contextlib.contextmanager
def no_control_echo() -> Iterator[None]:
    """While a live display is on: the terminal does not echo Ctrl-C as `^C`, which would
    wrap a full-width bar onto a second line and leave a stale copy of it on the screen."""
    try:
        import termios
    except ImportError:  # Windows
        yield
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError, AttributeError):  # stdin is no terminal
        yield
        return
    changed = list(saved)
    changed[3] &= ~getattr(termios, "ECHOCTL", 0)  # the local modes
    try:
        termios.tcsetattr(fd, termios.TCSANOW, changed)
    except termios.error:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):  # the terminal went away meanwhile
            termios.tcsetattr(fd, termios.TCSANOW, saved)


def progress_bar(console: Console, *columns: str | ProgressColumn) -> Progress:
    """A transient progress bar on `console` that leaves stdout alone: stdout carries the
    product, and a display that captured it would lose it."""
    return Progress(*columns, console=console, transient=True, redirect_stdout=False)


def live_display(console: Console) -> Live:
    """A live display on `console` that leaves stdout alone (see `progress_bar`)."""
    return Live(console=console, transient=True, refresh_per_second=12, redirect_stdout=False)


def live_ok(console: Console) -> bool:
    return console.is_terminal and "NO_COLOR" not in os.environ and not console.is_dumb_terminal


def error(console: Console, message: str) -> None:
    """One line, whatever the message holds (an exception's text can run to paragraphs)."""
    one_line = re.sub(r"\s*\n\s*", " ", message.strip())
    console.print(f"[bold red]error:[/] {escape(one_line)}", soft_wrap=True)


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
