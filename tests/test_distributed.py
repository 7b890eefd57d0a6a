"""Scale: gradient accumulation and data-parallel training across processes (torchrun,
gloo on CPU) train the same model as one process taking the whole batch at once.

The runs below use dropout 0: with dropout, each process draws its own masks, which is
right but makes the runs differ by more than arithmetic. The tolerance, 1e-4 on weights of
size ~0.02-1 after 4 steps, allows for sums taken in another order (float32).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import TINY, train_command

from textgen.errors import TextgenError
from textgen.settings import TrainConfig
from textgen.store import folder as model_folder
from textgen.text.corpus import open_corpus
from textgen.training.run import train

TOLERANCE = 1e-4


def final_weights(folder) -> dict[str, torch.Tensor]:
    return model_folder.load_train_state(folder)["model"]


def assert_same_weights(a, b) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=TOLERANCE, rtol=0), name
    # and the runs did move the weights (the comparison is not of two initialisations)
    assert model_folder.load_train_state(a)["step"] == 4


def _train(folder, corpus_file, **overrides):
    config = TrainConfig(
        steps=4,
        time_budget=None,
        batch_size=8,
        eval_interval=100,
        seed=0,
        bpe_dropout=0.0,
        **overrides,
    )
    with open_corpus([str(corpus_file)]) as corpus:
        return train(folder, corpus, config, TINY, vocab_size=300)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_micro_batches_train_the_same_model_as_the_whole_batch(tmp_path, corpus_file, optimizer):
    whole = _train(tmp_path / "whole", corpus_file, optimizer=optimizer)
    parts = _train(tmp_path / "parts", corpus_file, optimizer=optimizer, micro_batch_size=2)
    assert whole.tokens_seen == parts.tokens_seen == 4 * 8 * TINY.context_window
    assert_same_weights(tmp_path / "whole", tmp_path / "parts")


def test_a_batch_that_does_not_split_into_micro_batches_is_refused(tmp_path, corpus_file):
    with pytest.raises(TextgenError, match="--micro-batch-size 3 does not divide the 8"):
        _train(tmp_path / "m", corpus_file, micro_batch_size=3)


def test_torchrun_with_two_processes_trains_what_one_process_trains(tmp_path, corpus_file):
    # The same tokenizer in both folders, so only the training differs.
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(
        [sys.executable, "-m", "textgen", "tokenizer", "train", str(corpus_file)]
        + ["--model", str(one), "--vocab-size", "300"],
        check=True,
        capture_output=True,
    )
    shutil.copytree(one, two)  # the tokenizer, with the record of its corpus
    options = ["--steps", "4", "--batch-size", "8", "--dropout", "0", "--seed", "0"]
    single = subprocess.run(
        train_command(corpus_file, one, *options, "--micro-batch-size", "4"),
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr
    assert "gradients accumulated over 2 micro-batches a step" in single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    argv = train_command(corpus_file, two, *options)[1:]  # after the interpreter
    env = dict(os.environ, OMP_NUM_THREADS="1")
    double = subprocess.run(
        [*launcher, "--nproc-per-node", "2", *argv], capture_output=True, text=True, env=env
    )
    assert double.returncode == 0, double.stderr
    assert "data parallel over 2 processes" in double.stderr
    assert double.stderr.count("training done") == 1  # only process 0 reports
    assert_same_weights(one, two)


def test_training_flops_count_every_matrix_multiply_once(monkeypatch):
    """MFU's numerator: 6 FLOPs per matmul weight per token, plus attention; measured here
    against a count of the multiply-adds of one forward pass (x3 for the backward), with
    attention spelled out as matrix products so that the counter sees them."""
    from torch.utils.flop_counter import FlopCounterMode

    from textgen.inside.readout import attention_weights
    from textgen.model.transformer import Transformer

    def explicit(q, k, v, attn_mask=None, is_causal=False):
        return attention_weights(q, k) @ v  # (B, H, T, D)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", explicit)
    config = TINY.config(300)
    model = Transformer(config)
    ids = torch.randint(0, 300, (1, config.context_window))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids)
    measured = 3 * counter.get_total_flops() / config.context_window
    assert model.training_flops_per_token() == pytest.approx(measured, rel=0.02)


def test_peak_flops_can_be_given_for_any_device(monkeypatch):
    from textgen.model.device import peak_flops

    monkeypatch.setenv("TEXTGEN_PEAK_TFLOPS", "2.5")
    assert peak_flops(torch.device("cpu")) == 2.5e12
    monkeypatch.setenv("TEXTGEN_PEAK_TFLOPS", "fast")
    with pytest.raises(TextgenError, match="TEXTGEN_PEAK_TFLOPS='fast': give a number"):
        peak_flops(torch.device("cpu"))
    monkeypatch.delenv("TEXTGEN_PEAK_TFLOPS")
    assert peak_flops(torch.device("cpu")) is None  # unknown for CPUs
