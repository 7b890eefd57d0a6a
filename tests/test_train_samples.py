"""Watching a model learn: `textgen train` writes a short sample from the weights as they
are at each validation pass (or every --sample-every steps), into samples.jsonl and onto
the screen, without changing the run in any way."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pytest
import torch
from helpers import TINY, one_line_error, run, train_command
from safetensors.torch import load_file

from textgen.settings import TrainConfig
from textgen.store import folder as model_folder
from textgen.store.metrics import read_metrics, read_samples
from textgen.text.corpus import open_corpus
from textgen.training.run import train

# dropout on: a sample that drew from the run's random numbers would change its masks
SHAPE = replace(TINY, dropout=0.2)
CONFIG = TrainConfig(
    steps=60, time_budget=None, batch_size=8, eval_interval=20, seed=4, bpe_dropout=0.0
)


def _cli_train(corpus_file, folder, *options) -> subprocess.CompletedProcess:
    argv = train_command(corpus_file, folder, *options)
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def _train(corpus_file, folder, **changes):
    with open_corpus([str(corpus_file)]) as corpus:
        return train(folder, corpus, replace(CONFIG, **changes), SHAPE, vocab_size=300)


def test_a_run_with_samples_ends_bitwise_where_one_without_them_ends(corpus_file, tmp_path):
    _train(corpus_file, tmp_path / "with", sample_every=10, sample_tokens=20)
    _train(corpus_file, tmp_path / "without", sample_every=0)
    a = load_file(str(tmp_path / "with" / model_folder.WEIGHTS))
    b = load_file(str(tmp_path / "without" / model_folder.WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = model_folder.load_train_state(tmp_path / "with")["model"]
    sb = model_folder.load_train_state(tmp_path / "without")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert len(read_samples(tmp_path / "with")) == 6
    assert not (tmp_path / "without" / "samples.jsonl").exists()


def test_each_validation_pass_leaves_a_sample_from_the_same_prompt_and_seed(corpus_file, tmp_path):
    folder = tmp_path / "m"
    _train(corpus_file, folder, sample_tokens=16)
    samples, metrics = read_samples(folder), read_metrics(folder)
    assert [s["step"] for s in samples] == [m["step"] for m in metrics] == [20, 40, 60]
    first_word = corpus_file.read_text(encoding="utf-8").split()[0]
    assert {s["prompt"] for s in samples} == {first_word}
    assert all(s["text"] for s in samples)
    assert [s["val_bpb"] for s in samples] == [m["val_bpb"] for m in metrics]
    assert [s["tokens"] for s in samples] == [m["tokens"] for m in metrics]
    # the same seed and weights give the same sample: a second run agrees step by step
    again = tmp_path / "again"
    _train(corpus_file, again, sample_tokens=16)
    assert [s["text"] for s in read_samples(again)] == [s["text"] for s in samples]


def test_the_samples_go_to_stderr_one_line_each_and_info_shows_the_first_and_last(
    corpus_file, tmp_path
):
    folder = tmp_path / "cli"
    options = ("--steps", "40", "--eval-interval", "20", "--sample-prompt", "The dog\\n")
    done = _cli_train(corpus_file, folder, *options)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("sample step")]
    assert [line.split(":")[0] for line in lines] == ["sample step 20", "sample step 40"]
    written = [json.loads(line.split(": ", 1)[1]) for line in lines]  # the text, escaped
    samples = read_samples(folder)
    assert written == [s["prompt"] + s["text"] for s in samples]
    assert all(s["prompt"] == "The dog\n" for s in samples)
    info = run("info", "--model", str(folder))
    assert "first sample: step 20: The dog↵" in info.stdout
    assert "last sample: step 40: The dog↵" in info.stdout
    as_json = json.loads(run("info", "--model", str(folder), "--json").stdout)
    assert [s["step"] for s in as_json["samples"]] == [20, 40]


def test_sample_every_zero_turns_samples_off(corpus_file, tmp_path):
    folder = tmp_path / "off"
    done = _cli_train(corpus_file, folder, "--steps", "20", "--sample-every", "0")
    assert done.returncode == 0, done.stderr
    assert "sample step" not in done.stderr
    assert not (folder / "samples.jsonl").exists()


@pytest.mark.parametrize("option, value", [("--sample-every", "-1"), ("--sample-tokens", "-3")])
def test_a_bad_sample_setting_is_one_line_naming_it(corpus_file, tmp_path, option, value):
    done = _cli_train(corpus_file, tmp_path / "bad", "--steps", "5", option, value)
    one_line_error(done.returncode, done.stderr, 2, option)
