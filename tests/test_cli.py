"""The command line end to end: stdout carries only the product, everything else goes to
stderr, and every error is one line with an exit code.

Real subprocesses check what only a process shows (pipes, bytes, import time); the rest
runs in this process through `textgen.cli.app.main`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ANSI, one_line_error, run, run_cli, train_command

from textgen.cli.options import unescape
from textgen.store import folder as model_folder
from textgen.training import recipe


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


# -- through real processes: pipes, bytes, import time --------------------------------------


def test_generate_from_stdin_prints_only_the_text(cli_model):
    options = ["--seed", "1", "-n", "25", "--show-top", "3"]
    result = run("generate", "--model", str(cli_model), *options, stdin="The cat\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert not ANSI.search(result.stdout)
    assert "model's top 3" not in result.stdout and "model's top 3" in result.stderr
    assert "Traceback" not in result.stderr


def test_stdout_is_exactly_the_generated_text(cli_model):
    """Piped output equals the library's text for the same settings: no prompt echo,
    no added newline, no notices."""
    from textgen.decode.completion import Completion
    from textgen.settings import SampleConfig

    completion = Completion(
        model_folder.load(cli_model), "A child", SampleConfig(seed=11, max_new_tokens=30)
    )
    list(completion)
    argv = ("generate", "A child", "--model", str(cli_model), "--seed", "11", "-n", "30")
    result = run(*argv, text=False)
    assert result.stdout.decode("utf-8") == completion.samples[0].text


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


def test_help_and_option_errors_do_not_import_torch():
    code = (
        "import sys, textgen.cli.app; assert 'torch' not in sys.modules, 'torch imported'; "
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
    assert run("--help").returncode == 0


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


# -- in this process ------------------------------------------------------------------------


@pytest.fixture
def textgen(capsys, monkeypatch):
    """`textgen ARGS` in this process: (exit code, stdout, stderr)."""
    return lambda *args, stdin=None: run_cli(capsys, monkeypatch, *args, stdin=stdin)


def test_same_seed_same_text_through_the_cli(cli_model, textgen):
    argv = ("generate", "The dog", "--model", str(cli_model), "--seed", "7", "-t", "1")
    a, b = textgen(*argv), textgen(*argv)
    assert a[0] == b[0] == 0
    assert a[1] == b[1]


def test_long_prompt_gets_a_one_line_notice_on_stderr(cli_model, textgen):
    options = ("-n", "5", "--seed", "0")
    code, _, err = textgen(
        "generate", "--model", str(cli_model), *options, stdin="The bird sees the moon. " * 50
    )
    assert code == 0
    notices = [line for line in err.splitlines() if "context window" in line]
    assert len(notices) == 1 and "kept its last 32 tokens" in notices[0]


@pytest.mark.parametrize("value", ["2.5", "-1", "nan"])
def test_temperature_out_of_range_is_a_usage_error_naming_the_cap(cli_model, textgen, value):
    code, out, err = textgen("generate", "x", "--model", str(cli_model), "--temperature", value)
    one_line_error(code, err, 2, "2 is the cap")
    assert out == ""


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
        (["train", "--resume", "--overwrite"], 2, "--resume cannot be combined with --overwrite"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_bad_input_is_one_clear_line_and_an_exit_code(textgen, args, code, message):
    exit_code, out, err = textgen(*args)
    one_line_error(exit_code, err, code, message)
    assert out == ""


def test_retraining_a_trained_model_asks_first(cli_model, corpus_file, textgen):
    before = (cli_model / "model.safetensors").read_bytes()
    code, _, err = textgen("train", str(corpus_file), "--model", str(cli_model), "--steps", "1")
    assert code == 1
    assert "--resume" in err and "--overwrite" in err
    assert (cli_model / "model.safetensors").read_bytes() == before


def test_info_models_and_tokenize(cli_model, textgen, monkeypatch):
    code, out, _ = textgen("info", "--model", str(cli_model))
    assert code == 0
    assert "parameters" in out and "bits/byte" in out

    monkeypatch.setenv("TEXTGEN_HOME", str(cli_model.parent))
    code, out, _ = textgen("models")
    assert code == 0 and "piped" in out

    code, out, _ = textgen("tokenize", "The cat 😀", "--model", str(cli_model))
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert all(len(r) == 2 and r[0].isdigit() for r in rows)
    code, out, _ = textgen("tokenize", "The cat 😀", "--model", str(cli_model), "--ids")
    assert out.split() == [r[0] for r in rows]


def test_tokenizer_train_then_train_uses_it(corpus_file, tmp_path, textgen):
    folder = tmp_path / "two-step"
    code, _, err = textgen(
        "tokenizer", "train", str(corpus_file), "--vocab-size", "280", "--model", str(folder)
    )
    assert code == 0, err
    options = ["--steps", "2", "--size", "tiny", "--context", "16"]
    code, _, err = textgen("train", str(corpus_file), "--model", str(folder), *options)
    assert code == 0, err
    assert "using the folder's tokenizer" in err


def _regularisation(folder) -> tuple[float, float, float]:
    settings = model_folder.load_train_state(folder)["train_config"]
    return (
        model_folder.load(folder).model.config.dropout,
        settings["bpe_dropout"],
        settings["weight_decay"],
    )


def test_a_run_that_reads_its_text_many_times_is_regularised_and_one_that_reads_it_once_not(
    corpus_file, tmp_path, textgen
):
    """Dropout, BPE-dropout and weight decay follow from the epochs the budget plans on
    the corpus, and the run says what it chose."""
    options = ["--size", "tiny", "--context", "32", "--batch-size", "16", "--vocab-size", "260"]
    once = tmp_path / "once"  # 2 steps of 512 tokens: a fraction of the corpus
    code, _, err = textgen(
        "train", str(corpus_file), "--model", str(once), "--steps", "2", *options
    )
    assert code == 0, err
    assert _regularisation(once) == (0.0, 0.0, recipe.WEIGHT_DECAY)
    assert "dropout 0, BPE-dropout 0 and weight decay 0.1 for 0.1 epochs of its text" in err
    small = tmp_path / "small.txt"  # about 900 tokens, read about 40 times in 80 steps
    small.write_text(corpus_file.read_text(encoding="utf-8")[:2500], encoding="utf-8")
    many = tmp_path / "many"
    code, _, err = textgen("train", str(small), "--model", str(many), "--steps", "80", *options)
    assert code == 0, err
    chosen = (recipe.DROPOUT, recipe.BPE_DROPOUT, recipe.MANY_EPOCHS_WEIGHT_DECAY)
    assert _regularisation(many) == chosen
    given = tmp_path / "given"  # what the user gives is kept
    code, _, err = textgen(
        "train", str(small), "--model", str(given), "--steps", "80", "--dropout", "0.3", *options
    )
    assert code == 0, err
    assert _regularisation(given) == (0.3, *chosen[1:])
    assert "BPE-dropout 0.1 and weight decay 1 for" in err and "dropout 0.3" not in err


def test_generate_json_is_one_object_per_sample(cli_model, textgen):
    options = ("--json", "--seed", "3", "-n", "12", "--num-samples", "2")
    code, out, err = textgen("generate", "The cat", "--model", str(cli_model), *options)
    assert code == 0, err
    samples = [json.loads(line) for line in out.splitlines()]
    assert [s["sample"] for s in samples] == [0, 1]
    for s in samples:
        assert s["generated_tokens"] == len(s["tokens"]) and s["settings"]["seed"] == 3
        assert all(len(t["top"]) == 5 and t["logprob"] <= 0 for t in s["tokens"])


def test_score_and_eval_report_the_same_bits_per_byte(cli_model, tmp_path, textgen):
    text = "The old fox finds the river near the house. A child likes the moon.\n" * 6
    path = tmp_path / "held_out.txt"
    path.write_text(text)
    code, scored, err = textgen(
        "score", "-", "--model", str(cli_model), "--json", stdin=text + "\n"
    )
    assert code == 0, err
    code, evaluated, err = textgen("eval", str(path), "--model", str(cli_model), "--json")
    assert code == 0, err
    s, e = json.loads(scored), json.loads(evaluated)
    assert s["bits_per_byte"] == pytest.approx(e["bits_per_byte"], rel=1e-9)
    assert s["bytes"] == e["bytes"] == len(text.encode())
    assert all(t["surprisal_bits"] >= 0 for t in s["tokens"])


def test_attention_json_rows_sum_to_one_with_nothing_above_the_diagonal(cli_model, textgen):
    code, out, err = textgen(
        "attention", "The dog chases the ball", "--model", str(cli_model), "--json", "--layer", "0"
    )
    assert code == 0, err
    data = json.loads(out)
    assert set(data["heads"]) == {"0", "1"}  # the tiny preset has 2 heads
    for matrix in data["heads"].values():
        assert len(matrix) == len(data["tokens"])
        for i, row in enumerate(matrix):
            assert sum(row) == pytest.approx(1, abs=1e-5)
            assert all(w == 0 for w in row[i + 1 :])


def test_attention_rejects_a_layer_the_model_does_not_have(cli_model, textgen):
    code, _, err = textgen("attention", "x", "--model", str(cli_model), "--layer", "7")
    one_line_error(code, err, 2, "layers 0 to 1")


def test_stop_strings_understand_shell_escapes():
    assert unescape(r"\n\n") == "\n\n"
    assert unescape(r"a\tb") == "a\tb"
    assert unescape(r"keep \\n literal") == "keep \\n literal"
    assert unescape("plain ✓") == "plain ✓"
