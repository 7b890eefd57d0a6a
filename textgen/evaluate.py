"""Measuring a model on held-out text: loss, bits per byte and perplexity.

Bits per byte (bpb) is the total negative log-likelihood of the text in bits divided by
its UTF-8 byte count. Unlike the loss per token it does not depend on the tokenizer, so
models with different vocabularies compare fairly. End-of-text tokens stand for no bytes
and are left out of bpb.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from textgen.device import autocast
from textgen.model import Transformer


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy per predicted token, in nats
    bits_per_byte: float
    tokens: int  # predicted tokens
    bytes: int  # UTF-8 bytes those tokens stand for

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))


def token_byte_lengths(token_bytes: list[bytes]) -> torch.Tensor:
    return torch.tensor([len(b) for b in token_bytes], dtype=torch.long)


@torch.inference_mode()
def token_losses(
    model: Transformer, ids: np.ndarray, batch_size: int = 16, max_tokens: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (nll, target) pairs, in text order, for predicting ids[1:] from what precedes.

    The text is cut into consecutive, non-overlapping windows of the context window; each
    window predicts its tokens 1..T from the ones before them inside the window, as in
    training. `max_tokens` bounds the work for periodic checks; None reads everything.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    window = model.config.context_window
    n = len(ids) if max_tokens is None else min(len(ids), max_tokens + 1)
    starts = list(range(0, max(n - 1, 0), window))
    try:
        for i in range(0, len(starts), batch_size):
            rows = [
                np.asarray(ids[s : min(s + window + 1, n)], dtype=np.int64)
                for s in starts[i : i + batch_size]
            ]
            length = max(len(r) for r in rows)
            # pad short rows; padded targets are ignored (-100)
            x = torch.zeros(len(rows), length - 1, dtype=torch.long)
            y = torch.full((len(rows), length - 1), -100, dtype=torch.long)
            for j, r in enumerate(rows):
                t = torch.from_numpy(r)
                x[j, : len(r) - 1] = t[:-1]
                y[j, : len(r) - 1] = t[1:]
            x, y = x.to(device), y.to(device)
            with autocast(device):
                logits, _ = model(x)
            nll = F.cross_entropy(
                logits.float().flatten(0, 1), y.flatten(), ignore_index=-100, reduction="none"
            )
            valid = y.flatten() != -100
            yield nll[valid].cpu(), y.flatten()[valid].cpu()
    finally:
        model.train(was_training)


class Totals:
    """Running sums of negative log-likelihood, tokens and bytes."""

    def __init__(self, byte_lengths: torch.Tensor) -> None:
        self.byte_lengths = byte_lengths
        self.nll = self.nll_with_bytes = 0.0
        self.tokens = self.bytes = 0

    def add(self, nll: torch.Tensor, targets: torch.Tensor) -> None:
        nbytes = self.byte_lengths[targets]
        self.nll += nll.sum().item()
        self.nll_with_bytes += nll[nbytes > 0].sum().item()
        self.tokens += len(nll)
        self.bytes += int(nbytes.sum())

    def result(self) -> EvalResult:
        """Loss over all predicted tokens; bits per byte over those that stand for bytes."""
        return EvalResult(
            loss=self.nll / max(self.tokens, 1),
            bits_per_byte=self.nll_with_bytes / math.log(2) / max(self.bytes, 1),
            tokens=self.tokens,
            bytes=self.bytes,
        )


def evaluate(
    model: Transformer,
    ids: np.ndarray,
    byte_lengths: torch.Tensor,
    batch_size: int = 16,
    max_tokens: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """Loss, bits per byte and token count of `ids` (see `token_losses`). Sums as it goes,
    so memory stays bounded whatever the length; `on_batch` receives tokens scored."""
    totals = Totals(byte_lengths)
    for nll, targets in token_losses(model, ids, batch_size, max_tokens):
        totals.add(nll, targets)
        if on_batch is not None:
            on_batch(len(nll))
    return totals.result()


def evaluate_with_head(
    model: Transformer,
    ids: np.ndarray,
    byte_lengths: torch.Tensor,
    head_tokens: int,
    max_tokens: int | None = None,
) -> tuple[EvalResult, EvalResult]:
    """`evaluate`, and in the same pass the result of its first `head_tokens` predictions
    (a fixed yardstick for comparing checkpoints while the full figure is reported)."""
    totals, head = Totals(byte_lengths), Totals(byte_lengths)
    for nll, targets in token_losses(model, ids, max_tokens=max_tokens):
        totals.add(nll, targets)
        take = max(0, min(len(nll), head_tokens - head.tokens))
        if take:
            head.add(nll[:take], targets[:take])
    return totals.result(), head.result()


@dataclass
class ScoredText:
    """Per-token negative log-likelihoods (nats) of a text, after an end-of-text token."""

    token_ids: list[int]
    nlls: list[float]
    result: EvalResult

    def summary(self) -> dict:
        r = self.result
        return {
            "tokens": r.tokens,
            "bytes": r.bytes,
            "loss": r.loss,
            "bits_per_byte": r.bits_per_byte,
            "perplexity": r.perplexity,
            "mean_surprisal_bits": r.loss / math.log(2),
        }


def score_text(lm, text: str) -> ScoredText:
    """Score `text` the way `evaluate` scores a one-document corpus holding it, so both
    report the same bits per byte."""
    ids = np.array([lm.tokenizer.eot_id, *lm.tokenizer.encode(text)], dtype=np.int64)
    totals = Totals(token_byte_lengths(lm.tokenizer.token_bytes))
    nlls: list[float] = []
    for nll, targets in token_losses(lm.model, ids):
        totals.add(nll, targets)
        nlls.extend(nll.tolist())
    return ScoredText(ids[1:].tolist(), nlls, totals.result())
