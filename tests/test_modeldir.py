"""The model folder: save -> load is exact, and every broken folder is a clear error."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from rich.console import Console

from textgen import files
from textgen.errors import TextgenError
from textgen.store import folder as model_folder
from textgen.store.metrics import read_metrics
from textgen.text.tokenizer import Tokenizer
from textgen.ui.training import LossCurve


@pytest.fixture
def folder_copy(trained_folder, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(trained_folder, target)
    return target


def test_save_then_load_gives_identical_logits(lm, tmp_path):
    model_folder.save_weights(tmp_path, lm.model)
    model_folder.save_tokenizer(tmp_path, lm.tokenizer)
    model_folder.save_config(tmp_path, lm.model_config, lm.tokenizer)
    again = model_folder.load(tmp_path)
    ids = torch.tensor([lm.tokenizer.encode("The cat sees the moon.")])
    with torch.no_grad():
        torch.testing.assert_close(again.model(ids)[0], lm.model(ids)[0], rtol=0, atol=0)


def test_folder_holds_the_documented_files(trained_folder):
    names = {p.name for p in trained_folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_state.pt",
        "metrics.jsonl",
    } <= names
    config = json.loads((trained_folder / "config.json").read_text())
    assert config["format_version"] == model_folder.FORMAT_VERSION
    assert config["tokenizer"]["vocab_size"] == config["model"]["vocab_size"]
    assert config["training"]["steps"] == 200


def test_parameter_count_from_the_header_matches_the_model(lm, trained_folder):
    assert model_folder.count_parameters(trained_folder) == lm.model.num_parameters()


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(TextgenError, match="no such model folder"):
        model_folder.load(tmp_path / "absent")


def test_tokenizer_from_another_model_is_refused(folder_copy):
    Tokenizer.train(["other text " * 50], 280).save(folder_copy / "tokenizer.json")
    with pytest.raises(TextgenError, match="tokenizer.json.*another model"):
        model_folder.load(folder_copy)


def test_truncated_weights_are_refused(folder_copy):
    weights = folder_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(TextgenError, match="model.safetensors: unreadable or truncated"):
        model_folder.load(folder_copy)


def test_config_that_disagrees_with_the_weights_is_refused(folder_copy):
    path = folder_copy / "config.json"
    data = json.loads(path.read_text())
    data["model"]["n_embd"] = 128
    path.write_text(json.dumps(data))
    with pytest.raises(TextgenError, match="does not match config.json"):
        model_folder.load(folder_copy)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format_version=99), "format version 99"),
        (lambda d: d["model"].update(n_head=5), "not divisible"),
        (lambda d: d["model"].update(colour="blue"), "unknown ModelConfig field"),
    ],
)
def test_hand_edited_config_is_refused(folder_copy, edit, message):
    path = folder_copy / "config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(TextgenError, match=message):
        model_folder.load(folder_copy)


def test_config_that_is_not_json_is_refused(folder_copy):
    (folder_copy / "config.json").write_text("{not json")
    with pytest.raises(TextgenError, match="config.json: not valid JSON"):
        model_folder.load(folder_copy)


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "file.txt"
    files.write_text(target, "version 1")

    def failing(tmp):
        tmp.write_text("half of version 2")
        raise OSError(28, "No space left on device")

    with pytest.raises(files.WriteError, match=r"file.txt \(No space left on device\)"):
        files.atomic_write(target, failing)
    assert target.read_text() == "version 1"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]  # no temporary left behind


def test_names_live_under_models_home_and_paths_are_used_as_given(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGEN_HOME", str(tmp_path))
    assert model_folder.resolve("tiny") == tmp_path / "tiny"
    assert model_folder.resolve("./mine") == Path("./mine")
    assert model_folder.resolve("/data/m") == Path("/data/m")


def test_a_metrics_file_in_any_state_never_breaks_a_command(folder_copy, capsys, monkeypatch):
    """After a kill and a resume, or an edit: lines out of order, repeated, cut short or
    not metrics at all. Each step is shown once, in order, the latest line winning."""
    lines = [
        '{"step": 200, "train_loss": 2.0, "val_loss": 2.1, "val_bpb": 1.5, "final": true}',
        '{"step": 100, "train_loss": 3.0, "val_loss": 3.1, "val_bpb": 2.0}',
        '{"step": 300, "train_loss": 1.9, "val_loss": 2.0, "val_bpb": 1.4}',
        '{"step": 200, "train_loss": 2.2, "val_loss": 2.3, "val_bpb": 1.6}',
        '{"step": "many", "val_loss": 1}',
        '{"step": 400, "val_loss": "low"}',
        "[1, 2, 3]",
        '{"step": 500, "train_loss": 1.8, "val_l',
    ]
    (folder_copy / "metrics.jsonl").write_text("\n".join(lines))
    records = read_metrics(folder_copy)
    assert [(r["step"], r["val_loss"]) for r in records] == [(100, 3.1), (200, 2.3), (300, 2.0)]
    code, out, err = run_cli(capsys, monkeypatch, "info", "--model", str(folder_copy))
    assert code == 0, err
    assert "evaluations: 3 in metrics.jsonl" in out
    terminal = Console(file=io.StringIO(), width=80)
    terminal.print(LossCurve(records))  # and the curve draws them
    assert "validation loss" in terminal.file.getvalue()


def test_a_hand_edited_config_cannot_make_textgen_allocate_its_size(folder_copy):
    path = folder_copy / "config.json"
    data = json.loads(path.read_text())
    data["model"].update(n_embd=60_000, n_head=1)  # a model of terabytes
    path.write_text(json.dumps(data))
    with pytest.raises(TextgenError, match="needs .* GB, more than this machine's"):
        model_folder.load(folder_copy)
    data["model"].update(n_embd=64, n_head=4, context_window=10**9)
    path.write_text(json.dumps(data))
    with pytest.raises(TextgenError, match="context window must be 2 to 1,048,576 tokens"):
        model_folder.load(folder_copy)


def test_loading_a_model_leaves_torch_s_compiler_unloaded(trained_folder):
    """`textgen generate`'s first token waits for the model to load: building it must not
    initialise weights it then overwrites (on the meta device that loads torch._dynamo,
    a second or more of start-up)."""
    check = (
        "import sys; from pathlib import Path; from textgen.store.folder import load; "
        f"lm = load(Path({str(trained_folder)!r})); "
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
