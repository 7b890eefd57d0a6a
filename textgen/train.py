"""The training loop: batches in, a trained model out, with checkpoints (`textgen.data`
turns the corpus into batches; `textgen.distributed` spreads a run over processes).

It never prints: it reports through a callback that receives `Notice`, `StepReport`
and `EvalReport` events (`textgen.render` draws them). A run stops at a number of steps
or a wall-clock budget, whichever comes first; the learning rate warms up, holds, then
decays linearly to zero over the last part of the run, measured in steps or in time.
Ctrl-C saves a checkpoint and returns with `interrupted=True`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textgen import data, distributed, modeldir, sizing
from textgen.config import ModelConfig, TrainConfig, depth_shape
from textgen.corpus import Corpus, TokenFile
from textgen.device import autocast, choose_device, peak_flops, prepare_device
from textgen.errors import SettingError, TextgenError
from textgen.evaluate import EvalResult, evaluate_with_head, token_byte_lengths
from textgen.events import Callback, EvalReport, Notice, RunStarted, StepReport, TrainResult
from textgen.model import Transformer
from textgen.optim import fraction_done, lr_multiplier, make_optimizer
from textgen.tokenizer import Tokenizer


def train(
    folder: Path,
    corpus: Corpus,
    config: TrainConfig,
    architecture: dict[str, Any],
    vocab_size: int | None = None,
    overwrite: bool = False,
    callback: Callback = lambda event: None,
) -> TrainResult:
    """Train a new model in `folder` on `corpus`.

    `architecture` holds ModelConfig fields except the vocabulary size, which comes from
    the tokenizer (the folder's, if it has one, else trained here). Without `n_layer`, the
    model's depth, width and heads are chosen for the budget and corpus (`textgen.sizing`).
    A folder that already holds a trained model is only replaced with `overwrite`.
    """
    device, world = _start(config)
    data.micro_batches(config, world.size)  # a batch that does not split: say so before any work
    if not world.is_main:
        callback = _quiet  # process 0 reports for all
    tokenizer: Tokenizer | None = None

    def prepare() -> TokenFile:  # in process 0 only
        nonlocal tokenizer
        if modeldir.has_weights(folder) and not overwrite:
            raise TextgenError(
                f"{folder} already holds a trained model; add --resume to continue training "
                "it or --overwrite to replace it"
            )
        tokenizer = data.prepare_tokenizer(folder, corpus, vocab_size, overwrite, callback)
        folder.mkdir(parents=True, exist_ok=True)
        modeldir.remove_temporaries(folder)
        if overwrite:
            for name in (modeldir.METRICS, modeldir.TRAIN_STATE, modeldir.WEIGHTS):
                (folder / name).unlink(missing_ok=True)
        modeldir.save_tokenizer(folder, tokenizer)
        return data.encode(corpus, tokenizer, callback)

    token_file = distributed.on_main(prepare)
    tokenizer = tokenizer or modeldir.load_tokenizer(folder)
    context = architecture.get("context_window", ModelConfig.context_window)
    train_tokens, val_tokens = data.split(token_file, config, context)
    if "n_layer" not in architecture:  # size auto
        choice = distributed.on_main(
            lambda: sizing.choose(
                architecture, tokenizer.vocab_size, len(train_tokens), config, device, world.size
            )
        )
        callback(Notice(choice.describe()))
        architecture = {**architecture, **depth_shape(choice.depth)}
    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = Transformer(ModelConfig(vocab_size=tokenizer.vocab_size, **architecture)).to(device)
    run = _Run(
        folder, model, tokenizer, config, token_file, train_tokens, val_tokens, corpus, callback
    )
    return run.loop()


def _quiet(event: object) -> None:
    pass


def _start(config: TrainConfig) -> tuple[torch.device, distributed.World]:
    """The device, and this process's place among the processes torchrun started."""
    device = choose_device(config.device)
    world = distributed.setup(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    prepare_device(device)
    return device, world


def resume(
    folder: Path,
    corpus: Corpus,
    more_steps: int | None = None,
    more_time: float | None = None,
    changes: dict[str, Any] | None = None,
    callback: Callback = lambda event: None,
) -> TrainResult:
    """Continue training the model in `folder` exactly where its last checkpoint left it:
    weights, optimizer, learning-rate schedule, data order and elapsed time.

    With neither `more_steps` nor `more_time`, the run finishes its original budget; with
    them, the budget grows by that much (the learning rate warms back up and decays again
    towards the new end). `changes` replaces other saved settings (device, intervals).
    """
    if not (folder / modeldir.TRAIN_STATE).exists():
        raise TextgenError(
            f"{folder}: nothing to resume (no {modeldir.TRAIN_STATE}); train it without --resume"
        )
    meta = modeldir.read_config(folder)
    state = modeldir.load_train_state(folder)
    try:
        config = TrainConfig.from_dict(state["train_config"])
    except (KeyError, TypeError, SettingError) as exc:
        raise TextgenError(
            f"{folder / modeldir.TRAIN_STATE}: bad training settings: {exc}"
        ) from None
    updates = dict(changes or {})
    if more_steps is not None:
        updates["steps"] = state["step"] + more_steps
    if more_time is not None:
        updates["time_budget"] = state["elapsed"] + more_time
    config = replace(config, **updates)
    device, world = _start(config)
    data.micro_batches(config, world.size)  # a batch that does not split: say so before any work
    if not world.is_main:
        callback = _quiet  # process 0 reports for all
    tokenizer = modeldir.load_tokenizer(folder)
    model = Transformer(meta["model_config"])
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise TextgenError(
            f"{folder / modeldir.TRAIN_STATE}: weights do not fit config.json ({exc})"
        ) from None
    model.to(device)

    def prepare() -> TokenFile:  # in process 0 only
        modeldir.remove_temporaries(folder)
        callback(Notice(f"resuming {folder} from step {state['step']:,}"))
        return data.encode(corpus, tokenizer, callback)

    token_file = distributed.on_main(prepare)
    train_tokens, val_tokens = data.split(token_file, config, model.config.context_window)
    if len(train_tokens) + len(val_tokens) != state.get("corpus_tokens"):
        callback(Notice("the corpus differs from the last run's: continuing on it", True))
    run = _Run(
        folder, model, tokenizer, config, token_file, train_tokens, val_tokens, corpus, callback
    )
    run.restore(state)
    return run.loop()


class _Run:
    """One training run's state, the loop that advances it, and its checkpoints."""

    def __init__(
        self,
        folder: Path,
        model: Transformer,
        tokenizer: Tokenizer,
        config: TrainConfig,
        token_file: TokenFile,
        train_tokens: np.ndarray,
        val_tokens: np.ndarray,
        corpus: Corpus,
        callback: Callback,
    ) -> None:
        """Batches are drawn from `train_tokens`, or, with BPE-dropout, from the training
        text in several segmentations (`data.segmentations`, made by process 0)."""
        self.folder, self.model, self.tokenizer, self.config = folder, model, tokenizer, config
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.world = distributed.world()
        self.corpus = corpus
        self.callback = callback
        self.device = next(model.parameters()).device
        self.micro_batch, self.accumulation = data.micro_batches(config, self.world.size)
        stream = distributed.on_main(
            lambda: data.segmentations(token_file, train_tokens, tokenizer, config, callback)
        )
        self.batches = data.Batches(
            stream.array() if stream else train_tokens,
            model.config.context_window,
            config.batch_size,
            config.seed,
        )
        self.optimizer = make_optimizer(model, config, self.device)
        self.forward = self._training_module()
        self.flops_per_token = model.training_flops_per_token()
        peak = peak_flops(self.device)
        self.peak_flops = peak * self.world.size if peak else None  # all processes together
        self.byte_lengths = token_byte_lengths(tokenizer.token_bytes)
        self.step, self.tokens_seen, self.elapsed = 0, 0, 0.0
        self.smoothed_loss = float("nan")
        self.best: dict | None = None  # validation loss and step of the weights kept
        self.kept_eval: EvalResult | None = None
        self.model_saved = False

    def _training_module(self) -> torch.nn.Module:
        """The model as training calls it: wrapped for data parallelism across processes,
        and compiled where that pays (CUDA by default)."""
        module: torch.nn.Module = self.model
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            torch.manual_seed(self.config.seed + self.world.rank)  # its own dropout masks
            module = DistributedDataParallel(
                module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,  # the only buffers are the fixed rotary tables
            )
        compile_it = self.config.compile
        if compile_it is None:
            compile_it = self.device.type == "cuda"
        if compile_it:
            module = torch.compile(module)  # type: ignore[assignment]
        return module

    def restore(self, state: dict[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.batches.generator.set_state(state["data_rng"])
            self.step, self.tokens_seen = state["step"], state["tokens_seen"]
            self.elapsed, self.smoothed_loss = state["elapsed"], state["smoothed_loss"]
            self.best = state.get("best")
        except (KeyError, ValueError, RuntimeError) as exc:
            raise TextgenError(
                f"{self.folder / modeldir.TRAIN_STATE}: incomplete training state ({exc}); "
                "train again with --overwrite"
            ) from None

    def save_state(self) -> None:
        """train_state.pt: everything a resume needs (weights too), in one file, so a crash
        between this and the model files still resumes from one consistent moment."""
        if not self.world.is_main:
            return  # every process holds the same weights and optimizer state
        state = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed": self.elapsed,
            "smoothed_loss": self.smoothed_loss,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "data_rng": self.batches.generator.get_state(),
            "train_config": self.config.to_dict(),
            "corpus_tokens": len(self.train_tokens) + len(self.val_tokens),
            "best": self.best,
        }
        self._guarded(lambda: modeldir.save_train_state(self.folder, state))
        self.saved_at = (self.step, time.perf_counter())

    def save_model(self, evaluation: EvalResult | None) -> None:
        """model.safetensors and config.json: the weights as they are now."""
        summary = {
            "steps": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed_seconds": round(self.elapsed, 2),
            "train_loss": self.smoothed_loss,
            "corpus": self.corpus.description,
            "corpus_bytes": self.corpus.total_bytes,
            "train_tokens": len(self.train_tokens),
            "val_tokens": len(self.val_tokens),
        }
        if evaluation is not None:
            summary.update(
                val_loss=evaluation.loss,
                val_bits_per_byte=evaluation.bits_per_byte,
                val_tokens_scored=evaluation.tokens,
            )

        def write() -> None:
            modeldir.save_weights(self.folder, self.model)
            modeldir.save_config(
                self.folder,
                self.model.config,
                self.tokenizer,
                training={**self.config.to_dict(), **summary},
            )

        self._guarded(write)
        self.model_saved = True

    def checkpoint(self) -> None:
        """Save the training state, and the model too unless better weights are kept."""
        if not self.world.is_main:
            return
        if not (self.model_saved and self.config.keep_best):
            self.save_model(None)
        self.save_state()

    def _guarded(self, write) -> None:
        try:
            write()
        except OSError as exc:
            raise TextgenError(
                f"could not save the checkpoint in {self.folder} ({exc.strerror or exc}); "
                "the previous checkpoint is intact"
            ) from None

    def run_eval(self, final: bool) -> EvalResult | None:
        """Evaluate, log, and save the weights if they are the best so far (or always,
        without keep_best). Candidates are compared on the same tokens: the first
        eval_tokens of the validation split. Process 0 only (the others return None)."""
        config = self.config
        if not self.world.is_main:
            return None
        result, comparable = evaluate_with_head(
            self.model,
            self.val_tokens,
            self.byte_lengths,
            head_tokens=config.eval_tokens,
            max_tokens=None if final else config.eval_tokens,
        )
        improved = self.best is None or comparable.loss < self.best["loss"]
        if improved:
            self.best = {"loss": comparable.loss, "step": self.step}
            self.kept_eval = result
        if improved or not config.keep_best:
            self.save_model(result)
        modeldir.append_metrics(
            self.folder,
            {
                "step": self.step,
                "time": round(self.elapsed, 2),
                "tokens": self.tokens_seen,
                "train_loss": self.smoothed_loss,
                "val_loss": result.loss,
                "val_bpb": result.bits_per_byte,
                "final": final,
                "kept": improved or not config.keep_best,
            },
        )
        self.callback(
            EvalReport(
                self.step,
                self.elapsed,
                self.tokens_seen,
                self.smoothed_loss,
                result,
                final,
                kept=improved or not config.keep_best,
            )
        )
        return result

    def _save_due(self) -> bool:
        config, (saved_step, saved_time) = self.config, self.saved_at
        if config.save_every_steps is not None:
            return self.step - saved_step >= config.save_every_steps
        if config.save_every_seconds is not None:
            return time.perf_counter() - saved_time >= config.save_every_seconds
        return self.step % config.eval_interval == 0

    def train_step(self, lr_multiplier: float, elapsed: float) -> float:
        """One optimizer step over a whole batch: this process's micro-batches, their
        gradients summed here and averaged over processes. Returns the elapsed time by
        process 0's clock, which every process follows."""
        self.optimizer.set_lr_multiplier(lr_multiplier)
        # (accumulation, processes, micro-batch): process r takes column r of every row
        starts = self.batches.draw().view(self.accumulation, self.world.size, self.micro_batch)
        total = torch.zeros((), device=self.device)
        for i, mine in enumerate(starts[:, self.world.rank]):
            x, y = self.batches.load(mine, self.device)
            last = i == self.accumulation - 1
            sync = contextlib.nullcontext()
            if self.world.distributed and not last:
                sync = self._ddp().no_sync()  # gradients are averaged once, after the last
            with sync:
                with autocast(self.device, self.config.cpu_bf16):
                    _, loss = self.forward(x, y)
                (loss / self.accumulation).backward()
            total += loss.detach()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += self.config.batch_size * self.model.config.context_window
        value, elapsed = distributed.average_loss_and_main_clock(total / self.accumulation, elapsed)
        if not math.isfinite(value):
            raise TextgenError(
                f"training diverged at step {self.step} (loss is {value}); lower --lr"
            )
        previous = self.smoothed_loss
        self.smoothed_loss = value if math.isnan(previous) else 0.9 * previous + 0.1 * value
        return elapsed

    def _ddp(self):
        module = self.forward
        return getattr(module, "_orig_mod", module)  # under torch.compile

    def loop(self) -> TrainResult:
        config, model = self.config, self.model
        self.callback(
            RunStarted(
                model.num_parameters(),
                len(self.train_tokens),
                len(self.val_tokens),
                str(self.device),
                config.steps,
                config.time_budget,
                self.step,
                processes=self.world.size,
                accumulation=self.accumulation,
            )
        )
        model.train()
        start, elapsed_before = time.perf_counter(), self.elapsed
        last_report, tokens_at_report = start, self.tokens_seen
        self.saved_at = (self.step, start)
        interrupted = False
        try:
            while True:
                if not self.world.distributed:  # else: process 0's clock at the last step
                    self.elapsed = elapsed_before + time.perf_counter() - start
                done = fraction_done(self.step, self.elapsed, config)
                if done >= 1.0:
                    break
                multiplier = lr_multiplier(
                    self.step, done, config.warmup_steps, config.cooldown_fraction
                )
                now = time.perf_counter()
                self.elapsed = self.train_step(multiplier, elapsed_before + now - start)
                now = time.perf_counter()
                done = fraction_done(self.step, self.elapsed, config)
                if now - last_report >= 0.25:
                    speed = (self.tokens_seen - tokens_at_report) / (now - last_report)
                    self.callback(
                        StepReport(
                            step=self.step,
                            loss=self.smoothed_loss,
                            learning_rate=config.learning_rate * multiplier,
                            tokens_seen=self.tokens_seen,
                            tokens_per_second=speed,
                            elapsed=self.elapsed,
                            fraction_done=done,
                            flops_per_second=speed * self.flops_per_token,
                            mfu=speed * self.flops_per_token / self.peak_flops
                            if self.peak_flops
                            else None,
                        )
                    )
                    last_report, tokens_at_report = now, self.tokens_seen
                if done >= 1:
                    continue  # the final evaluation and checkpoint follow
                if self.step % config.eval_interval == 0:
                    self.run_eval(final=False)
                if self._save_due():
                    self.checkpoint()
        except KeyboardInterrupt:
            interrupted = True
        final_eval = None
        if interrupted:
            self.callback(Notice(f"interrupted at step {self.step:,}: saving a checkpoint", True))
            self.checkpoint()
        else:
            final_eval = self.run_eval(final=True)
            self.save_state()
        return TrainResult(
            folder=self.folder,
            steps=self.step,
            tokens_seen=self.tokens_seen,
            elapsed=self.elapsed,
            parameters=model.num_parameters(),
            final_eval=final_eval,
            interrupted=interrupted,
            kept_step=self.best["step"] if self.best and config.keep_best else self.step,
            kept_eval=self.kept_eval if config.keep_best else final_eval,
        )
