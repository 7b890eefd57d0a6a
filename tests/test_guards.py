"""Nothing a user has is replaced by any path to it, and no odd file, folder, stream or
size ends a command in a traceback or a kill: each refusal is one line, before any work."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import one_line_error, run_cli, train_command

from textgen.store import folder as model_folder


@pytest.fixture
def textgen(capsys, monkeypatch):
    return lambda *args, stdin=None: run_cli(capsys, monkeypatch, *args, stdin=stdin)


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def model(tmp_path, trained_folder):
    """A trained model of the user's, in models/victim."""
    folder = tmp_path / "models" / "victim"
    shutil.copytree(trained_folder, folder)
    return folder


@contextlib.contextmanager
def unwritable(folder):
    """`folder` made unwritable as the machine allows: immutable (chattr +i, which binds
    root too), else read-only for a user who is not root."""
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    if made.returncode != 0:
        if os.geteuid() == 0:
            pytest.skip("no chattr here, and root writes read-only folders")
        folder.chmod(0o555)
    try:
        yield
    finally:
        if made.returncode == 0:
            subprocess.run(["chattr", "-i", str(folder)])
        else:
            folder.chmod(0o755)


# -- no path replaces a model --------------------------------------------------------------


@pytest.mark.parametrize("form", ["hf", "gguf"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_export_never_replaces_a_model_nor_a_folder_holding_one(
    tmp_path, model, textgen, form, overwrite
):
    before = snapshot(model)
    extra = ["--overwrite"] if overwrite else []
    for out, words in ((model, "is a textgen model's folder"), (model.parent, "holds a textgen")):
        code, _, err = textgen("export", str(out), "--model", "victim", "--format", form, *extra)
        one_line_error(code, err, 1, words)
        assert "--overwrite" not in err.replace("train --overwrite", "")
    file = model / "model.safetensors"
    code, _, err = textgen("export", str(file), "--model", "victim", "--format", "gguf", *extra)
    one_line_error(code, err, 1, "is a file of the model in")
    assert snapshot(model) == before
    assert model_folder.load(model).model_config.n_layer == 2


def test_an_export_goes_into_an_empty_folder_and_anyone_may_read_it(tmp_path, model, textgen):
    out = tmp_path / "hf"
    out.mkdir()
    old = os.umask(0o022)
    try:
        code, _, err = textgen("export", str(out), "--model", "victim")
    finally:
        os.umask(old)
    assert code == 0, err
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {"0o644"}


def test_only_an_earlier_export_is_replaced_and_only_with_overwrite(tmp_path, model, textgen):
    for out in (tmp_path / "hf", tmp_path / "m.gguf"):
        assert textgen("export", str(out), "--model", "victim")[0] == 0
        code, _, err = textgen("export", str(out), "--model", "victim")
        one_line_error(code, err, 1, "holds an earlier")
        assert "add --overwrite" in err
        assert textgen("export", str(out), "--model", "victim", "--overwrite")[0] == 0
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"architectures": ["SomeoneElsesModel"]}')
    notes = tmp_path / "notes.gguf"
    notes.write_text("not a GGUF file")
    for out in (theirs, notes):
        code, _, err = textgen("export", str(out), "--model", "victim", "--overwrite")
        one_line_error(code, err, 1, "is not a")
        assert "never replaced" in err
    assert notes.read_text() == "not a GGUF file"


def test_html_and_pictures_never_replace_a_model_s_file(model, textgen):
    before = snapshot(model)
    for option, name in (("--html", "config.json"), ("--html", "model.safetensors")):
        target = model / name
        code, _, err = textgen(
            "explore", "The", "--model", "victim", option, str(target), "--overwrite"
        )
        one_line_error(code, err, 1, "is a file of the model in")
    pytest.importorskip("matplotlib")
    code, _, err = textgen(
        "attention",
        "The cat",
        "--model",
        "victim",
        "--save",
        str(model / "config.json"),
        "--overwrite",
    )
    one_line_error(code, err, 2, "--save")  # not a .png name, refused first
    code, _, err = textgen(
        "info", "--model", "victim", "--save", str(model / "x.png"), "--overwrite"
    )
    assert code == 0, err  # a new file beside the model is no model's file
    (model / "x.png").unlink()
    assert snapshot(model) == before


def test_a_link_to_a_model_s_file_is_never_written_through(tmp_path, model, corpus_file, textgen):
    before = snapshot(model)
    html = tmp_path / "page.html"
    html.symlink_to(model / "config.json")
    code, _, err = textgen(
        "explore", "The", "--model", "victim", "--html", str(html), "--overwrite"
    )
    one_line_error(code, err, 1, "is a file of the model in")
    assert "a link to" in err
    linked = tmp_path / "tok"
    linked.mkdir()
    (linked / "tokenizer.json").symlink_to(model / "tokenizer.json")
    code, _, err = textgen(
        "tokenizer", "train", str(corpus_file), "--model", str(linked), "--vocab-size", "290",
        "--overwrite",
    )  # fmt: skip
    assert code == 0, err  # the link is replaced by the new tokenizer, not written through
    assert not (linked / "tokenizer.json").is_symlink()
    assert snapshot(model) == before


def test_a_tokenizer_is_never_trained_over_a_model(model, corpus_file, textgen):
    before = snapshot(model)
    for extra in ((), ("--overwrite",)):
        code, _, err = textgen(
            "tokenizer",
            "train",
            str(corpus_file),
            "--model",
            "victim",
            "--vocab-size",
            "300",
            *extra,
        )
        one_line_error(code, err, 1, "holds a trained model, whose tokenizer is replaced only")
        assert "--resume" not in err
    assert snapshot(model) == before


# -- links, unwritable folders, leftovers ----------------------------------------------------


def test_overwrite_through_a_symlink_replaces_the_folder_it_points_to(tmp_path, model, corpus_file):
    real = tmp_path / "elsewhere" / "m"
    real.parent.mkdir()
    shutil.copytree(model, real)
    link = tmp_path / "models" / "m"
    link.symlink_to(real)
    done = subprocess.run(
        train_command(corpus_file, link, "--steps", "3", "--overwrite", "--seed", "7"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert model_folder.read_config(real)["training"]["steps"] == 3
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".m.")]
    assert not [p for p in real.parent.iterdir() if ".new-" in p.name or ".old-" in p.name]


@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount")
def test_a_link_to_another_filesystem_trains_and_publishes_there(tmp_path, model, corpus_file):
    other = tmp_path / "tmpfs"
    other.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(other)]).returncode:
        pytest.skip("cannot mount a filesystem here")
    try:
        shutil.copytree(model, other / "m")
        link = tmp_path / "models" / "m"
        link.symlink_to(other / "m")
        done = subprocess.run(
            train_command(corpus_file, link, "--steps", "3", "--overwrite"),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert model_folder.read_config(other / "m")["training"]["steps"] == 3
    finally:
        subprocess.run(["umount", "-l", str(other)])


def test_an_unwritable_model_folder_is_refused_before_training(model, corpus_file, textgen):
    before = snapshot(model)
    with unwritable(model):
        for extra in (("--resume", "--steps", "400"), (str(corpus_file), "--overwrite")):
            code, _, err = textgen("train", *extra, "--model", "victim", "--size", "tiny")
            one_line_error(code, err, 1, "cannot write there")
            assert "step " not in err  # refused before the first step
    assert snapshot(model) == before


def test_an_immutable_file_of_the_model_is_found_before_training(model, corpus_file, textgen):
    weights = model / "model.safetensors"
    if subprocess.run(["chattr", "+i", str(weights)], capture_output=True).returncode:
        pytest.skip("no chattr here")
    try:
        for extra in (("--resume", "--steps", "400"), (str(corpus_file), "--overwrite")):
            code, _, err = textgen("train", *extra, "--model", "victim", "--size", "tiny")
            one_line_error(code, err, 1, "model.safetensors: cannot write there")
    finally:
        subprocess.run(["chattr", "-i", str(weights)])
    assert not [p for p in model.parent.iterdir() if ".new-" in p.name]


def test_a_dead_run_s_staging_folder_is_cleaned_by_the_next(tmp_path, model, corpus_file, textgen):
    dead = model.parent / ".victim.new-999999999"  # no such process
    shutil.copytree(model, dead)
    code, _, err = textgen(
        "train", str(corpus_file), "--model", "victim", "--size", "tiny", "--context", "32",
        "--steps", "2", "--overwrite",
    )  # fmt: skip
    assert code == 0, err
    assert not dead.exists()
    assert [s["name"] for s in model_folder.survey(model.parent)[0]] == ["victim"]


# -- sizes past the machine ----------------------------------------------------------------


def test_a_batch_past_memory_is_refused_naming_the_option(corpus_file, textgen):
    code, _, err = textgen(
        "train", str(corpus_file), "--model", "big", "--size", "tiny", "--batch-size", "100000000"
    )
    one_line_error(code, err, 2, "--batch-size 100,000,000: a step's batch would need about")
    assert "use a smaller --batch-size" in err
    assert not (model_folder.models_home() / "big").exists()


def test_a_batch_past_memory_in_small_micro_batches_is_refused_too(corpus_file, textgen):
    code, _, err = textgen(
        "train", str(corpus_file), "--model", "big", "--size", "tiny", "--context", "32",
        "--batch-size", "100000000", "--micro-batch-size", "4",
    )  # fmt: skip
    one_line_error(code, err, 2, "--batch-size 100,000,000: a step's batch would need about")


def test_samples_past_memory_are_refused_naming_the_option(model, textgen):
    code, _, err = textgen("generate", "The", "--model", "victim", "--num-samples", "100000000")
    one_line_error(code, err, 2, "100,000,000 samples at once would need about")
    assert "use a smaller --num-samples" in err


# -- odd files, odd streams ----------------------------------------------------------------


def test_a_broken_link_in_a_corpus_folder_is_skipped_with_a_word(tmp_path, corpus_file, textgen):
    texts = tmp_path / "texts"
    texts.mkdir()
    shutil.copy(corpus_file, texts / "a.txt")
    (texts / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    code, _, err = textgen(
        "train", str(texts), "--model", "m", "--size", "tiny", "--context", "32", "--steps", "1"
    )
    assert code == 0, err
    assert "skipped 1 broken links and files that cannot be read (gone.txt)" in err


def test_a_training_state_with_a_negative_step_is_damaged_not_a_bad_option(model, textgen):
    state = torch.load(model / "train_state.pt", weights_only=True)
    state["step"] = -5
    torch.save(state, model / "train_state.pt")
    code, _, err = textgen("train", "--model", "victim", "--resume", "--steps", "5")
    one_line_error(code, err, 1, "train_state.pt: unreadable or damaged")


def test_a_malicious_pickle_is_refused_in_one_line_without_torch_s_warnings(model, textgen):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    (model / "train_state.pt").write_bytes(pickle.dumps(Payload()))
    code, out, err = textgen("train", "--model", "victim", "--resume", "--steps", "5")
    one_line_error(code, err, 1, "train_state.pt: unreadable or damaged")
    assert "owned" not in out


@pytest.mark.parametrize("value", ["", "   ", "FILE"])
def test_textgen_home_empty_or_a_file_is_one_line(tmp_path, monkeypatch, textgen, value):
    if value == "FILE":
        value = str(tmp_path / "a-file")
        (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("TEXTGEN_HOME", value)
    code, _, err = textgen("models")
    one_line_error(code, err, 1, "TEXTGEN_HOME")


def closed(fd: int):
    return lambda: os.close(fd)


def test_closed_standard_streams(model):
    env = {**os.environ, "TEXTGEN_HOME": str(model.parent)}
    argv = [sys.executable, "-m", "textgen", "generate", "The", "--model", "victim", "-n", "5"]
    kept = subprocess.run(argv, capture_output=True, text=True, env=env, preexec_fn=closed(1))
    assert kept.returncode == 1
    one_line_error(kept.returncode, kept.stderr, 1, "standard output is closed")
    for fd in (0, 2):  # a closed stdin reads as empty; a closed stderr stops nothing
        done = subprocess.run(argv, capture_output=True, text=True, env=env, preexec_fn=closed(fd))
        assert done.returncode == 0 and done.stdout, (fd, done.stderr)
    listed = subprocess.run(
        [sys.executable, "-m", "textgen", "models"], capture_output=True, text=True, env=env,
        preexec_fn=closed(2),
    )  # fmt: skip
    assert listed.returncode == 0 and "victim" in listed.stdout
    quiet = subprocess.run(  # a command whose product is not on stdout runs without it
        [sys.executable, "-m", "textgen", "export", str(model.parent / "out.gguf"), "--model",
         "victim"], capture_output=True, text=True, env=env, preexec_fn=closed(1),
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    no_prompt = subprocess.run(
        argv[:4] + argv[5:], capture_output=True, text=True, env=env, preexec_fn=closed(0)
    )
    assert no_prompt.returncode == 0, no_prompt.stderr  # an empty stdin: from the start of a text
