"""Watching a model learn: a short sample from the weights as they are, every so many
steps (`train --sample-every`), always from the same prompt and seed, so successive
samples differ only by what the model has learned.

A sample never changes the run: it decodes in evaluation mode with a generator of its
own (the run's random states, dropout's and the data order's, are untouched) and then
puts the model back as it was. It costs a forward pass per token of a small model: well
under 1 % of a run at the defaults (48 tokens every 100 steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from textgen.decode.completion import Completion
from textgen.model.loaded import LoadedModel
from textgen.model.transformer import Transformer
from textgen.records import SampleReport
from textgen.settings import SampleConfig, TrainConfig
from textgen.text.tokenizer import Tokenizer

SAMPLE_TEMPERATURE = 0.8  # generate's own default


@dataclass
class Sampler:
    tokenizer: Tokenizer
    prompt: str
    tokens: int
    every: int  # steps between samples
    seed: int

    @classmethod
    def for_run(
        cls, config: TrainConfig, tokenizer: Tokenizer, first_word: str | None
    ) -> Sampler | None:
        """The run's sampler, None when samples are off (`--sample-every 0` or
        `--sample-tokens 0`)."""
        every = config.eval_interval if config.sample_every is None else config.sample_every
        if every == 0 or config.sample_tokens == 0:
            return None
        prompt = config.sample_prompt if config.sample_prompt is not None else first_word
        return cls(tokenizer, prompt or "", config.sample_tokens, every, config.seed)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def sample(
        self, model: Transformer, step: int, tokens_seen: int, val_bpb: float | None
    ) -> SampleReport:
        """A sample from `model`'s weights as they are now; the model is left in the mode
        it was in."""
        was_training = model.training
        model.eval()
        try:
            settings = SampleConfig(
                temperature=SAMPLE_TEMPERATURE, max_new_tokens=self.tokens, seed=self.seed
            )
            lm = LoadedModel(Path(), model, self.tokenizer, {})
            completion = Completion(lm, self.prompt, settings)
            with torch.random.fork_rng(devices=[]):  # nothing draws from it; never let it
                pieces = [(r.text, math.exp(r.logprob)) for r in completion if r.text]
        finally:
            model.train(was_training)
        return SampleReport(step, tokens_seen, val_bpb, self.prompt, pieces)
