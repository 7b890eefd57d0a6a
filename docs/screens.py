"""The README's pictures of the terminal, taken from a real one.

Runs a textgen command on a pseudo-terminal of a given size (TERM=xterm-256color), types
keys into it as a person would, and when it is done draws what the terminal shows, in
its colours, as an SVG: the screen as a terminal emulator (pyte) holds it after every
byte the command wrote, exported through Rich.

    python docs/screens.py write                    # docs/write.svg
    python docs/screens.py train                    # docs/train.svg

Each picture is defined below: the command, the size, and the keys with the pauses
between them. The `demo` model (`make demo`) is the one pictured.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
from rich.console import Console
from rich.style import Style
from rich.text import Text

HERE = Path(__file__).resolve().parent

# name: (arguments, columns, rows, [(seconds to wait, then keys to type)], the title)
PICTURES = {
    "write": (
        [
            "write",
            "The list",
            "--model",
            "demo",
            "--seed",
            "1",
            "--save",
            "/tmp/textgen-write-picture.txt",
            "--overwrite",
        ],
        80,
        24,
        [(0.5, b"1"), (0.5, b"\t"), (0.5, b"3"), (0.5, b"\r"), (4, b"+"), (0.5, b"+"), (1, None)],
        "textgen write",
    ),
    "train": (  # `make demo`'s training, which the write picture then uses
        ["train", "--model", "demo", "--time", "2m", "--overwrite"],
        100,
        44,
        [(600, None)],  # until it ends
        "textgen train",
    ),
}


def capture(
    args: list[str], columns: int, rows: int, script, leave: bytes | None, ready: str | None
) -> pyte.Screen:
    """Run `textgen ARGS` on a pty, type the script's keys (the first once `ready` is on
    the screen), and return the screen just before `leave` is typed (or when the command
    ends by itself)."""
    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "textgen", *args],
        stdin=child_fd,
        stdout=subprocess.DEVNULL,
        stderr=child_fd,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)},
        start_new_session=True,
    )
    os.close(child_fd)
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)

    def read_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and process.poll() is None:
            readable, _, _ = select.select([main_fd], [], [], 0.05)
            if readable:
                try:
                    stream.feed(os.read(main_fd, 65536))
                except OSError:
                    return

    if ready:  # the first key once the view is up, however slowly it starts
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and ready not in "".join(screen.display):
            read_for(0.2)
    for wait, keys in script:
        read_for(wait)
        if keys is not None:
            os.write(main_fd, keys)
    read_for(0.5)
    shot = copy.deepcopy(screen)  # the screen as it is now, before leaving
    if leave is not None and process.poll() is None:
        os.write(main_fd, leave)
    try:
        process.wait(timeout=600)
    finally:
        os.close(main_fd)
    if process.returncode != 0:
        sys.exit(f"textgen {' '.join(args)} exited with {process.returncode}: no picture")
    return shot


def _colour(value: str) -> str | None:
    if value == "default":
        return None
    if len(value) == 6 and all(c in "0123456789abcdefABCDEF" for c in value):
        return f"#{value}"
    return {"brown": "yellow"}.get(value, value.replace("bright", "bright_"))


def to_text(screen: pyte.Screen) -> Text:
    text = Text()
    for y in range(screen.lines):
        row = screen.buffer[y]
        for x in range(screen.columns):
            char = row[x]
            fg, bg = _colour(char.fg), _colour(char.bg)
            if char.reverse:
                fg, bg = bg or "black", fg or "white"
            text.append(char.data or " ", Style(color=fg, bgcolor=bg, bold=char.bold))
        if y < screen.lines - 1:
            text.append("\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pictures", nargs="+", choices=sorted(PICTURES))
    args = parser.parse_args()
    for name in args.pictures:
        arguments, columns, rows, script, title = PICTURES[name]
        leave, ready = (b"\x03", "Tab:") if name == "write" else (None, None)
        screen = capture(arguments, columns, rows, script, leave, ready)
        console = Console(record=True, width=columns, file=open(os.devnull, "w"))  # noqa: SIM115
        console.print(to_text(screen), crop=True, overflow="crop", no_wrap=True)
        path = HERE / f"{name}.svg"
        path.write_text(console.export_svg(title=title), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
