"""Measuring a model on held-out text: loss, bits per byte and perplexity.

Bits per byte (bpb) is the total negative log-likelihood of the text in bits divided by
its UTF-8 byte count. Unlike the loss per token it does not depend on the tokenizer, so
models with different vocabularies compare fairly. End-of-text tokens stand for no bytes
and are left out of bpb.

One sum, `evaluate`, over the windows `token_losses` yields; `score_text` and
`evaluate_corpus` are that sum over a text and over a corpus.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from textgen.model.device import autocast
from textgen.model.loaded import LoadedModel
from textgen.model.transformer import Transformer
from textgen.records import EvalResult
from textgen.text.corpus import Corpus
from textgen.text.tokens import encode_corpus


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


class _Sums:
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


@dataclass
class Evaluation:
    result: EvalResult  # over every token scored
    first: EvalResult | None = None  # over the first `first_tokens` predictions only
    token_nlls: list[float] | None = None  # per predicted token, in nats, when asked for


def evaluate(
    model: Transformer,
    ids: np.ndarray,
    byte_lengths: torch.Tensor,
    max_tokens: int | None = None,
    first_tokens: int | None = None,
    per_token: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> Evaluation:
    """Loss, bits per byte and token count of `ids` (see `token_losses`), summed as it
    goes, so memory stays bounded whatever the length. In the same pass: the figures of
    the first `first_tokens` predictions (a fixed yardstick for comparing checkpoints
    while the full figure is reported) and, with `per_token`, each token's loss;
    `on_batch` receives the tokens scored."""
    whole, first = _Sums(byte_lengths), _Sums(byte_lengths)
    nlls: list[float] | None = [] if per_token else None
    for nll, targets in token_losses(model, ids, max_tokens=max_tokens):
        whole.add(nll, targets)
        take = max(0, min(len(nll), (first_tokens or 0) - first.tokens))
        if take:
            first.add(nll[:take], targets[:take])
        if nlls is not None:
            nlls.extend(nll.tolist())
        if on_batch is not None:
            on_batch(len(nll))
    return Evaluation(whole.result(), first.result() if first_tokens else None, nlls)


@dataclass
class ScoredText:
    """Per-token negative log-likelihoods (nats) of a text, after an end-of-text token."""

    token_ids: list[int]
    nlls: list[float]
    result: EvalResult


def score_text(lm: LoadedModel, text: str) -> ScoredText:
    """Score `text` the way `evaluate_corpus` scores a one-document corpus holding it, so
    both report the same bits per byte."""
    ids = np.array(lm.tokenizer.encode_document(text), dtype=np.int64)
    lengths = token_byte_lengths(lm.tokenizer.token_bytes)
    evaluation = evaluate(lm.model, ids, lengths, per_token=True)
    return ScoredText(ids[1:].tolist(), evaluation.token_nlls or [], evaluation.result)


def evaluate_corpus(
    lm: LoadedModel, corpus: Corpus, progress: Callable[[int, int], None] = lambda done, total: None
) -> EvalResult:
    """The model's figures on every document of `corpus` (encoded in a temporary file);
    `progress` receives the tokens scored so far and the tokens to score."""
    with tempfile.TemporaryDirectory(prefix="textgen-eval-") as tmp:
        tokens = encode_corpus(corpus, lm.tokenizer, Path(tmp) / "tokens.bin").array()
        lengths = token_byte_lengths(lm.tokenizer.token_bytes)
        total, done = max(len(tokens) - 1, 0), 0

        def scored(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

        return evaluate(lm.model, tokens, lengths, on_batch=scored).result
