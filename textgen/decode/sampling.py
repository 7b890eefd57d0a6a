"""From logits to the next token: pure functions over tensors.

    logits --logit bias--> --repetition penalty--> --/ temperature--> --top-k / top-p /
        min-p filter-->
        --softmax--> distribution --sample (seeded generator)--> token id

Temperature divides the logits before the softmax: below 1 the most likely tokens
dominate more, above 1 the distribution flattens. 0 means greedy (always the argmax);
the cap is 2, beyond which the text turns to noise.
"""

from __future__ import annotations

import torch

from textgen.settings import SampleConfig

MIN_TEMPERATURE = 1e-6  # below this, dividing float32 logits loses them: sample greedily


def apply_logit_bias(logits: torch.Tensor, bias: tuple[tuple[int, float], ...]) -> torch.Tensor:
    """Add each (token id, bias) to that token's logit in every row of `logits` (B, V)."""
    if not bias:
        return logits
    ids = torch.tensor([i for i, _ in bias], device=logits.device)
    values = torch.tensor([b for _, b in bias], device=logits.device, dtype=logits.dtype)
    return logits.index_add(-1, ids, values.expand(logits.shape[0], -1))


def apply_repetition_penalty(
    logits: torch.Tensor, context: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Make tokens already in `context` (B, T) less likely: positive logits are divided by
    the penalty, negative ones multiplied (CTRL's rule)."""
    if penalty == 1.0:
        return logits
    seen = torch.gather(logits, 1, context)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, context, seen)


def filter_logits(
    logits: torch.Tensor,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> torch.Tensor:
    """Set the logits of excluded tokens to -inf. The most likely token is always kept.

    top_k keeps the k largest; top_p keeps the smallest set of most likely tokens whose
    probability reaches p; min_p drops tokens whose probability is below min_p times the
    most likely one's. Applied in that order; ties at a cut-off are kept.
    """
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already reach top_p
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if min_p is not None and min_p > 0.0:
        probs = logits.softmax(dim=-1)
        threshold = min_p * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def logits_to_probs(logits: torch.Tensor, settings: SampleConfig) -> torch.Tensor:
    """The distribution to sample from, (B, V). Temperature 0 gives a one-hot argmax."""
    logits = logits.float()
    if settings.temperature < MIN_TEMPERATURE:  # 0 is greedy, and so is anything this cold
        return greedy_probs(logits)
    # shift the maximum to 0 first: a tiny temperature then sends the others to -inf
    # instead of overflowing to inf - inf = nan
    scaled = (logits - logits.max(dim=-1, keepdim=True).values) / settings.temperature
    logits = filter_logits(scaled, settings.top_k, settings.top_p, settings.min_p)
    return logits.softmax(dim=-1)


def greedy_probs(logits: torch.Tensor) -> torch.Tensor:
    """All probability on the most likely token (the first one, on ties)."""
    probs = torch.zeros_like(logits)
    return probs.scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)


Generators = torch.Generator | list[torch.Generator] | None


def sample(probs: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """One token id per row of `probs` (B, V) -> (B,), by inverting the cumulative
    distribution at a uniform random point (several times faster than torch.multinomial
    for one draw). `side="right"` never lands on a token of probability zero.

    `generator` draws the points of all rows, or a list of them one row's point each (rows
    that are separate requests: each row then draws what it would draw alone)."""
    cumulative = probs.cumsum(dim=-1)  # (B, V)
    if isinstance(generator, list):
        point = torch.cat([torch.rand(1, 1, generator=g, device=probs.device) for g in generator])
    else:
        point = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device)
    ids = torch.searchsorted(cumulative, point * cumulative[:, -1:], side="right")
    return ids.clamp_(max=probs.shape[-1] - 1).squeeze(-1)


def top_candidates(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k highest-scoring tokens of each row (probabilities, logits or log-probabilities)
    and their scores, highest first: (B, k) each."""
    values, indices = torch.topk(scores, min(k, scores.size(-1)), dim=-1)
    return indices, values
