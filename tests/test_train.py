"""Training: loss falls, the schedule, budgets, and never replacing a model silently."""

from __future__ import annotations

import ctypes
import math
import subprocess
import sys

import pytest
from helpers import TINY

from textgen.errors import SettingError, TextgenError
from textgen.records import EvalReport, Notice
from textgen.settings import TrainConfig
from textgen.store import folder as model_folder
from textgen.store.metrics import read_metrics
from textgen.text.corpus import open_corpus
from textgen.text.tokenizer import Tokenizer
from textgen.training.optim import lr_multiplier
from textgen.training.recipe import default_vocab_size
from textgen.training.run import resume, train
from textgen.units import parse_count, parse_duration


def test_validation_loss_falls_well_below_chance(trained_folder, lm):
    metrics = read_metrics(trained_folder)
    assert [(m["step"], m["final"]) for m in metrics] == [(100, False), (200, True)]
    assert metrics[-1]["final"]
    chance = math.log(lm.model_config.vocab_size)
    assert metrics[-1]["val_loss"] < chance / 2
    assert metrics[-1]["val_loss"] <= metrics[0]["val_loss"]
    assert 0 < metrics[-1]["val_bpb"] < 3


def test_schedule_warms_up_holds_and_decays_to_zero():
    assert lr_multiplier(0, 0.0, warmup_steps=10, cooldown_fraction=0.4) == pytest.approx(0.1)
    assert lr_multiplier(50, 0.3, warmup_steps=10, cooldown_fraction=0.4) == 1.0
    assert lr_multiplier(80, 0.8, warmup_steps=10, cooldown_fraction=0.4) == pytest.approx(0.5)
    assert lr_multiplier(99, 1.0, warmup_steps=10, cooldown_fraction=0.4) == 0.0
    assert lr_multiplier(99, 1.3, warmup_steps=10, cooldown_fraction=0.4) == 0.0  # never < 0


def _train(folder, corpus_file, events=None, overwrite=False, **overrides):
    settings = dict(
        steps=5, time_budget=None, batch_size=4, eval_interval=100, seed=0, bpe_dropout=0.0
    )
    settings.update(overrides)
    with open_corpus([str(corpus_file)]) as corpus:
        return train(
            folder,
            corpus,
            TrainConfig(**settings),
            TINY,
            vocab_size=300,
            overwrite=overwrite,
            callback=events.append if events is not None else lambda e: None,
        )


def test_a_trained_folder_is_never_replaced_without_asking(tmp_path, corpus_file):
    folder = tmp_path / "m"
    _train(folder, corpus_file)
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(TextgenError, match="--resume.*--overwrite"):
        _train(folder, corpus_file)
    assert (folder / "model.safetensors").read_bytes() == before


def test_resume_with_more_steps_extends_the_run(tmp_path, corpus_file):
    folder = tmp_path / "m"
    _train(folder, corpus_file)
    with open_corpus([str(corpus_file)]) as corpus:
        result = resume(folder, corpus, more_steps=3)
    assert result.steps == 8
    assert model_folder.read_config(folder)["training"]["steps"] == 8


def test_overwrite_replaces_the_model_and_its_history(tmp_path, corpus_file):
    folder = tmp_path / "m"
    _train(folder, corpus_file, steps=6)
    _train(folder, corpus_file, overwrite=True, steps=2)
    assert model_folder.read_config(folder)["training"]["steps"] == 2
    assert [m["step"] for m in read_metrics(folder)] == [2]


def test_time_budget_stops_the_run(tmp_path, corpus_file):
    events = []
    result = _train(tmp_path / "m", corpus_file, events, steps=None, time_budget=1.0)
    assert result.steps >= 1
    assert any(isinstance(e, EvalReport) and e.final for e in events)


def test_a_folders_tokenizer_is_reused_for_the_corpus_it_was_trained_on(
    tmp_path, corpus_file, tokenizer
):
    folder = tmp_path / "m"
    with open_corpus([str(corpus_file)]) as corpus:
        model_folder.save_tokenizer_only(folder, tokenizer, "stories", corpus.fingerprint)
    events = []
    _train(folder, corpus_file, events)
    assert any(isinstance(e, Notice) and "folder's tokenizer" in e.message for e in events)
    assert model_folder.load_tokenizer(folder).to_json() == tokenizer.to_json()


def test_a_folders_tokenizer_from_other_text_is_refused_unless_kept(tmp_path, corpus_file):
    """A tokenizer left by a failed run, or trained on other text, would tokenize this
    corpus into bytes: it is used only when asked for."""
    folder = tmp_path / "m"
    other = Tokenizer.train(["completely different words " * 100], 280)
    model_folder.save_tokenizer_only(folder, other, "notes.txt", "another fingerprint")
    with pytest.raises(TextgenError, match="tokenizer trained on notes.txt.*--keep-tokenizer"):
        _train(folder, corpus_file)
    assert not model_folder.has_weights(folder)
    with open_corpus([str(corpus_file)]) as corpus:
        config = TrainConfig(steps=2, time_budget=None, batch_size=4, bpe_dropout=0.0)
        train(folder, corpus, config, TINY, callback=lambda e: None, keep_tokenizer=True)
    assert model_folder.load(folder).tokenizer.to_json() == other.to_json()


def test_corpus_smaller_than_a_context_window_is_a_clear_error(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("Just a few words.")
    with pytest.raises(TextgenError, match="corpus is too small.*--context"):
        _train(tmp_path / "m", small)


def test_durations_and_counts_read_like_people_write_them():
    assert parse_duration("90s") == 90
    assert parse_duration("5m") == 300
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45") == 45
    assert parse_count("4k") == 4000
    assert parse_count("2M") == 2_000_000
    for bad in ("", "5 parsecs", "-3m", "0s"):
        with pytest.raises(SettingError):
            parse_duration(bad)


def test_default_vocabulary_grows_with_the_corpus():
    assert default_vocab_size(20_000) == 512
    assert default_vocab_size(465_000) == 1024
    assert default_vocab_size(10**10) == 32768


def test_one_validation_pass_gives_the_full_figure_and_the_checkpoint_yardstick(lm):
    """The final pass reports all held-out tokens and, from the same pass, the figure on
    the first eval_tokens that checkpoints are compared by: as two separate passes would."""
    import numpy as np

    from textgen.training.evaluate import evaluate, token_byte_lengths

    ids = np.array(lm.tokenizer.encode("The cat sees the moon by the sea. " * 40))
    lengths = token_byte_lengths(lm.tokenizer.token_bytes)
    both = evaluate(lm.model, ids, lengths, first_tokens=50)
    full, head = both.result, both.first
    expected_full = evaluate(lm.model, ids, lengths).result
    expected_head = evaluate(lm.model, ids, lengths, max_tokens=50).result
    assert (full.tokens, head.tokens) == (expected_full.tokens, 50) and full.tokens > 50
    assert full.loss == pytest.approx(expected_full.loss, rel=1e-5)
    assert head.loss == pytest.approx(expected_head.loss, rel=1e-5)
    assert head.bits_per_byte == pytest.approx(expected_head.bits_per_byte, rel=1e-5)


KEPT_MEMORY = """
import ctypes, sys, torch
from textgen.model.device import prepare_device
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "prepared":
    prepare_device(torch.device("cpu"))
step = torch.ones(16 * 2**20)  # 64 MB of activations, freed when the step ends
del step
print(libc.mallinfo2().fordblks)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="glibc's malloc only",
)
def test_training_on_cpu_keeps_the_memory_a_step_frees_for_the_next():
    def free_bytes_kept(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", KEPT_MEMORY, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    assert free_bytes_kept("prepared") >= 64 * 2**20  # ready for the next step
    assert free_bytes_kept("plain") < 64 * 2**20  # glibc's default gives it back


def test_recipe_classic_trains_nanogpt_s_shape_and_options_still_count(
    tmp_path, corpus_file, capsys, monkeypatch
):
    from helpers import run_cli

    folder = tmp_path / "classic"
    code, _, err = run_cli(
        capsys, monkeypatch, "train", str(corpus_file), "--model", str(folder),
        "--recipe", "classic", "--steps", "2", "--context", "32",
    )  # fmt: skip
    assert code == 0, err
    meta = model_folder.read_config(folder)
    config = meta["model_config"]
    assert (config.n_layer, config.n_embd, config.n_head) == (4, 128, 4)
    assert (config.position, config.norm, config.activation) == ("learned", "layernorm", "gelu")
    assert config.context_window == 32 and config.vocab_size == 257  # bytes for characters
    state = torch_load_config(folder)
    assert state["optimizer"] == "adamw" and state["batch_size"] == 12
    code, _, err = run_cli(
        capsys, monkeypatch, "train", "--model", str(folder), "--resume", "--recipe", "classic"
    )
    assert code == 2 and "--recipe starts a new model" in err
    code, _, err = run_cli(capsys, monkeypatch, "train", "--recipe", "nano")
    assert code == 2 and "--recipe: choose one of default, classic" in err


def torch_load_config(folder) -> dict:
    import torch

    return torch.load(folder / "train_state.pt", weights_only=True)["train_config"]
