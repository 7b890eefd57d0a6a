"""How large a model a run can train well: one dial, the depth, set from the budget and
the corpus (`textgen train --size auto`, the default).

A model of depth d has d layers, 32·d wide, in heads of 32 (depth 4 is the `small`
preset, 4 × 128). Two limits bound the depth:

- compute: the run must see at least `TOKENS_PER_PARAMETER` training tokens per
  parameter, or a smaller model that sees more tokens ends better. The tokens a run will
  see follow from `--steps`, or, for `--time`, from the budget and the training speed,
  measured here on the device for a few steps of each candidate depth;
- data: at most `PARAMETERS_PER_TOKEN` parameters per token of training text (counted
  once, however often a run reads it), or the model learns its corpus by heart.

The largest depth within both limits is used (depth 2 at least). Both constants were
measured with `benchmarks/train_quality.py`, depths side by side (docs/training.md, "Model size").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from textgen.model.device import autocast
from textgen.model.transformer import Transformer
from textgen.settings import ModelConfig, ModelShape, TrainConfig
from textgen.training.optim import make_optimizer
from textgen.training.recipe import depth_shape
from textgen.units import count

TOKENS_PER_PARAMETER = 2.0
PARAMETERS_PER_TOKEN = 4.0
MIN_DEPTH, MAX_DEPTH = 2, 32


def parameters(config: ModelConfig) -> int:
    """The parameter count of a model with this config, without building its weights."""
    with torch.device("meta"):
        return Transformer(config, init_weights=False).num_parameters()


class SpeedProbe:
    """A fresh model of `config` trained on random tokens, to time its optimizer steps
    (forward, backward, gradient clipping and the optimizer, as a training step does)."""

    def __init__(
        self, config: ModelConfig, train: TrainConfig, device: torch.device, batch: int
    ) -> None:
        self.model = Transformer(config).to(device).train()
        # the weight decay changes no step's cost: any value times it
        settled = replace(train, weight_decay=train.weight_decay or 0.0)
        self.optimizer = make_optimizer(self.model, settled, device)
        self.train, self.device = train, device
        generator = torch.Generator().manual_seed(0)
        size = (batch, config.context_window + 1)
        self.ids = torch.randint(0, config.vocab_size, size, generator=generator).to(device)
        self.step()  # the first step pays for allocations, kernel choices and optimizer state

    def step(self) -> None:
        with autocast(self.device, self.train.cpu_bf16):
            _, loss = self.model(self.ids[:, :-1], self.ids[:, 1:])
        loss.backward()
        if self.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def tokens_per_second(self, seconds: float, min_steps: int = 1, max_steps: int = 10**9):
        """Steps for about `seconds` (within the step counts given), in tokens/s."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        steps, start = 0, time.perf_counter()
        while steps < min_steps or (steps < max_steps and time.perf_counter() - start < seconds):
            self.step()
            steps += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return steps * self.ids[:, :-1].numel() / (time.perf_counter() - start)


def training_speed(config: ModelConfig, train: TrainConfig, device: torch.device) -> float:
    """Training tokens per second of a model of this config on `device` at the run's
    batch: 2 to 10 steps, about 0.2 s, timed after a first one."""
    probe = SpeedProbe(config, train, device, train.micro_batch_size or train.batch_size)
    return probe.tokens_per_second(0.2, min_steps=2, max_steps=10)


@dataclass(frozen=True)
class Sizing:
    """The chosen depth and why: its parameters, the tokens the run will see at its
    measured speed (None: not measured, the run is counted in steps) and the corpus."""

    depth: int
    parameters: int
    planned_tokens: float
    tokens_per_second: float | None
    corpus_tokens: int

    def describe(self) -> str:
        speed = f" at {self.tokens_per_second:,.0f} tokens/s" if self.tokens_per_second else ""
        return (
            f"size auto: {self.depth} layers × {depth_shape(self.depth).n_embd} wide "
            f"({count(self.parameters)} parameters) for {count(self.planned_tokens)} tokens of "
            f"training{speed}, on {self.corpus_tokens:,} tokens of text"
        )


def planned_tokens(
    config: ModelConfig,
    train: TrainConfig,
    device: torch.device,
    processes: int = 1,
    speed: Callable[[ModelConfig, TrainConfig, torch.device], float] = training_speed,
) -> tuple[float, float | None]:
    """The training tokens a run of `train`'s budget will see with a model of `config`,
    and the tokens/s that follows from (None: counted in steps, nothing measured): the
    steps' tokens, or for a time budget its seconds at the speed measured here,
    whichever is fewer."""
    planned = float("inf")
    if train.steps:
        planned = float(train.steps * train.batch_size * config.context_window)
    rate = None
    if train.time_budget is not None:
        rate = speed(config, train, device) * processes
        planned = min(planned, rate * train.time_budget)
    return planned, rate


def choose(
    shape: ModelShape,
    vocab_size: int,
    corpus_tokens: int,
    train: TrainConfig,
    device: torch.device,
    processes: int = 1,
    speed: Callable[[ModelConfig, TrainConfig, torch.device], float] = training_speed,
) -> Sizing:
    """The depth for a run of `train`'s budget on `corpus_tokens` tokens of training text.
    `shape` gives the other ModelConfig fields (context, dropout, ...)."""

    def sized(depth: int) -> Sizing | None:
        """The sizing for `depth`; None beyond the data limit, checked before any time is
        spent measuring."""
        config = shape.but(depth_shape(depth)).config(vocab_size)
        count = parameters(config)
        if depth > MIN_DEPTH and count > PARAMETERS_PER_TOKEN * corpus_tokens:
            return None
        planned, rate = planned_tokens(config, train, device, processes, speed)
        return Sizing(depth, count, planned, rate, corpus_tokens)

    chosen = sized(MIN_DEPTH)
    for depth in range(MIN_DEPTH + 1, MAX_DEPTH + 1):
        candidate = sized(depth)
        if (
            candidate is None
            or candidate.planned_tokens < TOKENS_PER_PARAMETER * candidate.parameters
        ):
            break
        chosen = candidate
    return chosen
