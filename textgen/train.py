"""The training loop: corpus -> tokenizer -> token file -> model, with checkpoints.

It never prints: it reports through a callback that receives `Notice`, `StepReport`
and `EvalReport` events (`textgen.render` draws them). A run stops at a number of steps
or a wall-clock budget, whichever comes first; the learning rate warms up, holds, then
decays linearly to zero over the last part of the run, measured in steps or in time.
Ctrl-C saves a checkpoint and returns with `interrupted=True`.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textgen import modeldir
from textgen.config import ModelConfig, TrainConfig, default_vocab_size
from textgen.corpus import Corpus, encode_corpus
from textgen.device import autocast, choose_device
from textgen.errors import TextgenError
from textgen.evaluate import EvalResult, evaluate, token_byte_lengths
from textgen.model import Transformer
from textgen.tokenizer import Tokenizer


@dataclass
class Notice:
    message: str
    warning: bool = False


@dataclass
class RunStarted:
    parameters: int
    train_tokens: int
    val_tokens: int
    device: str
    max_steps: int | None
    time_budget: float | None
    start_step: int


@dataclass
class StepReport:
    step: int
    loss: float  # smoothed training loss
    learning_rate: float
    tokens_seen: int
    tokens_per_second: float
    elapsed: float
    fraction_done: float


@dataclass
class EvalReport:
    step: int
    elapsed: float
    tokens_seen: int
    train_loss: float
    result: EvalResult
    final: bool


@dataclass
class TrainResult:
    folder: Path
    steps: int
    tokens_seen: int
    elapsed: float
    parameters: int
    final_eval: EvalResult | None
    interrupted: bool


Callback = Callable[[Any], None]


def lr_multiplier(
    step: int, fraction_done: float, warmup_steps: int, cooldown_fraction: float
) -> float:
    """Warm up linearly over `warmup_steps`, hold, then decay linearly to zero over the last
    `cooldown_fraction` of the run. `fraction_done` is steps or time spent over the budget."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    remaining = max(0.0, 1.0 - fraction_done)
    cool = 1.0 if cooldown_fraction <= 0 else min(1.0, remaining / cooldown_fraction)
    return warm * cool


def fraction_done(step: int, elapsed: float, config: TrainConfig) -> float:
    """How far through its budget the run is: the larger of the step and time fractions."""
    fractions = [0.0]
    if config.steps is not None:
        fractions.append(step / config.steps)
    if config.time_budget is not None:
        fractions.append(elapsed / config.time_budget)
    return min(1.0, max(fractions))


class Batches:
    """Random windows of the training tokens, drawn with a seeded generator (so a resumed
    run draws the same batches it would have drawn)."""

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int) -> None:
        self.tokens, self.context, self.batch_size = tokens, context, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        high = len(self.tokens) - self.context - 1
        starts = torch.randint(0, high + 1, (self.batch_size,), generator=self.generator)
        rows = np.stack([self.tokens[s : s + self.context + 1] for s in starts.tolist()])
        batch = torch.from_numpy(rows.astype(np.int64))  # (B, T+1)
        x, y = batch[:, :-1], batch[:, 1:]
        if device.type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(
                device, non_blocking=True
            )
        return x.to(device), y.to(device)


def make_optimizer(
    model: Transformer, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on norm gains)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": matrices, "weight_decay": config.weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=config.learning_rate, betas=(0.9, 0.95), fused=device.type == "cuda"
    )


def prepare_tokenizer(
    folder: Path, corpus: Corpus, vocab_size: int | None, retrain: bool, report: Callback
) -> Tokenizer:
    """Use the folder's tokenizer if it has one (unless retraining), else train one."""
    if (folder / modeldir.TOKENIZER).exists() and not retrain:
        tokenizer = modeldir.load_tokenizer(folder)
        if vocab_size is not None and vocab_size != tokenizer.vocab_size:
            report(
                Notice(
                    f"keeping the folder's tokenizer ({tokenizer.vocab_size} tokens); "
                    f"--vocab-size {vocab_size} is ignored",
                    warning=True,
                )
            )
        else:
            report(Notice(f"using the folder's tokenizer ({tokenizer.vocab_size} tokens)"))
        return tokenizer
    if vocab_size is None:
        vocab_size = default_vocab_size(corpus.total_bytes)
    report(Notice(f"training a byte-level BPE tokenizer with {vocab_size} tokens"))
    started = time.perf_counter()
    tokenizer = Tokenizer.train(corpus.texts(), vocab_size)
    report(
        Notice(
            f"tokenizer trained: {tokenizer.vocab_size} tokens "
            f"in {time.perf_counter() - started:.1f}s"
        )
    )
    return tokenizer


def train(
    folder: Path,
    corpus: Corpus,
    config: TrainConfig,
    architecture: dict[str, Any],
    vocab_size: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callback = lambda event: None,
) -> TrainResult:
    """Train (or resume training) the model in `folder` on `corpus`.

    `architecture` holds ModelConfig fields except the vocabulary size, which comes from
    the tokenizer. A folder that already holds a trained model needs `resume` or
    `overwrite`.
    """
    if modeldir.has_weights(folder) and not (resume or overwrite):
        raise TextgenError(
            f"{folder} already holds a trained model; add --resume to continue training it "
            "or --overwrite to replace it"
        )
    if resume and not modeldir.has_weights(folder):
        raise TextgenError(f"{folder}: nothing to resume (no {modeldir.WEIGHTS}); drop --resume")
    device = choose_device(config.device)
    torch.manual_seed(config.seed)

    state: dict[str, Any] | None = None
    if resume:
        loaded = modeldir.load(folder, device)
        tokenizer, model = loaded.tokenizer, loaded.model
        state = modeldir.load_train_state(folder)
        callback(Notice(f"resuming {folder} from step {state['step']}"))
    else:
        tokenizer = prepare_tokenizer(folder, corpus, vocab_size, overwrite, callback)
        model_config = ModelConfig(vocab_size=tokenizer.vocab_size, **architecture)
        model = Transformer(model_config).to(device)
        if overwrite:
            (folder / modeldir.METRICS).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        modeldir.save_tokenizer(folder, tokenizer)

    with tempfile.TemporaryDirectory(prefix="textgen-tokens-") as tmp:
        started = time.perf_counter()
        token_file = encode_corpus(corpus, tokenizer, Path(tmp) / "tokens.bin")
        tokens = token_file.array()
        n_val = max(2, int(len(tokens) * config.val_fraction))
        train_tokens, val_tokens = tokens[:-n_val], tokens[-n_val:]
        context = model.config.context_window
        callback(
            Notice(
                f"encoded {corpus.description}: {len(tokens):,} tokens "
                f"({corpus.total_bytes / max(len(tokens), 1):.2f} bytes/token) "
                f"in {time.perf_counter() - started:.1f}s"
            )
        )
        for warning in dict.fromkeys(corpus.warnings):  # unique, in order
            callback(Notice(warning, warning=True))
        if len(train_tokens) < context + 1:
            raise TextgenError(
                f"the corpus is too small: {len(train_tokens)} training tokens, but one "
                f"context window needs {context + 1}; add text or lower --context"
            )
        return _run(
            folder, model, tokenizer, config, train_tokens, val_tokens, state, corpus, callback
        )


def _run(
    folder: Path,
    model: Transformer,
    tokenizer: Tokenizer,
    config: TrainConfig,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    state: dict[str, Any] | None,
    corpus: Corpus,
    callback: Callback,
) -> TrainResult:
    device = next(model.parameters()).device
    batches = Batches(train_tokens, model.config.context_window, config.batch_size, config.seed)
    optimizer = make_optimizer(model, config, device)
    byte_lengths = token_byte_lengths(tokenizer.token_bytes)
    step, tokens_seen, elapsed_before = 0, 0, 0.0
    smoothed_loss = float("nan")
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        batches.generator.set_state(state["data_rng"])
        step, tokens_seen = state["step"], state["tokens_seen"]
        elapsed_before, smoothed_loss = state["elapsed"], state["smoothed_loss"]

    parameters = model.num_parameters()
    callback(
        RunStarted(
            parameters=parameters,
            train_tokens=len(train_tokens),
            val_tokens=len(val_tokens),
            device=str(device),
            max_steps=config.steps,
            time_budget=config.time_budget,
            start_step=step,
        )
    )

    def checkpoint(elapsed: float, final_eval: EvalResult | None = None) -> None:
        summary = {
            "steps": step,
            "tokens_seen": tokens_seen,
            "elapsed_seconds": round(elapsed, 2),
            "train_loss": smoothed_loss,
            "corpus": corpus.description,
            "corpus_bytes": corpus.total_bytes,
            "train_tokens": len(train_tokens),
            "val_tokens": len(val_tokens),
        }
        if final_eval is not None:
            summary.update(val_loss=final_eval.loss, val_bits_per_byte=final_eval.bits_per_byte)
        modeldir.save_weights(folder, model)
        modeldir.save_train_state(
            folder,
            {
                "step": step,
                "tokens_seen": tokens_seen,
                "elapsed": elapsed,
                "smoothed_loss": smoothed_loss,
                "optimizer": optimizer.state_dict(),
                "data_rng": batches.generator.get_state(),
                "train_config": config.to_dict(),
            },
        )
        modeldir.save_config(
            folder, model.config, tokenizer, training={**config.to_dict(), **summary}
        )

    def run_eval(elapsed: float, final: bool) -> EvalResult:
        result = evaluate(
            model, val_tokens, byte_lengths, max_tokens=None if final else config.eval_tokens
        )
        report = EvalReport(step, elapsed, tokens_seen, smoothed_loss, result, final)
        modeldir.append_metrics(
            folder,
            {
                "step": step,
                "time": round(elapsed, 2),
                "tokens": tokens_seen,
                "train_loss": smoothed_loss,
                "val_loss": result.loss,
                "val_bpb": result.bits_per_byte,
                "final": final,
            },
        )
        callback(report)
        return result

    model.train()
    start = time.perf_counter()
    last_report, tokens_at_report = start, tokens_seen
    interrupted = False
    elapsed = elapsed_before
    try:
        while True:
            elapsed = elapsed_before + time.perf_counter() - start
            done = fraction_done(step, elapsed, config)
            if done >= 1.0:
                break
            lr = config.learning_rate * lr_multiplier(
                step, done, config.warmup_steps, config.cooldown_fraction
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = batches.next(device)
            with autocast(device):
                _, loss = model(x, y)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += x.numel()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TextgenError(
                    f"training diverged at step {step} (loss is {loss_value}); "
                    "lower the learning rate (--lr)"
                )
            smoothed_loss = (
                loss_value if math.isnan(smoothed_loss) else 0.9 * smoothed_loss + 0.1 * loss_value
            )
            now = time.perf_counter()
            if now - last_report >= 0.25:
                callback(
                    StepReport(
                        step=step,
                        loss=smoothed_loss,
                        learning_rate=lr,
                        tokens_seen=tokens_seen,
                        tokens_per_second=(tokens_seen - tokens_at_report) / (now - last_report),
                        elapsed=elapsed_before + now - start,
                        fraction_done=fraction_done(step, elapsed_before + now - start, config),
                    )
                )
                last_report, tokens_at_report = now, tokens_seen
            elapsed = elapsed_before + time.perf_counter() - start
            if step % config.eval_interval == 0 and fraction_done(step, elapsed, config) < 1:
                run_eval(elapsed, final=False)
                checkpoint(elapsed)
    except KeyboardInterrupt:
        interrupted = True
    elapsed = elapsed_before + time.perf_counter() - start
    final_eval = None
    if interrupted:
        callback(Notice(f"interrupted at step {step}: saving a checkpoint", warning=True))
    else:
        final_eval = run_eval(elapsed, final=True)
    checkpoint(elapsed, final_eval)
    return TrainResult(
        folder=folder,
        steps=step,
        tokens_seen=tokens_seen,
        elapsed=elapsed,
        parameters=parameters,
        final_eval=final_eval,
        interrupted=interrupted,
    )
