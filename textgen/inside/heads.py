"""What each attention head does, measured over a sample of text, and a one-word label
where one clearly fits.

For every layer and head, averaged over the queries of every window of the sample:

- entropy: how spread a query's attention is, in bits; spread is that entropy over its
  largest possible value (uniform over the keys the query can see), so 1 is even
  attention whatever the position.
- previous: the weight on the token just before the query; first: on the window's first
  position (where heads park attention they do not need). Both from the third query on,
  where the two are different positions.
- same_token: the weight on earlier occurrences of the query's own token (over the
  queries that have one).
- induction: the weight on the tokens that *followed* earlier occurrences of the query's
  token (A B ... A -> B: the head that lets a model continue a repeated sequence), over
  the queries that have such a token, the token just before the query left out.

A label is given where its statistic reaches its threshold (`LABELS`); where several
do, the one furthest past its threshold (the ratio of statistic to threshold) wins.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from textgen.inside.readout import attention_patterns
from textgen.model.transformer import Transformer
from textgen.records import HeadStats
from textgen.text.tokenizer import Tokenizer

# label: (statistic, threshold). A previous- or first-token head puts 40% or more of its
# attention on that one key, where even attention over the keys a query sees would put
# 1/(i+1) there (under 5% on average over a window of 40 tokens or more); an induction or
# same-token head, whose targets are several keys among many, 30%; a broad head's
# attention is within 80% of the largest entropy it could have.
LABELS: dict[str, tuple[str, float]] = {
    "previous-token": ("previous", 0.4),
    "first-token": ("first", 0.4),
    "induction": ("induction", 0.3),
    "same-token": ("same_token", 0.3),
    "broad": ("spread", 0.8),
}
STATISTICS = ("entropy_bits", "spread", "previous", "first", "same_token", "induction")


def label_for(figures: dict[str, float]) -> str | None:
    """The label whose statistic is furthest past its threshold, or None."""
    ratios = {label: figures[stat] / bound for label, (stat, bound) in LABELS.items()}
    best = max(ratios, key=lambda label: ratios[label])
    return best if ratios[best] >= 1.0 else None


def window_statistics(patterns: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """One window's sums and counts: patterns (L, H, T, T) of ids (T,) -> for each
    statistic, (sum over queries (L, H), number of queries). Sums, so windows add up."""
    T = ids.shape[0]
    query, key = torch.arange(T)[:, None], torch.arange(T)[None, :]
    earlier = key < query
    same = (ids[:, None] == ids[None, :]) & earlier  # (T, T): key j holds the query's token
    followed = torch.zeros_like(same)
    followed[:, 1:] = same[:, :-1]  # key j follows an earlier occurrence of the query's token
    followed &= key < query - 1  # not the token just before: that is the previous-token head
    p = patterns.float()
    visible = torch.arange(1, T + 1, dtype=torch.float)  # keys each query can see
    entropy = -(p * p.clamp_min(1e-12).log2()).sum(-1)  # (L, H, T)
    late = slice(2, None)  # from the third query on, "previous" and "first" differ
    diagonal = torch.arange(2, T)
    sums = {
        "entropy_bits": (entropy[..., 1:].sum(-1), T - 1),
        "spread": ((entropy[..., 1:] / visible[1:].log2()).sum(-1), T - 1),
        "previous": (p[..., diagonal, diagonal - 1].sum(-1), max(T - 2, 0)),
        "first": (p[..., late, 0].sum(-1), max(T - 2, 0)),
        "same_token": ((p * same).sum((-1, -2)), int(same.any(1).sum())),
        "induction": ((p * followed).sum((-1, -2)), int(followed.any(1).sum())),
    }
    return sums


def head_statistics(patterns: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[HeadStats]:
    """Every head's statistics over windows of (patterns (L, H, T, T), ids (T,)), the
    queries of all windows weighing the same."""
    totals: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(STATISTICS, 0)
    for pattern, ids in patterns:
        for name, (total, count) in window_statistics(pattern, ids).items():
            totals[name] = totals.get(name, 0) + total
            counts[name] += count
    if not totals:
        return []
    means = {name: (totals[name] / max(counts[name], 1)).tolist() for name in STATISTICS}
    layers, heads = totals["previous"].shape
    found = []
    for layer in range(layers):
        for head in range(heads):
            figures = {name: float(means[name][layer][head]) for name in STATISTICS}
            found.append(HeadStats(layer, head, **figures, label=label_for(figures)))
    return found


def sample_windows(tokenizer: Tokenizer, texts: Iterable[str], window: int, tokens: int):
    """About `tokens` tokens of `texts`, cut into windows of the context window, as (T,)
    id tensors; the first begins with the end-of-text marker, as a document does."""
    ids: list[int] = [tokenizer.eot_id]
    for text in texts:
        ids += tokenizer.encode(text)
        if len(ids) >= tokens:
            break
    ids = ids[: max(tokens, 2)]
    return [torch.tensor(ids[s : s + window]) for s in range(0, len(ids) - 1, window)]


def measure_heads(model: Transformer, windows: list[torch.Tensor]) -> list[HeadStats]:
    """Each head's statistics over `windows` (see `sample_windows`)."""
    return head_statistics(
        (attention_patterns(model, ids[None]), ids) for ids in windows if len(ids) >= 3
    )
