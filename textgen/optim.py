"""How the weights move: the optimizer and the learning-rate schedule.

The schedule is a pure function of progress, so it can be driven by steps or by elapsed
time: warm up, hold, then decay linearly to zero, ending exactly at the budget.
"""

from __future__ import annotations

import torch

from textgen.config import TrainConfig
from textgen.model import Transformer


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
