"""Measuring a model on held-out text: loss, bits per byte and perplexity.

Bits per byte (bpb) is the total negative log-likelihood of the text in bits divided by
its UTF-8 byte count. Unlike the loss per token it does not depend on the tokenizer, so
models with different vocabularies compare fairly. End-of-text tokens stand for no bytes
and are left out of bpb.
"""

from __future__ import annotations

import math
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
def evaluate(
    model: Transformer,
    ids: np.ndarray,
    byte_lengths: torch.Tensor,
    batch_size: int = 16,
    max_tokens: int | None = None,
) -> EvalResult:
    """Score `ids` in consecutive, non-overlapping windows of the context window.

    Each window predicts its tokens 1..T from the ones before them inside the window.
    `max_tokens` bounds the work for periodic checks; None reads everything.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    window = model.config.context_window
    n = len(ids) if max_tokens is None else min(len(ids), max_tokens + 1)
    starts = list(range(0, max(n - 1, 0), window))
    total_nll = nll_with_bytes = 0.0
    total_tokens = total_bytes = 0
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
        ).view_as(y)
        valid = y != -100
        nbytes = byte_lengths.to(device)[y.clamp(min=0)] * valid
        total_nll += nll[valid].sum().item()
        total_tokens += int(valid.sum())
        nll_with_bytes += nll[nbytes > 0].sum().item()
        total_bytes += int(nbytes.sum())
    model.train(was_training)
    loss = total_nll / max(total_tokens, 1)
    bpb = nll_with_bytes / math.log(2) / max(total_bytes, 1)
    return EvalResult(loss=loss, bits_per_byte=bpb, tokens=total_tokens, bytes=total_bytes)
