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
