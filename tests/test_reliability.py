"""Nothing the user has is lost: exact resume, crash safety, and a clear answer (one line,
the right exit code, no traceback) to every bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, one_line_error, run_cli, train_command
from safetensors.torch import load_file

from textgen.decode.completion import Completion
from textgen.errors import TextgenError
from textgen.records import EvalReport
from textgen.settings import SampleConfig, TrainConfig
from textgen.store import folder as model_folder
from textgen.text.corpus import open_corpus
from textgen.training.run import resume, train

SETTINGS = dict(steps=40, time_budget=None, batch_size=4, eval_interval=10, seed=3, bpe_dropout=0.0)


def _train(folder: Path, corpus_file: Path, callback=lambda e: None, **changes):
    config = TrainConfig(**{**SETTINGS, **changes})
    with open_corpus([str(corpus_file)]) as corpus:
        return train(folder, corpus, config, TINY, vocab_size=300, callback=callback)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_interrupted_and_resumed_run_ends_with_bitwise_the_same_weights(
    tmp_path, corpus_file, optimizer
):
    _train(tmp_path / "straight", corpus_file, optimizer=optimizer)

    def interrupt_at_20(event):
        if isinstance(event, EvalReport) and event.step == 20:
            raise KeyboardInterrupt

    stopped = _train(tmp_path / "resumed", corpus_file, interrupt_at_20, optimizer=optimizer)
    assert stopped.interrupted and stopped.steps == 20
    with open_corpus([str(corpus_file)]) as corpus:
        finished = resume(tmp_path / "resumed", corpus)
    assert finished.steps == 40 and not finished.interrupted

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, corpus_file, monkeypatch):
    folder = tmp_path / "m"
    _train(folder, corpus_file)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != model_folder.METRICS}

    def disk_full(fd):  # every save flushes its temporary file before renaming it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_folder.os, "fsync", disk_full)
    with (
        open_corpus([str(corpus_file)]) as corpus,
        pytest.raises(TextgenError, match="No space left on device.*previous checkpoint is intact"),
    ):
        resume(folder, corpus, more_steps=15)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != model_folder.METRICS}
    assert after == before  # every file whole and unchanged, no temporary left behind
    assert model_folder.load_train_state(folder)["step"] == 40


def test_sigkill_at_random_moments_never_leaves_an_unloadable_model(tmp_path, corpus_file):
    """Kill a training run with SIGKILL several times, resuming each time: every state
    left behind loads, and the run still finishes. Each kill comes at a random moment
    after the run's first save (saves come every few milliseconds), whatever the
    machine's speed."""
    folder = tmp_path / "killed"
    base = train_command(
        corpus_file, folder, "--batch-size", "4", "--save-every", "3", "--eval-interval", "1000"
    )
    state_file = folder / model_folder.TRAIN_STATE
    rng = random.Random(0)
    killed_after = []
    for attempt in range(4):
        args = base + (["--resume", "--steps", "150"] if attempt else ["--steps", "600"])
        saved_before = state_file.stat().st_mtime_ns if attempt else None
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if state_file.exists() and state_file.stat().st_mtime_ns != saved_before:
                break  # this run has saved once
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.5))
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, "the run ended before it was killed"
        model_folder.load(folder)  # the model loads ...
        killed_after.append(model_folder.load_train_state(folder)["step"])  # ... and its state
    assert killed_after == sorted(killed_after) and killed_after[-1] > killed_after[0]
    final = subprocess.run(base + ["--resume"], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert "resuming" in final.stderr
    assert model_folder.load_train_state(folder)["step"] > killed_after[-1]
    model_folder.load(folder)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["generate", "x", "-t", "-0.5"], 2, "between 0 and 2"),
        (["generate", "x", "-t", "2.0001"], 2, "2 is the cap"),
        (["generate", "x", "-t", "nan"], 2, "got nan"),
        (["generate", "x", "--top-p", "0"], 2, "--top-p must be in (0, 1]"),
        (["generate", "x", "--top-p", "1.01"], 2, "--top-p must be in (0, 1]"),
        (["generate", "x", "--top-k", "0"], 2, "--top-k must be at least 1"),
        (["generate", "x", "-n", "-1"], 2, "--max-new-tokens must be >= 0"),
        (["generate", "x", "--num-samples", "0"], 2, "--num-samples must be at least 1"),
        (["train", "--context", "0"], 2, "context window must be 2 to"),
        (["train", "--layers", "0"], 2, "the model needs at least 1 layer"),
        (["train", "--size", "huge"], 2, "choose auto or one of tiny, small"),
        (["train", "--vocab-size", "100"], 2, "--vocab-size must be at least 257"),
        (["train", "--lr", "-1"], 2, "--lr must be a positive number"),
        (["train", "--bpe-dropout", "1"], 2, "--bpe-dropout must be within [0, 1)"),
        (["train", "--save-every", "0"], 2, "--save-every must be at least 1"),
        (["train", "--device", "tpu"], 2, "--device"),
        (["train", "--seed", "99999999999999999999"], 2, "--seed must be 0 to"),
        (["generate", "x", "--seed", "-1"], 2, "--seed must be 0 to"),
        (["train", "--vocab-size", "10m"], 2, "--vocab-size can be at most 262,144"),
    ],
)
def test_option_values_out_of_range(capsys, monkeypatch, args, code, message):
    one_line_error(*run_cli(capsys, monkeypatch, *args)[::2], code, message)


def test_empty_corpus_files_and_folders(capsys, monkeypatch, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG\x00\x00")
    code, _, err = run_cli(capsys, monkeypatch, "train", str(tmp_path / "empty.txt"))
    one_line_error(code, err, 1, "the corpus is empty")
    code, _, err = run_cli(capsys, monkeypatch, "train", str(tmp_path / "images"))
    assert code == 1 and "holds no text files" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, monkeypatch, "train", "-", stdin="")
    one_line_error(code, err, 1, "standard input was empty")


def test_unreadable_corpus(capsys, monkeypatch, tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("text")
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # as root, chmod would not bite
    code, _, err = run_cli(capsys, monkeypatch, "train", str(path))
    one_line_error(code, err, 1, "permission denied")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "config.json").unlink(), "config.json: missing"),
        (lambda f: (f / "model.safetensors").unlink(), "model.safetensors: missing"),
        (lambda f: (f / "tokenizer.json").write_text("{}"), "tokenizer.json: not a readable"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 5), "unreadable or truncated"),
        (
            lambda f: (f / "config.json").write_text(
                '{"format_version": 1, "model": {"vocab_size": "big"}}'
            ),
            "vocab_size should be int",
        ),
    ],
)
def test_partial_or_corrupt_model_folders(
    capsys, monkeypatch, tmp_path, trained_folder, damage, message
):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(trained_folder, folder)
    damage(folder)
    code, out, err = run_cli(capsys, monkeypatch, "generate", "x", "--model", str(folder))
    one_line_error(code, err, 1, message)
    assert out == ""


def test_a_model_folder_cannot_run_code(tmp_path, trained_folder):
    """train_state.pt is read with weights_only: a pickle that would run code is refused."""
    import shutil

    folder = tmp_path / "evil"
    shutil.copytree(trained_folder, folder)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"step": Exploit()}, folder / "train_state.pt")
    with pytest.raises(TextgenError, match="train_state.pt: unreadable"):
        model_folder.load_train_state(folder)
    assert not (tmp_path / "pwned").exists()


def test_empty_and_whitespace_prompts_are_answered(capsys, monkeypatch, trained_folder):
    options = ("--model", str(trained_folder), "-n", "5", "--seed", "0")
    code, out, err = run_cli(capsys, monkeypatch, "generate", *options, stdin="")
    assert code == 0 and "no prompt: writing from the start of a text" in err
    code, out, err = run_cli(capsys, monkeypatch, "generate", "   ", *options)
    assert code == 0 and "only whitespace" in err


def test_a_one_megabyte_prompt_is_cut_to_the_window(lm):
    prompt = "The cat sees the moon by the sea. " * 30_000  # about 1 MB
    completion = Completion(lm, prompt, SampleConfig(max_new_tokens=2, seed=0))
    assert completion.truncated and completion.prompt_tokens is None
    window = lm.model_config.context_window
    assert completion.prompt_ids == lm.tokenizer.encode(prompt[-4000:])[-window:]
    assert len(list(completion)) >= 1


def test_resume_without_a_checkpoint_and_retrain_without_asking(
    capsys, monkeypatch, tmp_path, corpus_file, trained_folder
):
    code, _, err = run_cli(
        capsys, monkeypatch, "train", str(corpus_file), "--model", str(tmp_path / "new"), "--resume"
    )
    one_line_error(code, err, 1, "nothing to resume")
    code, _, err = run_cli(
        capsys,
        monkeypatch,
        "train",
        str(corpus_file),
        "--model",
        str(trained_folder),
        "--steps",
        "1",
    )
    one_line_error(code, err, 1, "already holds a trained model")


def test_config_json_written_by_training_is_strict_json(trained_folder):
    text = (trained_folder / "config.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
