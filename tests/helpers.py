"""What several test modules share: a learnable corpus, the tiny model's shape, and ways to
run the command line (in this process, or as a real subprocess)."""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from textgen.cli.app import main
from textgen.settings import ModelShape

# A tiny model: 2 layers, 64 wide, context 32; no dropout, so runs repeat exactly.
TINY = ModelShape(context_window=32, n_layer=2, n_embd=64, n_head=4, dropout=0.0)
ANSI = re.compile(r"\x1b\[")


def make_corpus(n_sentences: int = 600, seed: int = 0) -> str:
    """Simple, learnable English: a few hundred sentences from a small grammar."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the old fox", "my friend", "the bird", "a child"]
    verbs = ["sees", "likes", "chases", "finds", "follows", "watches"]
    objects = ["the ball", "a red hat", "the river", "some bread", "the moon", "a small box"]
    places = ["in the garden", "by the sea", "at night", "after lunch", "near the house"]
    lines = []
    for _ in range(n_sentences):
        sentence = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}"
        if rng.random() < 0.5:
            sentence += f" {rng.choice(places)}"
        lines.append(sentence.capitalize() + ".")
    return "\n".join(" ".join(lines[i : i + 4]) for i in range(0, len(lines), 4)) + "\n"


def train_command(corpus: Path | str, folder: Path, *options: str) -> list[str]:
    """`textgen train` of a tiny model on `corpus` into `folder`, as a subprocess argv."""
    return [
        sys.executable,
        "-m",
        "textgen",
        "train",
        str(corpus),
        "--model",
        str(folder),
        "--size",
        "tiny",
        "--context",
        "32",
        "--vocab-size",
        "300",
        *options,
    ]


def run(
    *args: str, stdin: str | None = None, env: dict | None = None, text: bool = True
) -> subprocess.CompletedProcess:
    """`textgen ARGS` as a subprocess, for what only a real process shows (pipes, bytes,
    signals, import time); `text=False` keeps stdout as bytes (text mode would turn a
    generated carriage return into a newline)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "textgen", *args],
        input=stdin if text or stdin is None else stdin.encode(),
        capture_output=True,
        text=text,
        env=full_env,
        timeout=300,
    )


def run_cli(capsys, monkeypatch, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """`textgen ARGS` in this process (fast): exit code, stdout, stderr."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def one_line_error(code: int, err: str, expected_code: int, message: str) -> None:
    """The command failed as it should: the exit code, and one line on stderr."""
    lines = err.strip().splitlines()
    assert code == expected_code, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message in lines[0]
    assert "Traceback" not in err


@dataclass
class Terminal:
    """What a run in a pseudo-terminal left: its exit code, the screen as a terminal shows
    it (rendered by a terminal emulator: cursor moves and erasures applied), and what went
    to the streams that were not the terminal."""

    code: int
    screen: str
    stdout: bytes
    stderr: bytes
    raw: bytes


def run_in_terminal(
    args: list[str],
    stdout_tty: bool = True,
    stderr_tty: bool = True,
    signal_after: tuple[int, int] | None = None,
    columns: int = 200,
    timeout: float = 300,  # generous: a loaded machine trains and decodes slowly
    stdin_tty: bool = True,
) -> Terminal:
    """`textgen ARGS` with stdout and/or stderr on a real pseudo-terminal (Python's pty),
    the others on files. `signal_after=(SIGNAL, N)` sends SIGNAL once N bytes have appeared
    on the terminal and in the stdout file."""
    import fcntl
    import pty
    import select
    import struct
    import tempfile
    import termios
    import time

    import pyte

    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "textgen", *args],
            stdin=child_fd if stdin_tty else subprocess.DEVNULL,
            stdout=child_fd if stdout_tty else out,
            stderr=child_fd if stderr_tty else err,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)},
            start_new_session=True,
        )
        os.close(child_fd)
        raw, sent, deadline = b"", False, time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main_fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main_fd, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk and process.poll() is not None:
                    break
                raw += chunk
            elif process.poll() is not None:
                break
            shown = len(raw) + os.fstat(out.fileno()).st_size  # on the terminal, or in stdout
            if signal_after and not sent and shown >= signal_after[1]:
                process.send_signal(signal_after[0])
                sent = True
        else:
            process.kill()
        code = process.wait()
        os.close(main_fd)
        out.seek(0)
        err.seek(0)
        screen = pyte.Screen(columns, 400)
        pyte.ByteStream(screen).feed(raw)
        shown = "\n".join(line.rstrip() for line in screen.display).rstrip()
        return Terminal(code, shown, out.read(), err.read(), raw)


def keys_in_a_terminal(
    argv: list[str],
    keys: list,
    columns: int = 80,
    rows: int = 24,
    timeout: float = 120,
    env: dict | None = None,
    cwd: Path | None = None,
) -> tuple[int, str, str]:
    """ARGV (`textgen write`) with stdin and stderr on a real pseudo-terminal and stdout to
    a pipe, the keys (bytes, or ("signal", number) to send one) typed one by one whenever
    its view is up and idle; the exit code,
    stdout, and the screen as the terminal showed it last before the command left."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    import pyte

    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(
        argv,
        stdin=child_fd,
        stdout=subprocess.PIPE,
        stderr=child_fd,
        env={**(env or os.environ), "TERM": "xterm-256color"},
        cwd=cwd,
        start_new_session=True,
    )
    os.close(child_fd)
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    shown, pending, deadline = "", list(keys), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            ready, _, _ = select.select([main_fd], [], [], 0.2)
            if ready:
                try:
                    stream.feed(os.read(main_fd, 65536))
                except OSError:
                    break
            display = "\n".join(line.rstrip() for line in screen.display)
            if "temperature" in display and "Tab" in display:
                shown = display
                if pending and not ready:  # the view is up and idle: the next key
                    key = pending.pop(0)
                    if isinstance(key, tuple):  # ("signal", number): sent, not typed
                        process.send_signal(key[1])
                    else:
                        os.write(main_fd, key)
                    time.sleep(0.3)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main_fd)
    return process.returncode, out.decode(), shown
