"""Keys and values kept between decoding steps, so that each new token costs one position
of work instead of the whole context.

- `KVCache`: the sequences of a batch side by side, all at the same position (a prompt and
  its samples, `textgen.decode.loop`);
- `RowCache`: each row a sequence of its own at its own position, joining and leaving at
  any step (many requests at once, `textgen.decode.batching`).

Both hand attention the keys and values so far and the mask of what each query sees.
"""

from __future__ import annotations

import torch

from textgen.settings import ModelConfig


def causal_mask(length: int, start: int, device: torch.device) -> torch.Tensor:
    """Which keys each of `length` queries may see, after `start` cached positions:
    (length, start + length), query i sees keys 0 .. start + i."""
    return torch.ones(length, start + length, dtype=torch.bool, device=device).tril(start)


def _allocate(
    config: ModelConfig, rows: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values for a context window of `rows` sequences: (L, B, H, window, D)."""
    shape = (config.n_layer, rows, config.n_head, config.context_window, config.head_dim)
    return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(
        shape, device=device, dtype=dtype
    )


class KVCache:
    """Keys and values of the tokens seen so far, preallocated for the context window:
    every sequence of the batch at the same position (`length`)."""

    def __init__(
        self, config: ModelConfig, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.keys, self.values = _allocate(config, batch_size, device, dtype)
        self.length = 0  # positions filled; advanced by the model after the last layer

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def positions(self, length: int) -> torch.Tensor:
        """The positions of `length` new tokens: (T,), the same for every sequence."""
        return torch.arange(self.length, self.length + length, device=self.keys.device)

    def end(self, length: int) -> int:
        """The sequence's length once `length` new tokens are in."""
        return self.length + length

    def attend(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        """Store the new keys and values (B, H, T, D) after the cached ones; return all
        keys and values so far, the mask of what each new query sees (None: all of it)
        and whether that is plainly causal."""
        start, T = self.length, k.shape[2]
        self.keys[layer, :, :, start : start + T] = k
        self.values[layer, :, :, start : start + T] = v
        k = self.keys[layer, :, :, : start + T]  # (B, H, start+T, D)
        v = self.values[layer, :, :, : start + T]
        if start == 0:
            return k, v, None, True
        if T == 1:  # one new token sees everything cached
            return k, v, None, False
        return k, v, causal_mask(T, start, k.device), False  # a chunk appended to a cache

    def advance(self, length: int) -> None:
        self.length += length


class RowCache:
    """A KV cache whose rows are separate sequences, each at its own position (`lengths`):
    many requests decoding at once, one token each per step, joining and leaving at any
    time (`textgen.decode.batching`). Every step computes all rows, so what a row gets
    never depends on what the others hold."""

    def __init__(
        self, config: ModelConfig, rows: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.keys, self.values = _allocate(config, rows, device, dtype)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)  # filled, per row

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def positions(self, length: int) -> torch.Tensor:
        """The position of each row's new token: (B, 1)."""
        if length != 1:
            raise ValueError("a row cache takes one new token per row and step")
        return self.lengths[:, None]

    def end(self, length: int) -> int:
        """The longest row's length once `length` new tokens are in."""
        return int(self.lengths.max()) + length

    def attend(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        rows = torch.arange(k.shape[0], device=k.device)
        self.keys[layer, rows, :, self.lengths] = k[:, :, 0]  # (B, H, D) at each row's place
        self.values[layer, rows, :, self.lengths] = v[:, :, 0]
        visible = torch.arange(self.capacity, device=k.device) <= self.lengths[:, None]
        return self.keys[layer], self.values[layer], visible[:, None, None, :], False

    def advance(self, length: int) -> None:
        self.lengths += length

    def store_row(self, row: int, cache: KVCache) -> None:
        """Put a one-sequence cache (a prompt just read) into `row`."""
        length = cache.length
        self.keys[:, row, :, :length] = cache.keys[:, 0, :, :length]
        self.values[:, row, :, :length] = cache.values[:, 0, :, :length]
        self.lengths[row] = length
