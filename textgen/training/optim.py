"""How the weights move: the optimizer and the learning-rate schedule.

The schedule is a pure function of progress, so it can be driven by steps or by elapsed
time: warm up, hold, then decay linearly to zero, ending exactly at the budget.
"""

from __future__ import annotations

import torch

from textgen.model.device import fast_bf16_matmul
from textgen.model.transformer import Transformer
from textgen.settings import TrainConfig


class Optimizers:
    """Several optimizers stepped as one. Each parameter group keeps its peak learning rate
    in "base_lr"; `set_lr_multiplier` applies the schedule to all of them."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers
        for group in self.param_groups:
            group["base_lr"] = group["lr"]

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def set_lr_multiplier(self, multiplier: float) -> None:
        for group in self.param_groups:
            group["lr"] = group["base_lr"] * multiplier

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        saved = state["optimizers"]
        if len(saved) != len(self.optimizers):
            raise ValueError("the saved optimizer state is for another optimizer setting")
        for o, s in zip(self.optimizers, saved, strict=True):
            o.load_state_dict(s)


def make_optimizer(model: Transformer, config: TrainConfig, device: torch.device) -> Optimizers:
    """AdamW with weight decay on matrices only (not on norm gains); or, with
    `optimizer="muon"`, Muon for the hidden matrices of the blocks and AdamW for the
    embeddings, the unembedding and the gains. The weight decay must be settled
    (`recipe.regularised`)."""
    if config.weight_decay is None:
        raise ValueError("the weight decay is not settled yet (recipe.regularised)")
    fused = device.type == "cuda"
    hidden = (
        [
            (name, p)
            for name, p in model.named_parameters()
            if name.startswith("blocks.") and p.dim() == 2
        ]
        if config.optimizer == "muon"
        else []
    )
    hidden_ids = {id(p) for _, p in hidden}
    rest = [p for p in model.parameters() if id(p) not in hidden_ids]
    adamw = torch.optim.AdamW(
        [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        betas=(0.9, 0.95),
        fused=fused,
    )
    if not hidden:
        return Optimizers(adamw)
    fused_qkv = [p for name, p in hidden if name.endswith("attn.qkv.weight")]
    others = [p for name, p in hidden if not name.endswith("attn.qkv.weight")]
    muon = Muon(
        [{"params": fused_qkv, "blocks": 3}, {"params": others, "blocks": 1}],
        lr=config.muon_learning_rate,
        weight_decay=config.muon_weight_decay,
    )
    return Optimizers(muon, adamw)


def orthogonalize(
    g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to G = U S V^T, approximately U V^T, by a quintic
    Newton-Schulz iteration (the coefficients make singular values rise fast from near
    zero, at the cost of landing in about [0.7, 1.2] rather than exactly on 1). Works on
    a batch of matrices (..., m, n). bf16 is as good here (the iteration is no more
    exact than bf16) and, where the hardware has bf16 matrix units, twice as fast."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype)
    wide = x.size(-2) <= x.size(-1)
    if not wide:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # singular values now <= 1
    batched = x.reshape(-1, *x.shape[-2:])
    for _ in range(steps):
        gram = batched @ batched.mT
        polynomial = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b*A + c*A@A
        batched = torch.baddbmm(batched, polynomial, batched, beta=a)  # a*X + (...)@X
    x = batched.view(x.shape)
    return x if wide else x.mT


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-schulz: SGD with Nesterov momentum whose update
    for each matrix is replaced by its orthogonalized form, so every direction of the
    matrix moves by about the same amount. For the 2-D weights inside the blocks only;
    a group's "blocks" splits a fused matrix (Q, K, V) into parts treated separately.
    `weight_decay` is decoupled, as AdamW's: each step first shrinks a matrix by
    lr x weight_decay, so it follows the learning rate's schedule."""

    def __init__(
        self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0
    ) -> None:
        defaults = {"lr": lr, "momentum": momentum, "blocks": 1, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self) -> None:
        # Matrices of one shape are orthogonalized together, as one batch: a small model has
        # dozens of small matrices, and one batched call costs little more than one.
        pending: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor, dict]]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                buffer = state["momentum"]
                buffer.mul_(group["momentum"]).add_(p.grad)
                update = p.grad.add(buffer, alpha=group["momentum"])  # Nesterov
                rows, cols = p.shape
                parts = update.view(group["blocks"], rows // group["blocks"], cols)
                pending.setdefault(tuple(parts.shape[1:]), []).append((p, parts, group))
        for same_shape in pending.values():
            stacked = torch.cat([parts for _, parts, _ in same_shape])
            dtype = torch.bfloat16 if fast_bf16_matmul(stacked.device) else torch.float32
            orthogonal = orthogonalize(stacked, dtype=dtype)
            orthogonal = orthogonal.split([len(u) for _, u, _ in same_shape])
            for (p, parts, group), update in zip(same_shape, orthogonal, strict=True):
                block_rows, cols = parts.shape[1:]
                scale = max(1.0, block_rows / cols) ** 0.5  # tall matrices: same RMS step
                decay = group.get("weight_decay", 0.0)  # absent from older checkpoints
                if decay:
                    p.mul_(1 - group["lr"] * decay)
                p.add_(update.view_as(p).to(p.dtype), alpha=-group["lr"] * scale)


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
