"""The command line: the Typer app, its commands (one module per group), and the mapping
from what went wrong to one line on stderr and an exit code.

stdout carries only the product; everything else goes to stderr. Exit codes: 0 success,
1 runtime error, 2 usage error, 130 interrupted (143 SIGTERM, 129 SIGHUP). torch is
imported inside the commands that need it, so `textgen --help` and option errors stay
instant.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
import typer.core

from textgen import __version__
from textgen.cli import anatomy, export, generate, inspect, models, serve, train, write
from textgen.cli.options import console, option_for
from textgen.errors import Interrupted, SettingError, TextgenError
from textgen.records import World
from textgen.ui.console import error, notice

# typer raises click's exceptions (a vendored copy in recent typer): find the base class of
# usage errors through the one typer exports.
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _plain_argument_types() -> None:
    """typer writes an argument's type after its name even when a metavar names it
    (`[CORPUS]... <list[str]>`): with a metavar, show the metavar alone."""
    argument = getattr(typer.core, "TyperArgument", None)
    shown = getattr(argument, "display_type_rich", None)
    if shown is None or getattr(shown, "plain", False):
        return

    def display_type_rich(self, ctx):  # noqa: ANN001, ANN202 - typer's own signature
        return None if self.metavar else shown(self, ctx)

    display_type_rich.plain = True  # type: ignore[attr-defined]
    argument.display_type_rich = display_type_rich


_plain_argument_types()

app = typer.Typer(
    name="textgen",
    help="Train a small transformer on your own text and watch it write.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
tokenizer_app = typer.Typer(help="Train a tokenizer on its own.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")


def _command(command: Callable[..., None]) -> Callable[..., None]:
    """The command, with the two ways a user ends one early made plain: its reader going
    away (`| head`) ends it quietly with 0, before click would turn the broken pipe into
    exit status 1; Ctrl-C ends it with a notice and 130, where typer would exit silently."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except BrokenPipeError:
            _quiet_broken_pipe()
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            raise Interrupted(signal.SIGINT) from None

    return run


# (command, name, the line `textgen --help` shows for it)
COMMANDS = [
    (train.train, "train", "Train a tokenizer and a transformer on your text."),
    (generate.generate, "generate", "Continue a prompt, streaming the text to stdout."),
    (write.write, "write", "Write with the model a token at a time, full screen."),
    (inspect.tokenize, "tokenize", "Show how the tokenizer splits a text into tokens."),
    (inspect.score, "score", "How surprised the model is by each token of a text."),
    (inspect.attention, "attention", "Draw where each token of a text attends."),
    (anatomy.lens, "lens", "The logit lens: what each layer would predict."),
    (anatomy.neighbors, "neighbors", "The tokens whose embeddings are nearest a word's."),
    (anatomy.heads, "heads", "What each attention head does over a text."),
    (anatomy.explore, "explore", "One HTML page to explore a text through the model."),
    (inspect.evaluate, "eval", "Loss, bits per byte and perplexity on any text."),
    (models.info, "info", "A model's shape, tokenizer, training and loss curve."),
    (models.models, "models", "List the models, and say where they live."),
    (export.export, "export", "Write a model for transformers, llama.cpp or ollama."),
    (serve.serve, "serve", "Serve models over the OpenAI API, batching requests."),
]
for function, name, summary in COMMANDS:
    app.command(name, short_help=summary)(_command(function))
tokenizer_app.command("train", short_help="Train only a tokenizer, into a model folder.")(
    _command(train.tokenizer_train)
)


def _show_version(shown: bool) -> None:
    if shown:
        print(f"textgen {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Show the version and exit.", is_eager=True, callback=_show_version
        ),
    ] = False,
) -> None:
    """Train a small transformer on your own text and watch it write."""


def main(argv: list[str] | None = None) -> None:
    """Run the command line and exit with its code; every failure is one line on stderr."""
    stdout_open = _standard_streams()
    with _termination_interrupts():
        try:
            if not stdout_open and _command_name(argv) not in QUIET_COMMANDS:
                raise TextgenError(
                    "standard output is closed, so the output would be lost; run the command "
                    "with stdout open (> FILE, or > /dev/null to discard it)"
                )
            code = app(args=argv, prog_name="textgen", standalone_mode=False)
            code = code if isinstance(code, int) else 0
        except BaseException as exc:  # noqa: BLE001 - each kind is mapped below
            code = _report(exc)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    tokenizer = sys.modules.get("textgen.text.tokenizer")
    if tokenizer is not None and tokenizer.trainer_abandoned():
        # Ctrl-C stopped tokenizer training, whose thread cannot be stopped inside Rust:
        # leave now (everything of ours is cleaned up), before the interpreter shuts down
        # under it, which would abort the process.
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


# Commands whose product is a folder, a file or a service: nothing of theirs goes to
# stdout, so they run with it closed (from cron, a daemon)
QUIET_COMMANDS = frozenset({"train", "export", "serve", "tokenizer"})


def _command_name(argv: list[str] | None) -> str | None:
    args = sys.argv[1:] if argv is None else argv
    return next((a for a in args if not a.startswith("-")), None)


def _standard_streams() -> bool:
    """Standard streams closed at the start (`<&-`, `>&-`, `2>&-`) opened on /dev/null, so
    that no file of ours takes their descriptor and nothing writes into it by mistake: a
    closed stdin reads as empty, a closed stderr never stops the work. Returns whether
    stdout was open (the CLI refuses to run without it: the output would be lost)."""
    was_open = True
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        devnull = os.open(os.devnull, os.O_RDWR)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
        setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115
        was_open = was_open and fd != 1
    return was_open


@contextlib.contextmanager
def _termination_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP end a command as Ctrl-C does (displays closed, the terminal
    restored, a notice, 143 or 129), not by killing it mid-write. Training defers them
    to a step boundary (`textgen.training.stopping`)."""

    def interrupt(number: int, frame: object) -> None:
        raise Interrupted(number)

    names = ("SIGTERM", "SIGHUP")
    numbers = [getattr(signal, name) for name in names if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, interrupt) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _report(exc: BaseException) -> int:
    """Say what went wrong, in one line on stderr, and return the exit code."""
    if isinstance(exc, UsageError):
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
            print(exc.ctx.get_help(), file=sys.stderr)
            return 0
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
        error(console, exc.format_message() + hint)
        return 2
    if isinstance(exc, typer.Exit):
        if exc.exit_code == 130 and isinstance(exc.__cause__, KeyboardInterrupt):
            notice(console, "interrupted", warning=True)  # Ctrl-C outside a command body
        return exc.exit_code
    if isinstance(exc, typer.Abort | KeyboardInterrupt):
        exc = Interrupted(signal.SIGINT)
    if isinstance(exc, Interrupted):
        notice(console, str(exc), warning=True)
        return exc.exit_code
    if isinstance(exc, TextgenError):
        world = World.from_environment()
        message = exc.phrased(option_for(exc.setting)) if isinstance(exc, SettingError) else exc
        if not exc.quiet:  # else process 0 already reported it
            error(console, f"process {world.rank}: {message}" if world.rank else str(message))
        return exc.exit_code
    if not isinstance(exc, Exception) or os.environ.get("TEXTGEN_DEBUG"):
        raise exc  # SystemExit and the like; a bug's traceback on request
    error(
        console, f"internal error: {type(exc).__name__}: {exc} (set TEXTGEN_DEBUG=1 to see where)"
    )
    return 1


def _quiet_broken_pipe() -> None:
    """stdout's reader went away (`| head`): stop writing, without a traceback at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
