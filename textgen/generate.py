"""The decoding loop: token ids in, a stream of step records out.

It knows nothing about text or terminals: `textgen.complete` turns the records into text,
`textgen.render` draws them. All samples of one prompt decode together as one batch.

The model never sees more than its context window. The prompt is pre-filled into the KV
cache in one forward pass, then each step feeds one token. When the cache is full, the
oldest quarter of the window is dropped and the cache is re-filled from the most recent
tokens, so long generations continue at a small amortised cost.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from textgen.config import SampleConfig
from textgen.model import KVCache, Transformer
from textgen.sampling import (
    MIN_TEMPERATURE,
    apply_repetition_penalty,
    logits_to_probs,
    sample,
    top_candidates,
)


@dataclass
class Step:
    """One decoding step for every sample in the batch."""

    token_ids: torch.Tensor  # (B,) the chosen tokens
    probs: torch.Tensor  # (B,) their probability under the distribution sampled from
    logprobs: torch.Tensor  # (B,) their log-probability under the model itself (T = 1)
    top_ids: torch.Tensor | None  # (B, K) the model's K most likely tokens, most likely first
    top_logprobs: torch.Tensor | None  # (B, K) their log-probabilities under the model
    top_probs: torch.Tensor | None  # (B, K) their probabilities in the distribution sampled


def truncate_to_window(ids: list[int], context_window: int) -> tuple[list[int], int]:
    """Keep the last `context_window` ids; also return how many were dropped."""
    dropped = max(0, len(ids) - context_window)
    return ids[dropped:], dropped


def new_seed() -> int:
    return secrets.randbits(63)


@torch.inference_mode()
def generate(
    model: Transformer,
    prompt_ids: list[int],
    settings: SampleConfig,
    show_top: int = 0,
    stop_id: int | None = None,
) -> Iterator[Step]:
    """Sample `settings.max_new_tokens` tokens after `prompt_ids` for each of
    `settings.num_samples` samples. Ends early once every sample has produced `stop_id`."""
    if not prompt_ids:
        raise ValueError("generate needs at least one prompt token")
    config = model.config
    window = config.context_window
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    batch = settings.num_samples
    generator = torch.Generator(device=device)
    generator.manual_seed(settings.seed if settings.seed is not None else new_seed())

    prompt_ids, _ = truncate_to_window(prompt_ids, window)
    # the tokens in the cache, i.e. what the model sees: history[:, :cache.length]
    history = torch.empty(batch, window, dtype=torch.long, device=device)
    history[:, : len(prompt_ids)] = torch.tensor(prompt_ids, device=device)
    cache = KVCache(config, batch, device, dtype)
    logits = model(history[:, : len(prompt_ids)], cache=cache, last_only=True)[0][:, -1]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    keep_on_refill = window - max(1, window // 4)
    greedy = settings.temperature < MIN_TEMPERATURE and settings.repetition_penalty == 1.0
    ones = torch.ones(batch, device=device)

    for _ in range(settings.max_new_tokens):
        model_logprobs = logits.float().log_softmax(-1)  # (B, V), temperature 1
        if greedy and not show_top:  # the argmax needs no distribution
            probs, next_ids = None, logits.argmax(-1)
        else:
            context = history[:, : cache.length]
            adjusted = apply_repetition_penalty(logits, context, settings.repetition_penalty)
            probs = logits_to_probs(adjusted, settings)  # (B, V)
            next_ids = sample(probs, generator)  # (B,)
        top_ids = top_logprobs = top_probs = None
        if show_top:
            top_ids, top_logprobs = top_candidates(model_logprobs, show_top)
            top_probs = probs.gather(1, top_ids)
        yield Step(
            token_ids=next_ids,
            probs=ones if probs is None else probs.gather(1, next_ids[:, None]).squeeze(1),
            logprobs=model_logprobs.gather(1, next_ids[:, None]).squeeze(1),
            top_ids=top_ids,
            top_logprobs=top_logprobs,
            top_probs=top_probs,
        )
        if stop_id is not None:
            finished |= next_ids == stop_id
            if bool(finished.all()):
                return
        if cache.length < window:
            history[:, cache.length] = next_ids
            logits = model(next_ids[:, None], cache=cache)[0][:, -1]
        else:  # the window is full: re-fill the cache from the most recent tokens
            kept = history[:, window - keep_on_refill + 1 :].clone()
            history[:, : keep_on_refill - 1] = kept
            history[:, keep_on_refill - 1] = next_ids
            cache.length = 0
            logits = model(history[:, :keep_on_refill], cache=cache, last_only=True)[0][:, -1]
