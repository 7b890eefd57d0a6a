"""Reading the model's inner workings out of a forward pass, for the views that show them.

The forward pass itself stays the fast one: what is read here is recomputed from the
inputs that forward hooks see, so nothing in the model carries a flag or keeps state.
"""

from __future__ import annotations

import math

import torch

from textgen.model.cache import causal_mask
from textgen.model.transformer import CausalSelfAttention, Transformer


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q, k (B, H, T, D) -> the causal attention pattern (B, H, T, T): row i is how query
    i spreads its attention over keys 0..i (each row sums to 1)."""
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    keep = causal_mask(T, 0, q.device)
    return scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)


@torch.inference_mode()
def attention_patterns(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """The attention weights of every layer and head for `ids` (1, T):
    (n_layer, n_head, T, T), row i is how query i spreads its attention over keys."""
    patterns: list[torch.Tensor] = []

    def keep(attention: CausalSelfAttention, inputs: tuple, output: torch.Tensor) -> None:
        x, rotary, _ = inputs  # the normed residual stream, as attention saw it
        q, k, _ = attention.queries_keys_values(x, rotary)
        patterns.append(attention_weights(q.float(), k.float())[0])

    hooks = [block.attn.register_forward_hook(keep) for block in model.blocks]
    try:
        model(ids)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack(patterns)
