"""Where a run's results go: the model (weights and config.json), the training state a
resume needs, and one metrics line per evaluation; and which weights are kept.

`model.safetensors` holds the weights with the best validation loss seen so far (unless
`keep_best` is off), so training too long never makes the model worse. Candidates are
compared on the same tokens: the first `eval_tokens` of the validation split.
Process 0 writes everything; the other processes hold the same weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from textgen.errors import TextgenError
from textgen.files import WriteError
from textgen.model.transformer import Transformer
from textgen.records import EvalResult, Progress, SampleReport, World
from textgen.settings import TrainConfig
from textgen.store import folder as model_folder
from textgen.store import metrics as metrics_file
from textgen.store.writer import Staging
from textgen.text.tokenizer import Tokenizer
from textgen.training.evaluate import Evaluation

T = TypeVar("T")


class Checkpointer:
    def __init__(
        self,
        folder: Path,
        tokenizer: Tokenizer,
        config: TrainConfig,
        run_summary: dict[str, Any],
        world: World,
        corpus: dict[str, Any] | None = None,
        staging: Staging | None = None,
    ) -> None:
        """`run_summary` goes into config.json's "training" section with the run's
        progress (corpus, token counts); `corpus` (`Corpus.record`) into the training
        state, for a resume to find it again. With `staging`, `folder` is a new model's
        staging folder, put in its place at the first complete checkpoint."""
        self.folder, self.tokenizer, self.config = folder, tokenizer, config
        self.run_summary, self.world, self.corpus = run_summary, world, corpus
        self.staging = staging
        self.best: dict | None = None  # validation loss and step of the weights kept
        self.kept_eval: EvalResult | None = None
        self.model_saved = False
        self.saved_at = (0, time.perf_counter())  # step and clock of the last state saved

    def restore(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")

    def started(self, step: int) -> None:
        """The loop starts at `step`: time-based checkpoints count from now."""
        self.saved_at = (step, time.perf_counter())

    @property
    def kept_step(self) -> int | None:
        return self.best["step"] if self.best and self.config.keep_best else None

    def due(self, step: int) -> bool:
        """Whether a checkpoint is due after `step`: by --save-every (steps or time), else
        at each validation pass."""
        config, (saved_step, saved_time) = self.config, self.saved_at
        if config.save_every_steps is not None:
            return step - saved_step >= config.save_every_steps
        if config.save_every_seconds is not None:
            return time.perf_counter() - saved_time >= config.save_every_seconds
        return step % config.eval_interval == 0

    def save_state(self, state: dict[str, Any]) -> None:
        """train_state.pt: everything a resume needs (weights too), in one file, so a crash
        between this and the model files still resumes from one consistent moment."""
        if not self.world.is_main:
            return
        state = {**state, "train_config": self.config.to_dict(), "best": self.best}
        if self.corpus is not None:
            state["corpus"] = self.corpus
        self._guarded(lambda: model_folder.save_train_state(self.folder, state))
        self.saved_at = (state["step"], time.perf_counter())
        if self.staging is not None and not self.staging.published:
            self.folder = self._guarded(self.staging.publish)

    def save_model(
        self, model: Transformer, progress: Progress, evaluation: EvalResult | None
    ) -> None:
        """model.safetensors and config.json: the weights as they are now."""
        summary = {**progress.summary(), **self.run_summary}
        if evaluation is not None:
            summary.update(
                val_loss=evaluation.loss,
                val_bits_per_byte=evaluation.bits_per_byte,
                val_tokens_scored=evaluation.tokens,
            )

        def write() -> None:
            model_folder.save_weights(self.folder, model)
            training = {**self.config.to_dict(), **summary}
            model_folder.save_config(self.folder, model.config, self.tokenizer, training=training)

        self._guarded(write)
        self.model_saved = True

    def checkpoint(self, model: Transformer, progress: Progress, state: dict) -> None:
        """Save the training state, and the model too unless better weights are kept."""
        if not self.world.is_main:
            return
        if not (self.model_saved and self.config.keep_best):
            self.save_model(model, progress, None)
        self.save_state(state)

    def record(
        self, model: Transformer, progress: Progress, evaluation: Evaluation, final: bool
    ) -> bool:
        """Keep the weights if they are the best so far (or always, without keep_best) and
        add the evaluation to metrics.jsonl. Returns whether the weights were saved."""
        result = evaluation.result
        yardstick = evaluation.first or result
        improved = self.best is None or yardstick.loss < self.best["loss"]
        if improved:
            self.best = {"loss": yardstick.loss, "step": progress.step}
            self.kept_eval = result
        kept = improved or not self.config.keep_best
        if kept:
            self.save_model(model, progress, result)
        metrics = {
            "step": progress.step,
            "time": round(progress.elapsed, 2),
            "tokens": progress.tokens_seen,
            "train_loss": progress.smoothed_loss,
            "val_loss": result.loss,
            "val_bpb": result.bits_per_byte,
            "final": final,
            "kept": kept,
        }
        self._guarded(lambda: metrics_file.append_metrics(self.folder, metrics))
        return kept

    def record_sample(self, report: SampleReport) -> None:
        """Add a sample the model wrote as it trained to samples.jsonl."""
        record = {
            "step": report.step,
            "tokens": report.tokens_seen,
            "val_bpb": report.val_bpb,
            "prompt": report.prompt,
            "text": report.text,
        }
        self._guarded(lambda: metrics_file.append_sample(self.folder, record))

    def _guarded(self, write: Callable[[], T]) -> T:
        """Run a write; a failure is one error that says why, and that nothing was lost."""
        try:
            return write()
        except (OSError, WriteError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else exc.reason
            if self.staging is None or self.staging.published:
                where, kept = self.folder, "the previous checkpoint is intact (--resume)"
            else:
                where, kept = self.staging.target, "the folder is as it was before this run"
            raise TextgenError(f"could not save a checkpoint in {where} ({why}); {kept}") from None
