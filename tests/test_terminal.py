"""What a person sees in a real terminal (a pseudo-terminal, rendered by a terminal
emulator) and what a file gets: the generated text is never lost, whatever is shown live,
and Ctrl-C or a termination signal leaves it on the screen."""

from __future__ import annotations

import re
import signal

import pytest
from helpers import ANSI, run_in_terminal

from textgen.decode.completion import Completion
from textgen.settings import SampleConfig
from textgen.ui.style import visible_controls

PROMPT = "The cat"
SETTINGS = dict(temperature=1.0, seed=5)


def generate_args(folder, *options: str) -> list[str]:
    return ["generate", PROMPT, "--model", str(folder), "--seed", "5", "-t", "1", *options]


def library_text(lm, tokens: int) -> str:
    completion = Completion(lm, PROMPT, SampleConfig(**SETTINGS, max_new_tokens=tokens))
    list(completion)
    return completion.samples[0].text


def squeezed(text: str) -> str:
    """Text as a screen shows it, less the line breaks a narrow screen would add."""
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("show_top", ["0", "5"])
@pytest.mark.parametrize(
    "stdout_tty, stderr_tty", [(True, True), (True, False), (False, True), (False, False)]
)
def test_the_text_reaches_stdout_whatever_is_a_terminal(
    trained_folder, lm, show_top, stdout_tty, stderr_tty
):
    expected = library_text(lm, 30)
    run = run_in_terminal(
        generate_args(trained_folder, "-n", "30", "--show-top", show_top), stdout_tty, stderr_tty
    )
    assert run.code == 0, run.screen + run.stderr.decode()
    if stdout_tty:  # the terminal shows the text (after the prompt, where stderr shows it)
        shown = visible_controls((PROMPT if stderr_tty else "") + expected)
        assert squeezed(shown) in squeezed(run.screen), run.screen
    else:  # a file gets exactly the text, live view or not
        assert run.stdout.decode() == expected
    if not stderr_tty:
        assert not ANSI.search(run.stderr.decode())
        assert ("model's top 5" in run.stderr.decode()) == (show_top != "0")


@pytest.mark.parametrize("show_top", ["0", "5"])
@pytest.mark.parametrize("stdout_tty", [True, False])
def test_ctrl_c_leaves_the_text_so_far_on_the_screen(trained_folder, lm, show_top, stdout_tty):
    run = run_in_terminal(
        generate_args(trained_folder, "-n", "100000", "--show-top", show_top),
        stdout_tty=stdout_tty,
        # some text and, live, a few frames (each frame is hundreds of bytes: a slow
        # machine draws several before the text is 15 characters long)
        signal_after=(signal.SIGINT, 600 if show_top == "0" else 6000),
    )
    assert run.code == 130, run.screen
    lines = run.screen.splitlines()
    assert lines[-1] == "warning: interrupted"
    full = library_text(lm, 3000)
    written = run.stdout.decode() if not stdout_tty else None
    if written is not None:  # the file holds what was generated, a prefix of the text
        assert written and full.startswith(written)
    if stdout_tty:  # the terminal shows the prompt and the text from its start
        start = squeezed(visible_controls(PROMPT + full))[: len(squeezed(PROMPT)) + 15]
        assert start in squeezed(run.screen), run.screen
    elif show_top != "0":  # the live view's last frame stays: the text's end and the step
        assert "next-token distribution" in run.screen
    assert run.raw.rfind(b"\x1b[?25l") <= run.raw.rfind(b"\x1b[?25h")  # the cursor is back


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_termination_signal_ends_generation_as_ctrl_c_does(trained_folder, name, code):
    run = run_in_terminal(
        generate_args(trained_folder, "-n", "100000", "--show-top", "3"),
        signal_after=(getattr(signal, name), 600),
    )
    assert run.code == code, run.screen
    assert run.screen.splitlines()[-1] == "warning: interrupted"
    assert run.raw.rfind(b"\x1b[?25l") <= run.raw.rfind(b"\x1b[?25h")  # the cursor is back


@pytest.mark.parametrize("command", ["generate", "train"])
def test_a_terminal_with_stdin_elsewhere_still_gets_its_live_display(
    trained_folder, corpus_file, tmp_path, command
):
    """`textgen train data.txt < /dev/null` or under nohup: the screen is a terminal, stdin
    is not, and the live display (which quiets the terminal's ^C echo) carries on."""
    if command == "generate":
        args = generate_args(trained_folder, "-n", "10", "--show-top", "3")
    else:
        args = ["train", str(corpus_file), "--model", str(tmp_path / "m"), "--size", "tiny"]
        args += ["--steps", "20", "--eval-interval", "10", "--vocab-size", "300"]
    run = run_in_terminal(args, stdin_tty=False)
    assert run.code == 0, run.screen
    assert "error" not in run.screen
