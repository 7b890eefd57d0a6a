"""The decoding loop: token ids in, a stream of step records out.

It knows nothing about text or terminals (`textgen.decode.completion` turns the records
into text, `textgen.ui` draws them). All samples of one prompt decode together as one
batch. A chain of small functions:

    prefill (the prompt into the KV cache, one forward pass)
      -> choose (logits -> distribution -> sampled token, a `Step` record)
      -> advance (the new token into the cache; when the window is full, slide it)
      -> choose -> advance -> ...

The model never sees more than its context window: when the cache is full, the oldest
quarter of the window is dropped and the cache is re-filled from the most recent tokens,
so long generations continue at a small amortised cost.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from textgen.decode.sampling import (
    MIN_TEMPERATURE,
    Generators,
    apply_logit_bias,
    apply_repetition_penalty,
    logits_to_probs,
    sample,
    top_candidates,
)
from textgen.model.cache import KVCache
from textgen.model.cpu_step import CpuStep
from textgen.model.transformer import Transformer
from textgen.settings import SampleConfig


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


class Window:
    """What the model sees: the most recent tokens (at most its context window) of each
    sample, and their keys and values in a KV cache. A float32 model on the CPU decodes
    one token at a time in NumPy (`CpuStep`), unless `fast_step` is False."""

    def __init__(self, model: Transformer, batch: int, fast_step: bool = True) -> None:
        config = model.config
        parameter = next(model.parameters())
        self.size = config.context_window
        self.cache = KVCache(config, batch, parameter.device, parameter.dtype)
        # the tokens in the cache: history[:, :cache.length]
        self.history = torch.empty(batch, self.size, dtype=torch.long, device=parameter.device)
        self.keep_on_slide = self.size - max(1, self.size // 4)
        self.step = CpuStep(model, self.cache) if fast_step and CpuStep.for_model(model) else None

    @property
    def tokens(self) -> torch.Tensor:
        return self.history[:, : self.cache.length]


def prefill(model: Transformer, window: Window, prompt_ids: list[int]) -> torch.Tensor:
    """The prompt (at most a window of it) into the cache: the next-token logits (B, V)."""
    prompt_ids, _ = truncate_to_window(prompt_ids, window.size)
    window.history[:, : len(prompt_ids)] = torch.tensor(prompt_ids, device=window.history.device)
    return read(model, window, window.history[:, : len(prompt_ids)])


def read(model: Transformer, window: Window, ids: torch.Tensor) -> torch.Tensor:
    """Tokens (B, T) into the cache after what it holds: the logits after them (B, V). In
    one call of the C step where it runs, else one forward pass of the model."""
    if window.step is not None and window.step.reads_prompts:
        return window.step.read(ids)
    return model(ids, cache=window.cache, last_only=True)[0][:, -1]


def choose(
    logits: torch.Tensor,
    context: torch.Tensor,
    settings: SampleConfig,
    generator: Generators,
    show_top: int = 0,
) -> Step:
    """The next token of each sample from its logits (B, V), and how likely it was
    (`generator`: one for all rows, or one a row; see `sampling.sample`)."""
    model_logprobs = logits.float().log_softmax(-1)  # (B, V), temperature 1, no bias
    logits = apply_logit_bias(logits, settings.logit_bias)
    greedy = settings.temperature < MIN_TEMPERATURE and settings.repetition_penalty == 1.0
    if greedy and not show_top:  # the argmax needs no distribution
        next_ids = logits.argmax(-1)
        probs = torch.ones(next_ids.shape, device=logits.device)
        return Step(next_ids, probs, _pick(model_logprobs, next_ids), None, None, None)
    adjusted = apply_repetition_penalty(logits, context, settings.repetition_penalty)
    distribution = logits_to_probs(adjusted, settings)  # (B, V)
    next_ids = sample(distribution, generator)  # (B,)
    top_ids = top_logprobs = top_probs = None
    if show_top:
        top_ids, top_logprobs = top_candidates(model_logprobs, show_top)
        top_probs = distribution.gather(1, top_ids)
    return Step(
        token_ids=next_ids,
        probs=_pick(distribution, next_ids),
        logprobs=_pick(model_logprobs, next_ids),
        top_ids=top_ids,
        top_logprobs=top_logprobs,
        top_probs=top_probs,
    )


def _pick(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """values (B, V) at ids (B,) -> (B,)."""
    return values.gather(1, ids[:, None]).squeeze(1)


def advance(model: Transformer, window: Window, next_ids: torch.Tensor) -> torch.Tensor:
    """Feed the chosen tokens (B,): the logits for the token after them (B, V)."""
    cache, history = window.cache, window.history
    if cache.length < window.size:
        history[:, cache.length] = next_ids
        if window.step is not None:
            return window.step(next_ids)
        return model(next_ids[:, None], cache=cache)[0][:, -1]
    # the window is full: keep its most recent tokens and re-fill the cache from them
    keep = window.keep_on_slide
    history[:, : keep - 1] = history[:, window.size - keep + 1 :].clone()
    history[:, keep - 1] = next_ids
    cache.length = 0
    return read(model, window, history[:, :keep])


@torch.inference_mode()
def generate(
    model: Transformer,
    prompt_ids: list[int],
    settings: SampleConfig,
    show_top: int = 0,
    stop_id: int | None = None,
    fast_step: bool = True,
) -> Iterator[Step]:
    """Sample `settings.max_new_tokens` tokens after `prompt_ids` for each of
    `settings.num_samples` samples. Ends early once every sample has produced `stop_id`.
    `fast_step` False: every step through the model's own forward pass (see `Window`)."""
    if not prompt_ids:
        raise ValueError("generate needs at least one prompt token")
    window = Window(model, settings.num_samples, fast_step)
    generator = torch.Generator(device=window.history.device)
    generator.manual_seed(settings.seed if settings.seed is not None else new_seed())
    finished = torch.zeros(settings.num_samples, dtype=torch.bool, device=generator.device)
    logits = prefill(model, window, prompt_ids)
    for _ in range(settings.max_new_tokens):
        step = choose(logits, window.tokens, settings, generator, show_top)
        yield step
        if stop_id is not None:
            finished |= step.token_ids == stop_id
            if bool(finished.all()):
                return
        logits = advance(model, window, step.token_ids)
