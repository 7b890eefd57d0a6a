"""A full disk or a read-only folder ends a run with one line that says so, and leaves
what was there as it was: on real small filesystems (tmpfs, where this machine lets the
suite mount one) and with the failure injected at each write of a checkpoint."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid

import pytest
from helpers import train_command

from textgen.errors import TextgenError
from textgen.store import folder as model_folder
from textgen.store import metrics
from textgen.text.corpus import open_corpus
from textgen.training.run import resume


@contextlib.contextmanager
def small_filesystem(tmp_path, size: str, read_only: bool = False):
    """A tmpfs of `size` mounted at a fresh folder; skips where mounting is not allowed."""
    where = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a filesystem needs root")
@pytest.mark.parametrize("size", ["10k", "400k", "3m"])
def test_a_full_disk_is_one_line_and_leaves_no_broken_model(tmp_path, corpus_file, size):
    with small_filesystem(tmp_path, size) as disk:
        folder = disk / "m"
        done = subprocess.run(
            train_command(corpus_file, folder, "--steps", "30", "--eval-interval", "10"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = done.stderr.strip().splitlines()
        if done.returncode == 0:  # it fitted after all: then it is whole
            model_folder.load(folder)
            return
        assert done.returncode == 1, done.stderr
        assert lines[-1].startswith("error:") and "No space left on device" in lines[-1]
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
        assert not folder.exists()  # a new model appears whole, or not at all
        assert [p.name for p in disk.iterdir()] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a filesystem needs root")
def test_a_read_only_place_is_refused_before_any_work(tmp_path, corpus_file):
    with small_filesystem(tmp_path, "1m", read_only=True) as disk:
        done = subprocess.run(
            train_command(corpus_file, disk / "m", "--steps", "3"),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {disk}: cannot write there (Read-only file system)"
    ]


WRITES = ["weights", "config", "state", "metrics"]


@pytest.mark.parametrize("failing", WRITES)
def test_a_failed_write_at_any_point_of_a_checkpoint_keeps_the_previous_one(
    tmp_path, trained_folder, corpus_file, monkeypatch, failing
):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != model_folder.METRICS}
    module, saving = {
        "weights": (model_folder, "save_weights"),
        "config": (model_folder, "save_config"),
        "state": (model_folder, "save_train_state"),
        "metrics": (metrics, "append_metrics"),
    }[failing]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, saving, disk_full)
    with (
        open_corpus([str(corpus_file)]) as corpus,
        pytest.raises(TextgenError, match=r"\(No space left on device\); the previous checkpoint"),
    ):
        resume(folder, corpus, more_steps=15)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != model_folder.METRICS}
    if failing in ("weights", "config"):  # the model's files: written, or as they were
        assert after[model_folder.TRAIN_STATE] == before[model_folder.TRAIN_STATE]
    assert not [name for name in after if name.endswith(".tmp")]
    model_folder.load(folder)  # whatever moment it stopped at, the folder loads ...
    state = model_folder.load_train_state(folder)  # ... and resumes
    assert state["step"] in (200, 215)
