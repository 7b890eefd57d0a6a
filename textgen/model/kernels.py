"""CPU fast paths for two pieces of the model, exact in what they compute.

On a CPU, training a small model is bound by per-operation overhead and memory traffic,
not by its matrix products: these two pieces cost several times what they need to when
written the obvious way (docs/recipe.md has the measurements). CUDA and
compiled models use PyTorch's own fused kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _SquaredReLU(torch.autograd.Function):
    """relu(x)^2 with its gradient 2 relu(x) written out: autograd's own chain through
    `pow` keeps more intermediates and launches more operations, several times the cost
    on CPU."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return grad * (r + r)


def squared_relu(x: torch.Tensor) -> torch.Tensor:
    return _SquaredReLU.apply(x)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, with a cheaper mask on CPU: CPU `bernoulli_` draws one 32-bit random
    number per element; here one 64-bit draw gives four 16-bit ones, each kept when it is
    above p's quantile (p to 1/65536). The full int64 range matters: plain `random_()`
    leaves the top bit 0, which would bias every fourth mask."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or x.numel() % 4 or torch.compiler.is_compiling():
        return F.dropout(x, p)
    dropped = round(p * 65536)  # of the 65536 values an int16 takes
    draws = torch.empty(x.numel() // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    keep = draws.view(torch.int16).view(x.shape) >= dropped - 32768
    return x * keep.to(x.dtype).mul_(65536 / (65536 - dropped))
