"""Reading the model's inner workings out of a forward pass, for the views that show them.

The forward pass itself stays the fast one: what is read here is recomputed from the
inputs that forward hooks see, so nothing in the model carries a flag or keeps state.
"""

from __future__ import annotations

import math

import torch

from textgen.model.cache import causal_mask
from textgen.model.transformer import CausalSelfAttention, Transformer
from textgen.records import Candidate, Lens


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q, k (B, H, T, D) -> the causal attention pattern (B, H, T, T): row i is how query
    i spreads its attention over keys 0..i (each row sums to 1)."""
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    keep = causal_mask(T, 0, q.device)
    return scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)


def _run_hooked(model: Transformer, ids: torch.Tensor, hooks: list) -> None:
    """One forward pass of `ids` with these hooks in place; the model is left without
    them, whatever happens."""
    try:
        model(ids)
    finally:
        for hook in hooks:
            hook.remove()


@torch.inference_mode()
def attention_patterns(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """The attention weights of every layer and head for `ids` (1, T):
    (n_layer, n_head, T, T), row i is how query i spreads its attention over keys."""
    patterns: list[torch.Tensor] = []

    def keep(attention: CausalSelfAttention, inputs: tuple, output: torch.Tensor) -> None:
        x, rotary, _ = inputs  # the normed residual stream, as attention saw it
        q, k, _ = attention.queries_keys_values(x, rotary)
        patterns.append(attention_weights(q.float(), k.float())[0])

    _run_hooked(model, ids, [block.attn.register_forward_hook(keep) for block in model.blocks])
    return torch.stack(patterns)


@torch.inference_mode()
def residual_stream(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """The residual stream of `ids` (1, T) at every depth: (n_layer + 1, T, C), depth 0
    what the first block reads (the embeddings), depth d what block d wrote."""
    stream: list[torch.Tensor] = []

    def before(block: torch.nn.Module, inputs: tuple) -> None:
        stream.append(inputs[0][0])

    def after(block: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        stream.append(output[0])

    hooks = [model.blocks[0].register_forward_pre_hook(before)]
    hooks += [block.register_forward_hook(after) for block in model.blocks]
    _run_hooked(model, ids, hooks)
    return torch.stack(stream)


@torch.inference_mode()
def logit_lens(
    model: Transformer, ids: list[int], last: int, top: int, dropped_tokens: int | None = 0
) -> Lens:
    """The logit lens of `ids` (at most a context window) over its last `last` positions:
    each depth's vectors through the final norm and the unembedding (`Transformer.logits`),
    so the last depth is exactly the model's prediction. `dropped_tokens`: how many tokens
    of the text came before `ids` (recorded in the reading)."""
    shown = min(last, len(ids))
    first = len(ids) - shown
    stream = residual_stream(model, torch.tensor([ids]))[:, first:]  # (depths, shown, C)
    logprobs = model.logits(stream).log_softmax(dim=-1)  # (depths, shown, vocab)
    best, best_ids = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
    following = ids[first + 1 :]  # the text's next token at each position but the last
    if following:
        targets = torch.tensor(following)[None, :, None].expand(len(logprobs), -1, 1)
        real = logprobs[:, : len(following)].gather(-1, targets)[..., 0].exp().tolist()
    else:
        real = [[] for _ in range(len(logprobs))]
    return Lens(
        token_ids=ids[first:],
        first_position=first,
        dropped_tokens=dropped_tokens,
        depths=["embedding"] + [f"layer {d}" for d in range(len(model.blocks))],
        top=[
            [
                [Candidate(i, lp, math.exp(lp)) for i, lp in zip(row_ids, row, strict=True)]
                for row_ids, row in zip(depth_ids, depth, strict=True)
            ]
            for depth_ids, depth in zip(best_ids.tolist(), best.tolist(), strict=True)
        ],
        next_prob=[[*probs, None] for probs in real],
    )


@torch.inference_mode()
def attention_rows(model: Transformer, ids: list[int], first: int) -> list:
    """For each query from position `first` on, every layer's and head's attention over
    the keys from `first` to the query: [query][layer][head] -> weights, to 3 decimals."""
    patterns = attention_patterns(model, torch.tensor([ids]))[:, :, first:, first:]
    rounded = patterns.permute(2, 0, 1, 3).mul(1000).round().div(1000).tolist()
    return [
        [[weights[: query + 1] for weights in layer] for layer in rows]
        for query, rows in enumerate(rounded)
    ]
