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

The largest depth within both limits is used (depth 2 at least). Both constants come
from `benchmarks/train_quality.py` on the built-in corpus (143k training tokens with its
1024-token vocabulary), 2 CPU cores. At 1 minute depth 3 (3.6 tokens per parameter)
beat depth 2 (20) and depth 4 (0.95): the compute limit lies between 0.95 and 3.6.
At 5 minutes depth 3 (3.0 parameters per token of text) beat depth 4 (6.5) and depth 5
(12): the data limit lies between 3.0 and 6.5.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from textgen.config import DIAL_HEAD_DIM, ModelConfig, TrainConfig, depth_shape
from textgen.device import autocast
from textgen.model import Transformer
from textgen.optim import make_optimizer

TOKENS_PER_PARAMETER = 2.0
PARAMETERS_PER_TOKEN = 4.0
MIN_DEPTH, MAX_DEPTH = 2, 32


def parameters(config: ModelConfig) -> int:
    """The parameter count of a model with this config, without building its weights."""
    with torch.device("meta"):
        return Transformer(config, init_weights=False).num_parameters()


def training_speed(config: ModelConfig, train: TrainConfig, device: torch.device) -> float:
    """Training tokens per second of a model of this config on `device`: optimizer steps
    at the run's batch, on random tokens, timed after a first one."""
    generator = torch.Generator().manual_seed(0)
    model = Transformer(config).to(device).train()
    optimizer = make_optimizer(model, train, device)
    batch = train.micro_batch_size or train.batch_size
    size = (batch, config.context_window + 1)
    ids = torch.randint(0, config.vocab_size, size, generator=generator).to(device)

    def step() -> None:
        with autocast(device, train.cpu_bf16):
            _, loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # the first step pays for allocations, kernel choices and optimizer state
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timed, start = 0, time.perf_counter()
    while timed < 2 or (timed < 10 and time.perf_counter() - start < 0.2):
        step()
        timed += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return timed * batch * config.context_window / (time.perf_counter() - start)


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
            f"size auto: {self.depth} layers × {DIAL_HEAD_DIM * self.depth} wide "
            f"({self.parameters / 1e6:.2f} M parameters) for {self.planned_tokens / 1e6:.1f} M "
            f"tokens of training{speed}, on {self.corpus_tokens:,} tokens of text"
        )


def choose(
    architecture: dict[str, Any],
    vocab_size: int,
    corpus_tokens: int,
    train: TrainConfig,
    device: torch.device,
    processes: int = 1,
    speed: Callable[[ModelConfig, TrainConfig, torch.device], float] = training_speed,
) -> Sizing:
    """The depth for a run of `train`'s budget on `corpus_tokens` tokens of training text.
    `architecture` holds the other ModelConfig fields (context, dropout, ...)."""
    step_tokens = train.batch_size * architecture.get("context_window", ModelConfig.context_window)
    step_limit = train.steps * step_tokens if train.steps else float("inf")

    def sized(depth: int) -> Sizing | None:
        """The sizing for `depth`; None beyond the data limit, checked before any time is
        spent measuring."""
        config = ModelConfig(vocab_size=vocab_size, **{**architecture, **depth_shape(depth)})
        count = parameters(config)
        if depth > MIN_DEPTH and count > PARAMETERS_PER_TOKEN * corpus_tokens:
            return None
        rate, planned = None, step_limit
        if train.time_budget is not None:
            rate = speed(config, train, device) * processes
            planned = min(planned, rate * train.time_budget)
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
