"""The command line end to end, through real subprocesses: stdout carries only the
product, everything else goes to stderr, and every error is one line with an exit code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import train_command

from textgen import modeldir

ANSI = re.compile(r"\x1b\[")


def run(
    *args: str, stdin: str | None = None, env: dict | None = None, text: bool = True
) -> subprocess.CompletedProcess:
    """`textgen ARGS` as a subprocess; `text=False` keeps stdout as bytes (text mode would
    turn a generated carriage return into a newline)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "textgen", *args],
        input=stdin if text or stdin is None else stdin.encode(),
        capture_output=True,
        text=text,
        env=full_env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, corpus_file) -> Path:
    """A model trained through the CLI itself, with the corpus piped on stdin. Without
    BPE-dropout, whose segmentations come from the tokenizer's unseeded generator, the same
    model is trained in every test session."""
    folder = tmp_path_factory.mktemp("cli") / "piped"
    options = ["--steps", "30", "--batch-size", "8", "--eval-interval", "15", "--bpe-dropout", "0"]
    result = subprocess.run(
        train_command("-", folder, *options),
        input=corpus_file.read_text(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # training writes nothing to stdout
    assert "final" in result.stderr and "bits/byte" in result.stderr
    assert not ANSI.search(result.stderr)  # stderr is a pipe here: no colour
    return folder


def test_generate_from_stdin_prints_only_the_text(cli_model):
    result = run(
        "generate",
        "--model",
        str(cli_model),
        "--seed",
        "1",
        "-n",
        "25",
        "--show-top",
        "3",
        stdin="The cat\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert not ANSI.search(result.stdout)
    assert "top candidates" not in result.stdout and "top candidates" in result.stderr
    assert "Traceback" not in result.stderr


def test_same_seed_same_text_through_the_cli(cli_model):
    a = run("generate", "The dog", "--model", str(cli_model), "--seed", "7", "-t", "1")
    b = run("generate", "The dog", "--model", str(cli_model), "--seed", "7", "-t", "1")
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout


def test_stdout_is_exactly_the_generated_text(cli_model):
    """Piped output equals the library's text for the same settings: no prompt echo,
    no added newline, no notices."""
    from textgen import modeldir
    from textgen.complete import Completion
    from textgen.config import SampleConfig

    completion = Completion(
        modeldir.load(cli_model), "A child", SampleConfig(seed=11, max_new_tokens=30)
    )
    list(completion)
    argv = ("generate", "A child", "--model", str(cli_model), "--seed", "11", "-n", "30")
    result = run(*argv, text=False)
    assert result.stdout.decode("utf-8") == completion.texts[0]


def test_long_prompt_gets_a_one_line_notice_on_stderr(cli_model):
    result = run(
        "generate",
        "--model",
        str(cli_model),
        "-n",
        "5",
        "--seed",
        "0",
        stdin="The bird sees the moon. " * 50,
    )
    assert result.returncode == 0
    notices = [line for line in result.stderr.splitlines() if "context window" in line]
    assert len(notices) == 1 and "kept its last 32 tokens" in notices[0]


@pytest.mark.parametrize("value", ["2.5", "-1", "nan"])
def test_temperature_out_of_range_is_a_usage_error_naming_the_cap(cli_model, value):
    result = run("generate", "x", "--model", str(cli_model), "--temperature", value)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 is the cap" in lines[0]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["generate", "x", "--model", "no-such-model"], 1, "no such model folder"),
        (["generate", "x", "--top-p", "1.5"], 2, "--top-p"),
        (["generate", "x", "--top-k", "zero"], 2, "--top-k"),
        (["train", "missing-file.txt", "--steps", "1"], 1, "no such file or folder"),
        (["train", "--size", "gigantic"], 2, "--size"),
        (["train", "--time", "5 parsecs"], 2, "--time: unknown time unit"),
        (["train", "--vocab-size", "12", "--steps", "1"], 2, "at least 257"),
        (["train", "--heads", "3"], 2, "not divisible by 3 heads"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_bad_input_is_one_clear_line_and_an_exit_code(args, code, message):
    result = run(*args)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and message in lines[0]
    assert result.stdout == ""


def test_retraining_a_trained_model_asks_first(cli_model, corpus_file):
    before = (cli_model / "model.safetensors").read_bytes()
    result = run("train", str(corpus_file), "--model", str(cli_model), "--steps", "1")
    assert result.returncode == 1
    assert "--resume" in result.stderr and "--overwrite" in result.stderr
    assert (cli_model / "model.safetensors").read_bytes() == before


def test_closed_pipe_ends_quietly(cli_model):
    command = (
        f"{sys.executable} -m textgen generate 'The' --model {cli_model} -n 400 "
        "--seed 0 | head -c 5"
    )
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, timeout=300
    )  # bytes: `head -c 5` may cut a character in two
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) <= 5
    assert result.stderr == b""


def test_info_models_and_tokenize(cli_model, tmp_path):
    info = run("info", "--model", str(cli_model))
    assert info.returncode == 0
    assert "parameters" in info.stderr and "bits/byte" in info.stderr

    home = cli_model.parent
    listing = run("models", env={"TEXTGEN_HOME": str(home)})
    assert listing.returncode == 0 and "piped" in listing.stderr

    tokens = run("tokenize", "The cat 😀", "--model", str(cli_model))
    assert tokens.returncode == 0
    rows = [line.split("\t") for line in tokens.stdout.splitlines()]
    assert all(len(r) == 2 and r[0].isdigit() for r in rows)
    ids = run("tokenize", "The cat 😀", "--model", str(cli_model), "--ids")
    assert ids.stdout.split() == [r[0] for r in rows]


def test_tokenizer_train_then_train_uses_it(corpus_file, tmp_path):
    folder = tmp_path / "two-step"
    made = run(
        "tokenizer", "train", str(corpus_file), "--vocab-size", "280", "--model", str(folder)
    )
    assert made.returncode == 0, made.stderr
    trained = run(
        "train",
        str(corpus_file),
        "--model",
        str(folder),
        "--steps",
        "2",
        "--size",
        "tiny",
        "--context",
        "16",
    )
    assert trained.returncode == 0, trained.stderr
    assert "using the folder's tokenizer" in trained.stderr
    # A small corpus is read many times over: the CLI regularises by default.
    recipe = modeldir.load_train_state(folder)["train_config"]
    assert recipe["bpe_dropout"] == 0.1
    assert modeldir.load(folder).model.config.dropout == 0.2


def test_help_and_option_errors_do_not_import_torch():
    code = (
        "import sys, textgen.cli; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
    assert run("--help").returncode == 0


def test_generate_json_is_one_object_per_sample(cli_model):
    result = run(
        "generate",
        "The cat",
        "--model",
        str(cli_model),
        "--json",
        "--seed",
        "3",
        "-n",
        "12",
        "--num-samples",
        "2",
    )
    assert result.returncode == 0, result.stderr
    samples = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["sample"] for s in samples] == [0, 1]
    for s in samples:
        assert s["generated_tokens"] == len(s["tokens"]) and s["settings"]["seed"] == 3
        assert all(len(t["top"]) == 5 and t["logprob"] <= 0 for t in s["tokens"])


def test_score_and_eval_report_the_same_bits_per_byte(cli_model, tmp_path):
    text = "The old fox finds the river near the house. A child likes the moon.\n" * 6
    path = tmp_path / "held_out.txt"
    path.write_text(text)
    scored = run("score", "-", "--model", str(cli_model), "--json", stdin=text + "\n")
    evaluated = run("eval", str(path), "--model", str(cli_model), "--json")
    assert scored.returncode == evaluated.returncode == 0, scored.stderr + evaluated.stderr
    s, e = json.loads(scored.stdout), json.loads(evaluated.stdout)
    assert s["bits_per_byte"] == pytest.approx(e["bits_per_byte"], rel=1e-9)
    assert s["bytes"] == e["bytes"] == len(text.encode())
    assert all(t["surprisal_bits"] >= 0 for t in s["tokens"])


def test_attention_json_rows_sum_to_one_with_nothing_above_the_diagonal(cli_model):
    result = run(
        "attention", "The dog chases the ball", "--model", str(cli_model), "--json", "--layer", "0"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data["heads"]) == {"0", "1"}  # the tiny preset has 2 heads
    for matrix in data["heads"].values():
        assert len(matrix) == len(data["tokens"])
        for i, row in enumerate(matrix):
            assert sum(row) == pytest.approx(1, abs=1e-5)
            assert all(w == 0 for w in row[i + 1 :])


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "The", "-n", "10", "--show-top", "3", "--seed", "0"],
        ["score", "The cat sees the moon."],
        ["attention", "The cat sees the moon.", "--head", "0"],
        ["attention", "The cat sees the moon."],
        ["tokenize", "The cat sees the moon."],
        ["info"],
    ],
)
def test_nothing_written_to_a_pipe_has_escape_codes(cli_model, args):
    result = run(*args, "--model", str(cli_model))
    assert result.returncode == 0, result.stderr
    assert not ANSI.search(result.stdout) and not ANSI.search(result.stderr)
    assert result.stdout.strip() or result.stderr.strip()


def test_attention_rejects_a_layer_the_model_does_not_have(cli_model):
    result = run("attention", "x", "--model", str(cli_model), "--layer", "7")
    assert result.returncode == 2
    assert "layers 0 to 1" in result.stderr


def test_stop_strings_understand_shell_escapes():
    from textgen.cli import _unescape

    assert _unescape(r"\n\n") == "\n\n"
    assert _unescape(r"a\tb") == "a\tb"
    assert _unescape(r"keep \\n literal") == "keep \\n literal"
    assert _unescape("plain ✓") == "plain ✓"
