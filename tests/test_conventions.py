"""The command line as people expect it: the product on stdout (a table in a terminal,
plain text in a pipe, JSON on request), help that fits, counts and words that read right,
and every example in the README running as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    keys_in_a_terminal,
    one_line_error,
    run,
    run_cli,
    run_in_terminal,
    train_command,
)

from textgen.store import folder as model_folder

README = Path(__file__).resolve().parent.parent / "README.md"
DOCS = sorted((README.parent / "docs").glob("*.md"))


@pytest.fixture
def textgen(capsys, monkeypatch):
    return lambda *args, stdin=None: run_cli(capsys, monkeypatch, *args, stdin=stdin)


@pytest.fixture
def home(tmp_path, trained_folder, monkeypatch):
    """A models folder holding one model, `demo`."""
    models = tmp_path / "models"
    shutil.copytree(trained_folder, models / "demo")
    monkeypatch.setenv("TEXTGEN_HOME", str(models))
    return models


# -- the product on stdout ---------------------------------------------------------------------


def test_models_lists_on_stdout_and_says_where_it_looked(home, textgen):
    code, out, err = textgen("models")
    assert code == 0
    header, row = out.splitlines()
    assert header.split("\t")[0] == "model" and row.split("\t")[0] == "demo"
    assert f"models are looked for in {home.resolve()}; set TEXTGEN_HOME" in err
    code, out, _ = textgen("models", "--json")
    (summary,) = [json.loads(line) for line in out.splitlines()]
    assert summary["name"] == "demo" and summary["n_layer"] == 2 and summary["parameters"] > 0


def test_info_writes_to_stdout_plain_when_piped_and_as_json(home, textgen):
    code, out, _ = textgen("info", "--model", "demo")
    assert code == 0
    assert out.splitlines()[0] == "model: demo"
    assert any(line.startswith("validation: loss ") for line in out.splitlines())
    code, out, _ = textgen("info", "--model", "demo", "--json")
    data = json.loads(out)
    assert data["model"]["n_layer"] == 2 and data["training"]["steps"] == 200
    assert [m["step"] for m in data["metrics"]] == [100, 200]


def test_a_missing_model_says_where_models_are_looked_for(home, textgen):
    code, _, err = textgen("generate", "x", "--model", "nope")
    one_line_error(code, err, 1, f"no such model folder (models are looked for in {home.resolve()}")


def test_every_reporting_command_has_json(home, textgen, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("The cat sees the moon.\n")
    for args in (
        ["models"],
        ["info", "--model", "demo"],
        ["tokenize", "The cat", "--model", "demo"],
        ["score", "The cat", "--model", "demo"],
        ["attention", "The cat", "--model", "demo"],
        ["eval", str(text), "--model", "demo"],
        ["generate", "The cat", "--model", "demo", "-n", "3", "--seed", "0"],
    ):
        code, out, err = textgen(*args, "--json")
        assert code == 0, err
        assert all(isinstance(json.loads(line), dict) for line in out.splitlines()), args


# -- generate's table -------------------------------------------------------------------------


def test_the_table_after_a_long_generation_shows_its_least_likely_steps(home, textgen):
    options = ("--model", "demo", "-n", "40", "--seed", "3", "--show-top", "3")
    _, _, summary = textgen("generate", "The cat", *options)
    rows = [line for line in summary.splitlines() if re.match(r"\s+\d+\s", line)]
    assert "the 10 least likely of 40 steps" in summary and len(rows) == 10
    assert "the model's own first choice at" in summary
    _, _, full = textgen("generate", "The cat", *options, "--all-steps")
    assert len([line for line in full.splitlines() if re.match(r"\s+\d+\s", line)]) == 40


def test_show_top_is_capped_with_a_way_to_see_more(home, textgen):
    code, _, err = textgen("generate", "x", "--model", "demo", "--show-top", "21")
    one_line_error(code, err, 2, "--show-top must be 0 (off) to 20")


# -- help --------------------------------------------------------------------------------------


def test_help_lists_every_command_in_full_with_plain_metavars():
    listing = run("--help", env={"COLUMNS": "80"}).stdout
    commands = listing.split("Commands:")[1]
    assert "…" not in commands and "..." not in commands
    assert {"train", "generate", "models", "info", "eval"} <= set(
        re.findall(r"^  (\w+)", commands, re.M)
    )
    assert "--install-completion" in listing
    for command in ("train", "generate", "tokenizer train"):
        text = run(*command.split(), "--help", env={"COLUMNS": "100"}).stdout
        assert "list[" not in text and "[default: (" not in text, command


def test_version():
    from textgen import __version__

    assert run("--version").stdout == f"textgen {__version__}\n"


# -- words and numbers -------------------------------------------------------------------------


def test_counts_read_right(home, textgen, capsys):
    _, out, err = textgen("tokenize", "word", "--model", "demo")
    assert "1 word ·" in err
    from textgen.units import count, plural

    assert (count(2_614), count(40_960), count(999)) == ("2.6k", "41.0k", "999")
    assert (plural(1, "process"), plural(2, "process"), plural(3, "token")) == (
        "1 process",
        "2 processes",
        "3 tokens",
    )


def test_a_micro_batch_that_does_not_divide_the_batch_is_a_usage_error(
    textgen, corpus_file, tmp_path
):
    code, _, err = textgen(
        "train", str(corpus_file), "--model", str(tmp_path / "m"), "--batch-size", "8",
        "--micro-batch-size", "3",
    )  # fmt: skip
    one_line_error(code, err, 2, "--micro-batch-size 3 does not divide the 8 sequences a step")


def test_a_format_version_written_as_text_is_named_as_such(home, textgen):
    path = home / "demo" / "config.json"
    data = json.loads(path.read_text())
    data["format_version"] = "1"
    path.write_text(json.dumps(data))
    code, _, err = textgen("info", "--model", "demo")
    one_line_error(code, err, 1, "format_version should be the number 1, not '1'")


def test_after_training_the_hint_uses_the_corpus_own_first_word(textgen, tmp_path):
    corpus = tmp_path / "japanese.txt"
    corpus.write_text("吾輩は猫である。名前はまだ無い。" * 300)
    options = ["--size", "tiny", "--context", "16", "--steps", "2", "--vocab-size", "300"]
    code, _, err = textgen("train", str(corpus), "--model", str(tmp_path / "m"), *options)
    assert code == 0, err
    assert "try: textgen generate '吾輩は猫である。名前はまだ無い。吾輩は猫' --model" in err
    assert "★ best, saved" in err  # the final evaluation's weights are the ones kept


def test_every_file_of_a_model_has_the_same_permissions_by_the_umask(tmp_path, corpus_file):
    folder = tmp_path / "m"
    done = subprocess.run(
        [
            "bash",
            "-c",
            "umask 027 && " + " ".join(train_command(corpus_file, folder, "--steps", "3")),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
    assert set(modes.values()) == {"0o640"}, modes


# -- narrow terminals --------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [20, 40, 60])
def test_training_progress_fits_a_narrow_terminal(tmp_path, corpus_file, columns):
    args = train_command(corpus_file, tmp_path / "m", "--steps", "200", "--eval-interval", "100")
    terminal = run_in_terminal(args[3:], columns=columns)
    assert terminal.code == 0, terminal.screen
    progress = [
        line for line in terminal.raw.decode().split("\r") if "step" in line and "%" in line
    ]
    assert progress, terminal.screen
    plain = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line).strip("\n") for line in progress]
    assert max(len(line) for line in plain) <= columns


# -- the README -------------------------------------------------------------------------------


def readme_examples() -> list[str]:
    """The console examples of the README and the docs that run against the demo model."""
    lines = [line for page in [README, *DOCS] for line in page.read_text().splitlines()]
    commands = dict.fromkeys(line[2:] for line in lines if line.startswith("$ "))  # once each
    return [c for c in commands if "--model demo" in c and "train" not in c.split()[:2]]


@pytest.mark.skipif(not shutil.which("jq"), reason="the README's examples pipe into jq")
@pytest.mark.parametrize("example", readme_examples())
def test_every_readme_example_runs_as_written(home, tmp_path, example):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "textgen").write_text(f'#!/bin/sh\nexec {sys.executable} -m textgen "$@"\n')
    (bin_dir / "textgen").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    if example.startswith("textgen write"):  # in a terminal: a pick, a sample, Ctrl-C
        code, _, screen = keys_in_a_terminal(
            ["bash", "-o", "pipefail", "-c", example], [b"1", b"\t", b"\x03"], env=env, cwd=tmp_path
        )
        assert code == 0, screen
        assert (tmp_path / "story.txt").read_text().startswith("The list")
        return
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", example],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "error:" not in done.stderr and "Traceback" not in done.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name != "bin"]
    assert done.stdout.strip() or written, example  # the product: on stdout, or a file
    assert model_folder.has_weights(home / "demo")
