"""Weight averaging: an exponential moving average of the weights whose reach grows with
the run (Karras et al. 2024's power-function EMA), so it needs no step count up front and
suits a run budgeted in time.

After step t the average moves towards the weights by 1 - (1 - 1/t)^(gamma + 1): it
weighs each past step by (its step / t)^gamma, a profile whose width relative to the
run's length (`width`, the standard deviation of the profile over t) is the one setting.
A width of 0.05 averages roughly the last tenth of the run.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def gamma_for_width(width: float) -> float:
    """The exponent gamma whose averaging profile has relative width `width`:
    width^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)), which falls as gamma grows
    (gamma = 7 gives about 0.10, gamma = 17 about 0.05)."""
    if not 0 < width < math.sqrt(1 / 12):  # gamma = 0: a plain mean, the widest there is
        raise ValueError(f"an averaging width must be within (0, {math.sqrt(1 / 12):.3f})")

    def spread(gamma: float) -> float:
        return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))

    low, high = 0.0, 1.0
    while spread(high) > width:
        high *= 2
    for _ in range(100):  # bisection: spread falls monotonically in gamma
        middle = (low + high) / 2
        low, high = (middle, high) if spread(middle) > width else (low, middle)
    return (low + high) / 2


class WeightAverage:
    """A float32 copy of a model's floating-point weights, moved towards them after each
    optimizer step (`update`); `state_dict` and `load_state_dict` carry it across a resume."""

    def __init__(self, model: torch.nn.Module, width: float) -> None:
        self.gamma = gamma_for_width(width)
        self.steps = 0
        self.params = [p for p in model.parameters() if p.is_floating_point()]
        self.average = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        share = 1 - (1 - 1 / self.steps) ** (self.gamma + 1)  # 1 at the first step
        current = [p.detach().float() for p in self.params]
        torch._foreach_lerp_(self.average, current, share)

    @torch.no_grad()
    def copy_into(self, model: torch.nn.Module) -> None:
        """Put the averaged weights into `model` (the one it averages)."""
        for param, average in zip(self.params, self.average, strict=True):
            param.copy_(average)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "average": [a.cpu() for a in self.average]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["average"]
        if len(saved) != len(self.average):
            raise ValueError("the saved weight average is for another model")
        self.steps = int(state["steps"])
        for mine, theirs in zip(self.average, saved, strict=True):
            mine.copy_(theirs)
