"""What a training run reports as it goes (to a callback), and what it returns.

Plain data: `textgen.render` draws these without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textgen.evaluate import EvalResult


@dataclass
class Notice:
    message: str
    warning: bool = False


@dataclass
class Working:
    """Progress of a long step before training: training the tokenizer, encoding."""

    task: str
    done: int  # corpus bytes handled
    total: int


@dataclass
class RunStarted:
    parameters: int
    train_tokens: int
    val_tokens: int
    device: str
    max_steps: int | None
    time_budget: float | None
    start_step: int
    processes: int = 1
    accumulation: int = 1  # micro-batches per step and process


@dataclass
class StepReport:
    step: int
    loss: float  # smoothed training loss
    learning_rate: float
    tokens_seen: int
    tokens_per_second: float
    elapsed: float
    fraction_done: float
    flops_per_second: float = 0.0  # model FLOP/s achieved (all processes together)
    mfu: float | None = None  # share of the hardware's peak, where the peak is known


@dataclass
class EvalReport:
    step: int
    elapsed: float
    tokens_seen: int
    train_loss: float
    result: EvalResult
    final: bool
    kept: bool = False  # these weights were saved as the model (the best so far)


@dataclass
class TrainResult:
    folder: Path
    steps: int
    tokens_seen: int
    elapsed: float
    parameters: int
    final_eval: EvalResult | None  # of the weights at the end of training
    interrupted: bool
    kept_step: int  # the step whose weights model.safetensors holds
    kept_eval: EvalResult | None  # and their evaluation


Callback = Callable[[Any], None]
