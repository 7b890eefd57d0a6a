"""What several test modules share: a learnable corpus, the tiny model's shape, and ways to
run the command line (in this process, or as a real subprocess)."""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from textgen.cli.app import main

# A tiny model: 2 layers, 64 wide, context 32; no dropout, so runs repeat exactly.
TINY = dict(context_window=32, n_layer=2, n_embd=64, n_head=4, dropout=0.0)
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
