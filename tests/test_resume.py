"""A run stopped in any way resumes to exactly where an uninterrupted one would be, and
`--resume` means what it says: its own corpus, that much more training, one history."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest
import torch
from helpers import TINY, one_line_error, run_cli, train_command
from safetensors.torch import load_file

from textgen.errors import SettingError, TextgenError
from textgen.settings import TrainConfig
from textgen.store import folder as model_folder
from textgen.store.metrics import read_metrics
from textgen.text.corpus import open_corpus
from textgen.training.run import resume, train

# Both of training's random sources on: dropout and BPE-dropout (which the recipe would
# leave off at the few epochs these 400 steps read).
RUN = ("--steps", "400", "--eval-interval", "20", "--save-every", "7", "--batch-size", "4")
RUN += ("--dropout", "0.2", "--bpe-dropout", "0.1")


def same_weights(a, b) -> bool:
    wa, wb = load_file(str(a / model_folder.WEIGHTS)), load_file(str(b / model_folder.WEIGHTS))
    sa, sb = model_folder.load_train_state(a), model_folder.load_train_state(b)
    return (
        wa.keys() == wb.keys()
        and all(torch.equal(wa[k], wb[k]) for k in wa)
        and all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
        and sa["step"] == sb["step"]
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory, corpus_file):
    """The run as it goes when nothing stops it."""
    folder = tmp_path_factory.mktemp("straight") / "m"
    done = subprocess.run(train_command(corpus_file, folder, *RUN), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_run_stopped_by_a_signal_resumes_to_bitwise_the_weights_of_one_never_stopped(
    tmp_path, corpus_file, straight, name, code
):
    folder = tmp_path / "m"
    process = subprocess.Popen(
        train_command(corpus_file, folder, *RUN), stderr=subprocess.PIPE, text=True
    )
    seen = []
    for line in process.stderr:  # into the training loop: its first progress line
        seen.append(line)
        if line.startswith("step "):
            break
    time.sleep(random.Random(name).uniform(0, 0.3))
    process.send_signal(getattr(signal, name))
    err = "".join(seen) + process.communicate(timeout=120)[1]
    assert process.returncode == code, err
    assert "saving a checkpoint" in err and "Traceback" not in err
    assert f"to go on from here: textgen train --model {folder} --resume" in err
    stopped_at = model_folder.load_train_state(folder)["step"]
    assert 0 < stopped_at < 400
    result = resume(folder)  # no corpus given: the run's own
    assert result.steps == 400 and not result.interrupted
    assert same_weights(folder, straight)


def test_a_run_killed_with_sigkill_resumes_to_bitwise_the_same_weights(
    tmp_path, corpus_file, straight
):
    folder = tmp_path / "m"
    state = folder / model_folder.TRAIN_STATE
    process = subprocess.Popen(
        train_command(corpus_file, folder, *RUN),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(1).uniform(0, 0.3))
    process.kill()
    assert process.wait() == -signal.SIGKILL, "the run ended before it was killed"
    model_folder.load(folder)  # what a kill leaves loads
    resume(folder)
    assert same_weights(folder, straight)
    steps = [m["step"] for m in read_metrics(folder)]
    assert steps == sorted(set(steps)) and steps[-1] == 400  # one history, in order


def _timed_run(folder, corpus_file, **settings):
    config = TrainConfig(batch_size=4, eval_interval=10, seed=0, bpe_dropout=0.0, **settings)
    with open_corpus([str(corpus_file)]) as corpus:
        return train(folder, corpus, config, TINY, vocab_size=300)


def test_resume_with_steps_trains_that_many_more_after_a_time_budget(tmp_path, corpus_file):
    folder = tmp_path / "m"
    first = _timed_run(folder, corpus_file, steps=None, time_budget=1.0)
    again = resume(folder, more_steps=5)
    assert again.steps == first.steps + 5
    finals = [m["step"] for m in read_metrics(folder) if m["final"]]
    assert finals == [first.steps, first.steps + 5]


def test_resume_with_time_trains_more_after_a_step_budget(tmp_path, corpus_file):
    folder = tmp_path / "m"
    first = _timed_run(folder, corpus_file, steps=5, time_budget=None)
    again = resume(folder, more_time=1.0)
    assert again.steps > first.steps


def test_a_run_saved_before_a_default_changed_resumes_as_it_trained(tmp_path, corpus_file):
    """Exact resume across versions: a training state that names no Muon weight decay was
    trained without one, and one that names no way of drawing windows drew them at
    random; each goes on so, not with today's default."""
    folder = tmp_path / "m"
    _timed_run(folder, corpus_file, steps=5, time_budget=None)
    path = folder / model_folder.TRAIN_STATE
    state = torch.load(path, weights_only=False)
    assert state["train_config"]["muon_weight_decay"] == TrainConfig().muon_weight_decay > 0
    assert state["train_config"]["sampling"] == TrainConfig().sampling == "epochs"
    del state["train_config"]["muon_weight_decay"], state["train_config"]["sampling"]
    del state["data_epoch"]
    torch.save(state, path)
    resume(folder, more_steps=2)
    again = torch.load(path, weights_only=False)
    assert again["step"] == 7 and again["train_config"]["muon_weight_decay"] == 0.0
    assert again["train_config"]["sampling"] == "random"


def test_resuming_a_finished_run_without_more_budget_says_so(tmp_path, corpus_file):
    folder = tmp_path / "m"
    _timed_run(folder, corpus_file, steps=5, time_budget=None)
    before = (folder / model_folder.METRICS).read_text()
    with pytest.raises(SettingError, match=r"already finished its budget \(5 steps\).*--steps"):
        resume(folder)
    assert (folder / model_folder.METRICS).read_text() == before  # no duplicate final line


def test_resume_finds_the_runs_own_corpus_and_refuses_one_that_changed(tmp_path, corpus_file):
    text = tmp_path / "notes.txt"
    text.write_text(corpus_file.read_text())
    folder = tmp_path / "m"
    config = TrainConfig(steps=4, batch_size=4, eval_interval=100, seed=0, bpe_dropout=0.0)
    with open_corpus([str(text)]) as corpus:
        train(folder, corpus, config, TINY, vocab_size=300)
    assert resume(folder, more_steps=2).steps == 6  # found again, by its fingerprint
    text.write_text(corpus_file.read_text().replace("cat", "cow"))
    with pytest.raises(TextgenError, match=r"notes.txt\) has changed since: give it as CORPUS"):
        resume(folder, more_steps=2)
    text.unlink()
    with pytest.raises(TextgenError, match=r"notes.txt\) is no longer where it was"):
        resume(folder, more_steps=2)


def test_resume_of_a_run_on_standard_input_asks_for_the_text_again(
    tmp_path, corpus_file, capsys, monkeypatch
):
    folder = tmp_path / "m"
    options = ["--size", "tiny", "--context", "32", "--vocab-size", "300", "--steps", "3"]
    code, _, err = run_cli(
        capsys, monkeypatch, "train", "-", "--model", str(folder), *options,
        stdin=corpus_file.read_text(),
    )  # fmt: skip
    assert code == 0, err
    assert model_folder.read_config(folder)["training"]["corpus"] == "standard input"
    code, _, err = run_cli(
        capsys, monkeypatch, "train", "--model", str(folder), "--resume", "--steps", "2"
    )
    one_line_error(code, err, 1, "from standard input, which cannot be read again")


def test_a_closed_stderr_never_stops_training(tmp_path, corpus_file):
    """`textgen train ... 2>&1 | head -3`: what cannot be shown is dropped, the run goes on
    to its end and leaves a model that can be resumed."""
    folder = tmp_path / "m"
    command = " ".join(train_command(corpus_file, folder, "--steps", "60", "--eval-interval", "20"))
    done = subprocess.run(
        ["bash", "-c", f"{command} 2>&1 | head -3; exit ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout
    assert len(done.stdout.splitlines()) == 3
    assert model_folder.load_train_state(folder)["step"] == 60
    assert [m["step"] for m in read_metrics(folder)] == [20, 40, 60]
