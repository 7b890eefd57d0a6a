"""`textgen write`: a full-screen view for writing with the model a token at a time.

The text so far, coloured by how likely the model found each token it added, and below
it the model's most likely next tokens with their probabilities at the current
temperature. Keys: a number picks a candidate, Tab takes the model's own sample, Enter
lets it write a stretch (streamed; Esc stops it), Backspace takes the last token back,
+ and - change the temperature (0 to the cap), s saves the text, Ctrl-C leaves.

Built on Textual: it is built on Rich, which draws every other textgen screen, so the
probability colours and bars are the same objects here; it gives a full-screen layout
that reflows from 80x24 down to 40 columns, key bindings, a worker thread for the
stretch the model writes while keys still work, and a headless driver for tests.

The view draws plain records from a `Draft` (`textgen.decode.writing`) and never
imports torch: the draft is passed in.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from rich.columns import Columns
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from textgen.errors import TextgenError
from textgen.files import write_text
from textgen.records import Candidate
from textgen.ui.style import bar, clip, coloured, one_line, percent, prob_style, visible_controls

TEMPERATURE_STEP = 0.1


class NextStepLike(Protocol):
    """The model's next step (`textgen.decode.writing.NextStep`)."""

    candidates: list[Candidate]
    sampled: int
    sampled_prob: float


class DraftLike(Protocol):
    """What the view needs of a draft (`textgen.decode.writing.Draft`)."""

    prompt: str
    next: NextStepLike

    @property
    def temperature(self) -> float: ...
    @property
    def ended(self) -> bool: ...
    @property
    def text(self) -> str: ...
    def pieces(self) -> list[tuple[str, float]]: ...
    def add(self, token_id: int) -> None: ...
    def add_sampled(self) -> int: ...
    def undo(self) -> bool: ...
    def set_temperature(self, temperature: float) -> None: ...


class WriteApp(App[str]):
    """The writing view; `run()` returns the text."""

    CSS = """
    Screen { layout: vertical; }
    #text { height: 1fr; border: round $primary-darken-2; padding: 0 1; }
    #next { height: auto; padding: 0 1; }
    #help { height: auto; padding: 0 1; color: $text-muted; }
    """
    BINDINGS = [
        Binding("ctrl+c", "leave", "leave", priority=True),
        Binding("ctrl+q", "leave", "leave", show=False, priority=True),
        Binding("tab", "sample", "the model's pick", priority=True),
        Binding("enter", "stretch", "write a stretch"),
        Binding("escape", "stop", "stop"),
        Binding("backspace", "undo", "undo"),
        Binding("plus,equals_sign", "temperature(1)", "hotter"),
        Binding("minus,underscore", "temperature(-1)", "cooler"),
        Binding("s", "save", "save"),
    ] + [Binding(str(n), f"pick({n})", show=False) for n in range(1, 10)]

    def __init__(
        self,
        draft: DraftLike,
        render: Callable[[int], str],
        save_to: Path | None,
        stretch: int,
        title: str,
        overwrite: bool = False,
    ) -> None:
        """`save_to`: the file s saves to (None: a new file named when s is first pressed);
        one that exists is replaced only with `overwrite`, or once this view wrote it."""
        super().__init__(driver_class=_driver_class())
        self.draft, self.render, self.save_to, self.stretch_tokens = draft, render, save_to, stretch
        self.overwrite = overwrite
        self.title_line = title
        self.writing = threading.Event()  # a stretch is being written
        self.stop_writing = threading.Event()
        self.saved: Path | None = None
        self.leaving = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="text"):
            yield Static(id="body")
        yield Static(id="next")
        yield Static(self._help(), id="help")

    def on_mount(self) -> None:
        self.query_one("#text").border_title = self.title_line
        self.refresh_view()
        if not self.is_headless:
            self.set_interval(1.0, self._check_terminal)

    def _check_terminal(self) -> None:
        """Leave, keeping the text, once the terminal is gone (closed without a hang-up
        signal: Textual's input would otherwise wait on it for ever, spinning)."""
        try:
            os.get_terminal_size(sys.__stderr__.fileno())
        except (OSError, ValueError, AttributeError):
            self.action_leave()

    # -- drawing -----------------------------------------------------------------------

    def refresh_view(self) -> None:
        body = Text(visible_controls(self.draft.prompt))
        body.append_text(coloured(self.draft.pieces()))
        if self.draft.ended:
            body.append(" ⏹ end of text", style="dim")
        self.query_one("#body", Static).update(body)
        self.query_one("#text", VerticalScroll).scroll_end(animate=False)
        self.query_one("#next", Static).update(self._next())

    def _next(self) -> Group:
        step = self.draft.next
        state = "writing… Esc stops" if self.writing.is_set() else "next token"
        heading = Text(f"{state} · temperature {self.draft.temperature:.1f}", style="bold")
        table = Table.grid(padding=(0, 1))
        table.add_column(justify="right", style="bold cyan")  # key
        table.add_column()  # token
        table.add_column()  # bar
        table.add_column(justify="right")  # probability at the temperature
        table.add_column(justify="right", style="dim")  # the model's own
        top = max((c.prob for c in step.candidates), default=1.0) or 1.0
        for key, candidate in enumerate(step.candidates, start=1):
            p = candidate.prob
            model_p = math.exp(candidate.logprob)
            table.add_row(
                str(key),
                Text(clip(one_line(self.render(candidate.token_id)), 14), style=prob_style(p)),
                Text(bar(p / top, 8), style=prob_style(p)),
                percent(p),
                f"(model {percent(model_p).strip()})",
            )
        pick = Text("Tab: the model's sample ", style="dim")
        pick.append(clip(one_line(self.render(step.sampled)), 14), prob_style(step.sampled_prob))
        return Group(heading, table, pick)

    def _help(self) -> Columns:
        keys = [
            (f"1-{len(self.draft.next.candidates)}", "pick"),
            ("Tab", "sample"),
            ("Enter", f"write {self.stretch_tokens}"),
            ("Esc", "stop"),
            ("⌫", "undo"),
            ("+/-", "temperature"),
            ("s", "save"),
            ("^C", "leave"),
        ]
        # a key and its word never split over two lines: one cell each
        return Columns([Text.assemble((key, "bold"), f" {what}") for key, what in keys])

    # -- keys --------------------------------------------------------------------------

    def action_pick(self, number: int) -> None:
        candidates = self.draft.next.candidates
        if self.writing.is_set() or not 1 <= number <= len(candidates):
            return
        self.draft.add(candidates[number - 1].token_id)
        self.refresh_view()

    def action_sample(self) -> None:
        if not self.writing.is_set():
            self.draft.add_sampled()
            self.refresh_view()

    def action_undo(self) -> None:
        if not self.writing.is_set() and self.draft.undo():
            self.refresh_view()

    def action_temperature(self, direction: int) -> None:
        if self.writing.is_set():
            return
        # the draft keeps it within 0 and the cap
        self.draft.set_temperature(self.draft.temperature + direction * TEMPERATURE_STEP)
        self.refresh_view()

    def action_stretch(self) -> None:
        if self.writing.is_set():
            return
        self.writing.set()
        self.stop_writing.clear()
        self.refresh_view()
        self.run_worker(self._write_stretch, thread=True, exclusive=True, group="stretch")

    def _write_stretch(self) -> None:
        try:
            for _ in range(self.stretch_tokens):
                if self.stop_writing.is_set() or self.draft.ended:
                    break
                self.draft.add_sampled()
                self.call_from_thread(self.refresh_view)
        finally:
            self.writing.clear()
            if self.leaving:  # Ctrl-C came while it wrote: leave with the text as it is
                self.call_from_thread(self.exit, self.draft.text)
            else:
                self.call_from_thread(self.refresh_view)

    def action_stop(self) -> None:
        self.stop_writing.set()

    def action_save(self) -> None:
        path = self.saved or self.save_to or new_save_path()
        if path != self.saved and path.exists() and not self.overwrite:
            self.notify(
                f"{path} exists now: not replaced (--overwrite lets s replace it)",
                severity="error",
                timeout=6,
            )
            return
        text = self.draft.text
        try:
            write_text(path, text)
        except TextgenError as exc:  # the session goes on: the text is still here
            self.notify(str(exc), severity="error", timeout=6)
            return
        self.saved = path
        self.notify(f"saved {len(text):,} characters to {path}", timeout=3)

    def action_leave(self) -> None:
        self.leaving = True
        self.stop_writing.set()
        if not self.writing.is_set():  # else the stretch leaves once its step is done
            self.exit(self.draft.text)


def new_save_path() -> Path:
    """A file name for s that no file has yet: textgen-write-<time>.txt here."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path(f"textgen-write-{stamp}.txt"), 2
    while path.exists():
        path, n = Path(f"textgen-write-{stamp}-{n}.txt"), n + 1
    return path


def _driver_class() -> type | None:
    """Textual's terminal driver, sized by the terminal it draws on (stderr): its own
    asks stdout, which `textgen write > story.txt` sends to a file (80x24 whatever the
    terminal, and resizes unseen)."""
    if os.name != "posix":
        return None
    from textual.drivers.linux_driver import LinuxDriver

    class StderrSized(LinuxDriver):
        def _get_terminal_size(self) -> tuple[int, int]:
            try:
                size = os.get_terminal_size(self._file.fileno())
            except (AttributeError, ValueError, OSError):
                return super()._get_terminal_size()
            return size.columns or 80, size.lines or 25

    return StderrSized
