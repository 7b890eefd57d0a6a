"""From the token file to training batches: the held-out split, and the windows
each step trains on (split over processes and micro-batches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from textgen.errors import SettingError, TextgenError
from textgen.settings import TrainConfig
from textgen.text.corpus import Corpus
from textgen.text.tokens import TokenFile
from textgen.training.recipe import held_out_pieces, held_out_tokens
from textgen.units import plural

REPETITIVE_BYTES_PER_TOKEN = 32  # ordinary text: 2-6; a corpus past this repeats itself


def _why_so_few(corpus_bytes: int, tokens: int) -> str:
    """A corpus of many bytes but few tokens is nearly one thing repeated: its tokenizer
    merged the repeats into a few very long tokens."""
    if corpus_bytes < REPETITIVE_BYTES_PER_TOKEN * tokens:
        return ""
    return (
        f" (its {corpus_bytes:,} bytes encode to {tokens:,} tokens: the text repeats itself "
        "so much that it merged into a few very long tokens; give text with more variety)"
    )


class Batches:
    """The windows each step trains on, drawn with seeded randomness (so a resumed run
    draws the same batches it would have drawn): `order="random"`, starts drawn anywhere
    with replacement; `order="epochs"`, the text cut into windows that tile it (from a
    random offset each epoch) and read in a shuffled order, every token once an epoch.

    Every process draws the same starts for the whole batch and reads its own share of
    them, so a batch is the same whatever the number of processes and micro-batches."""

    def __init__(
        self, tokens: np.ndarray, context: int, batch_size: int, seed: int, order: str = "epochs"
    ) -> None:
        self.tokens, self.context, self.batch_size = tokens, context, batch_size
        self.seed, self.order = seed, order
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.position = 0, 0  # where an "epochs" order is
        self._epoch_starts: torch.Tensor | None = None

    def draw(self) -> torch.Tensor:
        """The start positions of the next batch's windows, (batch_size,)."""
        high = len(self.tokens) - self.context - 1
        if self.order == "random":
            return torch.randint(0, high + 1, (self.batch_size,), generator=self.generator)
        parts, wanted = [], self.batch_size
        while wanted:
            starts = self.epoch_starts()
            part = starts[self.position : self.position + wanted]
            parts.append(part)
            wanted -= len(part)
            self.position += len(part)
            if self.position == len(starts):
                self.epoch, self.position, self._epoch_starts = self.epoch + 1, 0, None
        return torch.cat(parts)

    def epoch_starts(self) -> torch.Tensor:
        """This epoch's window starts in the order read: windows of context + 1 tokens
        every `context` tokens from an offset below `context`, so their targets tile the
        text once; the offset and the order from the seed and the epoch alone."""
        if self._epoch_starts is None:
            rng = np.random.default_rng([self.seed, self.epoch])
            high = len(self.tokens) - self.context - 1
            offset = int(rng.integers(0, min(self.context, high + 1)))
            starts = np.arange(offset, high + 1, self.context)
            self._epoch_starts = torch.from_numpy(rng.permutation(starts))
        return self._epoch_starts

    def state_dict(self) -> dict[str, Any]:
        return {"data_rng": self.generator.get_state(), "data_epoch": [self.epoch, self.position]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["data_rng"])
        self.epoch, self.position = state.get("data_epoch", (0, 0))  # older states: random
        self._epoch_starts = None

    def load(self, starts: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (len(starts), context) for windows at `starts`."""
        rows = np.stack([self.tokens[s : s + self.context + 1] for s in starts.tolist()])
        batch = torch.from_numpy(rows.astype(np.int64))  # (B, T+1)
        x, y = batch[:, :-1], batch[:, 1:]
        if device.type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(
                device, non_blocking=True
            )
        return x.to(device), y.to(device)


@dataclass
class Split:
    train: np.ndarray  # the tokens batches are drawn from
    val: np.ndarray  # the held-out tokens: the last part of the corpus, or pieces through it


def split(
    token_file: TokenFile, config: TrainConfig, context: int, corpus: Corpus | None = None
) -> Split:
    """The training and validation tokens of the token file: as many are held out as
    `textgen.training.recipe.held_out_tokens` says, at the end of the corpus or (with
    `held_out="spread"`) in pieces through it, the training tokens joined around them."""
    tokens = token_file.array()
    n_val = held_out_tokens(len(tokens), config.val_fraction)
    if config.held_out == "spread":
        pieces = held_out_pieces(len(tokens), n_val, context)
        bounds = [0, *(i for piece in pieces for i in piece), len(tokens)]
        between = zip(bounds[::2], bounds[1::2], strict=True)
        train_tokens = np.concatenate([tokens[a:b] for a, b in between])
        val_tokens = np.concatenate([tokens[a:b] for a, b in pieces])
    else:
        train_tokens, val_tokens = tokens[:-n_val], tokens[-n_val:]
    if len(train_tokens) < context + 1:
        raise TextgenError(
            f"the corpus is too small: {max(len(train_tokens), 0)} training tokens, but one "
            f"context window needs {context + 1}"
            + (_why_so_few(corpus.total_bytes, len(tokens)) if corpus else "")
            + "; add text or lower --context"
        )
    return Split(train_tokens, val_tokens)


def micro_batches(config: TrainConfig, processes: int) -> tuple[int, int]:
    """(sequences per forward pass, forward passes per step) in each process."""
    per_process, rest = divmod(config.batch_size, processes)
    if rest:
        raise SettingError(
            f"--batch-size {config.batch_size} does not split evenly over "
            f"{plural(processes, 'process')}; "
            f"use a multiple of {processes}"
        )
    micro = config.micro_batch_size or per_process
    if per_process % micro:
        each = "each process takes" if processes > 1 else "a step takes"
        raise SettingError(
            f"--micro-batch-size {micro} does not divide the {per_process} sequences {each} "
            f"(--batch-size {config.batch_size}); use a divisor of {per_process}"
        )
    return micro, per_process // micro
