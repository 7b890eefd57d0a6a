"""The training loop and its step: batches in, better weights out.

It never prints: it reports through a callback that receives `RunStarted`, `StepReport`,
`EvalReport` and `Notice` records (`textgen.ui` draws them). A run stops at a number of
steps or a wall-clock budget, whichever comes first; the learning rate warms up, holds,
then decays linearly to zero over the last part of the run, measured in steps or in time.
Ctrl-C, SIGTERM and SIGHUP stop it at the next step boundary with a checkpoint
(`textgen.training.stopping`); the result says which signal it was.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
import torch

from textgen.errors import TextgenError
from textgen.model.device import autocast, peak_flops
from textgen.model.transformer import Transformer
from textgen.records import (
    Callback,
    EvalReport,
    EvalResult,
    Notice,
    Progress,
    RunStarted,
    StepReport,
    TrainResult,
)
from textgen.settings import TrainConfig
from textgen.training import distributed
from textgen.training.averaging import WeightAverage
from textgen.training.batches import Batches, Split, micro_batches
from textgen.training.checkpoint import Checkpointer
from textgen.training.evaluate import evaluate, token_byte_lengths
from textgen.training.optim import fraction_done, lr_multiplier, make_optimizer
from textgen.training.samples import Sampler
from textgen.training.stopping import StopRequests, stopped_by

REPORT_SECONDS = 0.25  # between progress reports


class Trainer:
    """One run's model, optimizer and batches, and the loop that advances them."""

    def __init__(
        self,
        model: Transformer,
        config: TrainConfig,
        split: Split,
        stream: np.ndarray,
        token_bytes: list[bytes],
        callback: Callback,
        sampler: Sampler | None = None,
    ) -> None:
        """Batches are drawn from `stream`: the training tokens of `split`, or with
        BPE-dropout the training text in several segmentations. With `sampler`, the model
        writes a short sample every so many steps and at the end."""
        self.model, self.config, self.split = model, config, split
        self.sampler, self.last_bpb = sampler, None
        context = model.config.context_window
        self.batches = Batches(stream, context, config.batch_size, config.seed, config.sampling)
        self.byte_lengths = token_byte_lengths(token_bytes)
        self.callback = callback
        self.world = distributed.world()
        self.device = next(model.parameters()).device
        self.micro_batch, self.accumulation = micro_batches(config, self.world.size)
        self.optimizer = make_optimizer(model, config, self.device)
        width = config.average_width
        self.average = WeightAverage(model, width) if width > 0 else None
        self.forward = self._training_module()
        self.flops_per_token = model.training_flops_per_token()
        peak = peak_flops(self.device)
        self.peak_flops = peak * self.world.size if peak else None  # all processes together
        self.progress = Progress()

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

    # -- state, for checkpoints ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        p = self.progress
        return {
            "step": p.step,
            "tokens_seen": p.tokens_seen,
            "elapsed": p.elapsed,
            "smoothed_loss": p.smoothed_loss,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            **({"average": self.average.state_dict()} if self.average else {}),
            **self.batches.state_dict(),
            "torch_rng": torch.get_rng_state(),  # dropout masks
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state (the weights are loaded by whoever built the model)."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.average is not None and "average" in state:  # else it starts here
            self.average.load_state_dict(state["average"])
        self.batches.load_state_dict(state)
        if "torch_rng" in state:  # checkpoints from before it was saved lack it
            torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.progress = Progress(
            state["step"], state["tokens_seen"], state["elapsed"], state["smoothed_loss"]
        )

    # -- one step -----------------------------------------------------------------------------

    def train_step(
        self, multiplier: float, elapsed: float, stop: int | None = None
    ) -> tuple[float, int | None]:
        """One optimizer step over a whole batch: this process's micro-batches, their
        gradients summed here and averaged over processes. Returns the elapsed time by
        process 0's clock, which every process follows, and the signal that asks every
        process to stop after this step (`stop`: one this process received)."""
        self.optimizer.set_lr_multiplier(multiplier)
        # (accumulation, processes, micro-batch): process r takes column r of every row
        starts = self.batches.draw().view(self.accumulation, self.world.size, self.micro_batch)
        total = torch.zeros((), device=self.device)
        for i, mine in enumerate(starts[:, self.world.rank]):
            x, y = self.batches.load(mine, self.device)
            sync = contextlib.nullcontext()
            if self.world.distributed and i < self.accumulation - 1:
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
        if self.average is not None:
            self.average.update()
        self.progress.step += 1
        self.progress.tokens_seen += self.config.batch_size * self.model.config.context_window
        value, elapsed, stop = distributed.agree_after_step(
            total / self.accumulation, elapsed, stop
        )
        if not math.isfinite(value):
            raise TextgenError(
                f"training diverged at step {self.progress.step} (loss is {value}); lower --lr"
            )
        self.progress.add_loss(value)
        return elapsed, stop

    def _ddp(self):
        module = self.forward
        return getattr(module, "_orig_mod", module)  # under torch.compile

    def validate(self, checkpoints: Checkpointer, final: bool) -> EvalResult | None:
        """Evaluate (all held-out tokens when final, else the first eval_tokens), keep the
        weights if they are the best so far, and report. Process 0 only (the others
        return None)."""
        if not self.world.is_main:
            return None
        evaluation = evaluate(
            self.model,
            self.split.val,
            self.byte_lengths,
            max_tokens=None if final else self.config.eval_tokens,
            first_tokens=self.config.eval_tokens,
        )
        kept = checkpoints.record(self.model, self.progress, evaluation, final)
        p = self.progress
        result = evaluation.result
        self.last_bpb = result.bits_per_byte
        self.callback(
            EvalReport(p.step, p.elapsed, p.tokens_seen, p.smoothed_loss, result, final, kept)
        )
        return result

    def sample(self, checkpoints: Checkpointer) -> None:
        """A short sample from the weights as they are (process 0), reported and kept in
        samples.jsonl."""
        if self.sampler is None or not self.world.is_main:
            return
        p = self.progress
        report = self.sampler.sample(self.model, p.step, p.tokens_seen, self.last_bpb)
        checkpoints.record_sample(report)
        self.callback(report)

    def checkpoint(self, checkpoints: Checkpointer) -> None:
        if self.world.is_main:
            checkpoints.checkpoint(self.model, self.progress, self.state_dict())

    # -- the loop -----------------------------------------------------------------------------

    def run(self, checkpoints: Checkpointer) -> TrainResult:
        """Train until the budget is spent or a signal asks to stop (`stopping`),
        validating and checkpointing."""
        config, p = self.config, self.progress
        self._announce()
        self.model.train()
        start, elapsed_before = time.perf_counter(), p.elapsed
        speed = _Speedometer(start, p.tokens_seen)
        checkpoints.started(p.step)
        with StopRequests() as stops:
            try:
                while True:
                    if not self.world.distributed:  # else: process 0's clock at the last step
                        p.elapsed = elapsed_before + time.perf_counter() - start
                    done = fraction_done(p.step, p.elapsed, config)
                    if done >= 1.0:
                        break
                    multiplier = lr_multiplier(
                        p.step, done, config.warmup_steps, config.cooldown_fraction
                    )
                    now = elapsed_before + time.perf_counter() - start
                    p.elapsed, stop = self.train_step(multiplier, now, stops.signal)
                    done = fraction_done(p.step, p.elapsed, config)
                    if speed.due():
                        self._report(speed.measure(p.tokens_seen), multiplier, done)
                    if done < 1:  # else the final evaluation and checkpoint follow
                        self._between_steps(checkpoints)
                    if stop is not None:
                        stops.request(stop)
                        break
            except KeyboardInterrupt:  # raised by Python code: a callback, a test
                stops.request()
            if stops.signal is not None:
                why = stopped_by(stops.signal)
                self.callback(Notice(f"{why} at step {p.step:,}: saving a checkpoint", True))
                self.checkpoint(checkpoints)
                final_eval = None
            else:
                final_eval = distributed.on_main(lambda: self._finish(checkpoints))
        return self._result(checkpoints, stops.signal, final_eval)

    def _between_steps(self, checkpoints: Checkpointer) -> None:
        """Validation and checkpoints, when due."""
        if self.progress.step % self.config.eval_interval == 0:
            self.validate(checkpoints, final=False)
        if self.sampler is not None and self.sampler.due(self.progress.step):
            self.sample(checkpoints)
        if checkpoints.due(self.progress.step):
            self.checkpoint(checkpoints)

    def _finish(self, checkpoints: Checkpointer) -> EvalResult | None:
        """The final evaluation and checkpoint, in process 0 while the others wait: of the
        averaged weights, if the run averages them."""
        if self.average is not None:
            self.average.copy_into(self.model)
        result = self.validate(checkpoints, final=True)
        self.sample(checkpoints)  # what the model writes at the end of the run
        checkpoints.save_state(self.state_dict())
        return result

    def _announce(self) -> None:
        config, model = self.config, self.model
        self.callback(
            RunStarted(
                model.num_parameters(),
                len(self.split.train),
                len(self.split.val),
                str(self.device),
                config.steps,
                config.time_budget,
                self.progress.step,
                processes=self.world.size,
                accumulation=self.accumulation,
            )
        )

    def _report(self, tokens_per_second: float, multiplier: float, done: float) -> None:
        p, flops = self.progress, tokens_per_second * self.flops_per_token
        self.callback(
            StepReport(
                step=p.step,
                loss=p.smoothed_loss,
                learning_rate=self.config.learning_rate * multiplier,
                tokens_seen=p.tokens_seen,
                tokens_per_second=tokens_per_second,
                elapsed=p.elapsed,
                fraction_done=done,
                flops_per_second=flops,
                mfu=flops / self.peak_flops if self.peak_flops else None,
            )
        )

    def _result(
        self, checkpoints: Checkpointer, stopped_by: int | None, final_eval: EvalResult | None
    ) -> TrainResult:
        p, keep_best = self.progress, self.config.keep_best
        kept_step = checkpoints.kept_step
        return TrainResult(
            folder=checkpoints.folder,
            steps=p.step,
            tokens_seen=p.tokens_seen,
            elapsed=p.elapsed,
            parameters=self.model.num_parameters(),
            final_eval=final_eval,
            stopped_by=stopped_by,
            kept_step=kept_step if kept_step is not None else p.step,
            kept_eval=checkpoints.kept_eval if keep_best else final_eval,
        )


class _Speedometer:
    """Training tokens per second since the last report."""

    def __init__(self, start: float, tokens: int) -> None:
        self.last, self.tokens = start, tokens

    def due(self) -> bool:
        return time.perf_counter() - self.last >= REPORT_SECONDS

    def measure(self, tokens: int) -> float:
        now = time.perf_counter()
        rate = (tokens - self.tokens) / (now - self.last)
        self.last, self.tokens = now, tokens
        return rate
