"""The model folder has one writer, is never left broken, and never loses a file of the
user's; a hand-edited config.json is loaded as it was or refused in one line."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest
import torch
from helpers import make_corpus, one_line_error, run_cli, train_command
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from textgen.errors import TextgenError
from textgen.store import folder as model_folder
from textgen.store.metrics import read_metrics
from textgen.text.tokenizer import Tokenizer


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def start_training(corpus_file, folder, *options):
    """A long `textgen train` in the background, once it is in its training loop."""
    process = subprocess.Popen(
        train_command(corpus_file, folder, "--steps", "100000", *options),
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stderr:
        if line.startswith("step "):
            return process
    raise AssertionError(f"the run ended early: {process.wait()}")


@pytest.fixture
def textgen(capsys, monkeypatch):
    return lambda *args, stdin=None: run_cli(capsys, monkeypatch, *args, stdin=stdin)


def test_a_second_writer_is_refused_naming_the_first(tmp_path, corpus_file, textgen):
    folder = tmp_path / "m"
    first = start_training(corpus_file, folder, "--save-every", "20")
    try:
        options = ("--model", str(folder), "--steps", "1")
        for extra in ((str(corpus_file), "--overwrite"), ("--resume",)):
            code, _, err = textgen("train", *extra, *options)
            one_line_error(code, err, 1, f"{folder} is being written by textgen (pid {first.pid}")
        deadline = time.monotonic() + 120
        while not (folder / model_folder.TRAIN_STATE).exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # its first checkpoint
    finally:
        first.send_signal(signal.SIGKILL)  # its lock goes with it
        first.wait()
    code, _, err = textgen("train", "--model", str(folder), "--resume", "--steps", "1")
    assert code == 0, err


def test_overwrite_keeps_the_old_model_whole_until_the_new_one_is_saved(
    tmp_path, corpus_file, trained_folder, textgen
):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    before = snapshot(folder)
    run = start_training(corpus_file, folder, "--overwrite", "--eval-interval", "100000")
    assert snapshot(folder) == before  # training, with no checkpoint yet: all as it was
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert snapshot(folder) == before
    model_folder.load(folder)
    code, _, err = textgen("train", str(corpus_file), "--model", str(folder), "--overwrite",
                           "--size", "tiny", "--context", "32", "--steps", "3")  # fmt: skip
    assert code == 0, err
    assert model_folder.read_config(folder)["training"]["steps"] == 3
    assert [m["step"] for m in read_metrics(folder)] == [3]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["m"]  # nothing left beside it


def test_files_textgen_did_not_write_are_never_replaced(tmp_path, corpus_file, textgen):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("buy bread")
    for extra in ((), ("--overwrite",)):
        code, _, err = textgen("train", str(corpus_file), "--model", str(notes), *extra)
        one_line_error(code, err, 1, "holds files textgen did not write (todo.txt)")
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "metrics.jsonl").write_text("my own measurements\n")
    code, _, err = textgen("train", str(corpus_file), "--model", str(theirs), "--steps", "1")
    one_line_error(code, err, 1, "holds metrics.jsonl that textgen did not write; add --overwrite")
    assert (theirs / "metrics.jsonl").read_text() == "my own measurements\n"


def test_a_model_path_that_is_a_file_is_refused_before_any_work(tmp_path, corpus_file, textgen):
    path = tmp_path / "model.bin"
    path.write_bytes(b"something of the user's")
    code, _, err = textgen("train", str(corpus_file), "--model", str(path), "--steps", "1")
    one_line_error(code, err, 1, "a file, not a folder")
    assert path.read_bytes() == b"something of the user's"


def test_a_tokenizer_of_the_same_size_from_another_model_is_refused(tmp_path, trained_folder):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    size = model_folder.load_tokenizer(folder).vocab_size
    texts = [make_corpus(seed=1).replace("the", "thy").replace("a", "o")]
    other = Tokenizer.train(texts, size)
    assert other.vocab_size == size
    other.save(folder / model_folder.TOKENIZER)
    with pytest.raises(TextgenError, match="not the tokenizer this model was trained with"):
        model_folder.load(folder)


def test_a_damaged_training_state_is_one_line_with_no_advice_to_unpickle(
    tmp_path, trained_folder, textgen
):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    (folder / model_folder.TRAIN_STATE).write_bytes(b"PK\x03\x04 not a real archive" * 50)
    code, _, err = textgen("train", "--model", str(folder), "--resume", "--steps", "1")
    one_line_error(code, err, 1, "train_state.pt: unreadable or damaged")
    assert "weights_only" not in err


# -- hand-edited config.json ----------------------------------------------------------------

MODEL_KEYS = list(model_folder.ModelConfig.__dataclass_fields__)
# Settings that change what the model computes but not the shapes of its weights: a valid
# edit of one is a different model, loaded exactly as written (a user's experiment with
# the rope base, say), never half-applied; every other edit loads the same model.
COMPUTING_KEYS = {"n_head", "norm", "activation", "qk_norm", "logit_softcap", "rope_base"}
json_values = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.lists(st.integers(0, 3), max_size=2)
)
edits = st.tuples(
    st.sampled_from(
        [("model", k) for k in MODEL_KEYS]
        + [("tokenizer", k) for k in ("vocab_size", "end_of_text_id", "sha256")]
        + [("training", k) for k in ("steps", "val_loss", "val_bits_per_byte", "corpus")]
        + [(None, "format_version"), (None, "model")]
    ),
    st.none() | json_values,  # None as the edit itself: the key is deleted
    st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edit=edits)
@example(edit=(("model", "logit_softcap"), 1, False))  # valid: a different model, as written
@example(edit=(("model", "dropout"), 0.5, False))  # no effect on a loaded model
@example(edit=(("model", "context_window"), 4, False))  # shorter than the test's text
def test_every_edit_of_config_json_loads_as_it_was_or_is_refused_in_one_line(
    tmp_path_factory, trained_folder, lm, edit
):
    (section, key), value, delete = edit
    folder = tmp_path_factory.mktemp("edited") / "m"
    shutil.copytree(trained_folder, folder)
    data = json.loads((folder / model_folder.CONFIG).read_text())
    target = data if section is None else data[section]
    if delete:
        target.pop(key, None)
    else:
        target[key] = value
    (folder / model_folder.CONFIG).write_text(json.dumps(data))  # NaN and Infinity included
    ids = torch.tensor([lm.tokenizer.encode("The cat sees the moon")])
    try:
        loaded = model_folder.load(folder)
    except TextgenError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    model_folder.read_config(folder)  # what `info` and `models` read is whole
    if section == "model" and key in COMPUTING_KEYS and not delete:
        assert getattr(loaded.model_config, key) == value  # the edit, as written
        with torch.no_grad():
            assert torch.isfinite(loaded.model(ids)[0]).all()
        return
    if section == "model" and key == "context_window" and not delete:
        assert loaded.model_config.context_window == value  # a shorter window, as written:
        ids = ids[:, :value]  # the same model on the texts that fit it
    with torch.no_grad():  # loaded: then it is the same model
        torch.testing.assert_close(loaded.model(ids)[0], lm.model(ids)[0], rtol=0, atol=0)
