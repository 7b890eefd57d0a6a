"""How much memory a model's work takes, estimated before anything is allocated, so that
work the machine cannot hold is refused in one line rather than ended by the kernel's
out-of-memory killer (which leaves no message, and a lock and a staging folder behind).

The estimates are float32 and deliberately simple; measured on CPU they come within 5 %
of the peak of a forward and backward pass at the shapes textgen trains, and above it
where attention is long:

- training: a step's batch of token ids (drawn whole, then split into micro-batches);
  weights, gradients and Adam's two moments (4 copies of the parameters), and per token
  of a micro-batch, each block's saved activations (about 20 floats per
  channel, and two per head and position of the attention pattern) and the logits
  (3 floats per vocabulary entry: the logits, their softmax and its gradient);
- decoding: per row, the key/value cache of a context window in every layer, the
  history of token ids and a step's logits and probabilities (4 copies of the vocabulary).
"""

from __future__ import annotations

import torch

from textgen.errors import SettingError
from textgen.model.device import device_memory_bytes
from textgen.settings import ModelConfig

FLOAT_BYTES = 4
USABLE_SHARE = 0.9  # of the device's memory: the rest is the system's and the program's


def training_step_bytes(config: ModelConfig, micro_batch: int) -> int:
    """The peak memory of one forward and backward pass over `micro_batch` sequences."""
    c, t = config, config.context_window
    per_token = c.n_layer * (20 * c.n_embd + 2 * c.n_head * t) + 3 * c.vocab_size
    return FLOAT_BYTES * (4 * c.parameters() + micro_batch * t * per_token)


def batch_bytes(config: ModelConfig, sequences: int) -> int:
    """A step's batch as token ids, drawn whole before its micro-batches: inputs and
    targets, int64."""
    return 2 * 8 * sequences * (config.context_window + 1)


def decoding_bytes(config: ModelConfig, rows: int, element_bytes: int = FLOAT_BYTES) -> int:
    """The memory of decoding `rows` sequences at once, beyond the weights."""
    c = config
    cache = 2 * c.n_layer * c.context_window * c.n_embd * element_bytes
    return rows * (cache + 8 * c.context_window + 4 * FLOAT_BYTES * c.vocab_size)


def check_fits(needed: int, device: torch.device, what: str, setting: str | None) -> None:
    """A SettingError naming `setting` (its message says `what` needs the memory) where
    `needed` bytes are more than `device` can give."""
    available = device_memory_bytes(device)
    if available is None or needed <= USABLE_SHARE * available:
        return
    raise SettingError(
        f"{what} would need about {needed / 2**30:,.1f} GB of memory, more than the "
        f"{available / 2**30:,.1f} GB of this {'GPU' if device.type == 'cuda' else 'machine'}; "
        "use a smaller {name}",
        setting,
    )
