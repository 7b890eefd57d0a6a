"""The recipe: what textgen chooses for a run when the user does not.

- the model's shape: a preset (`--size small`), or one dial, the depth (d layers, 32·d
  wide, heads of 32), set by hand (`--layers`) or from the budget and the corpus
  (`--size auto`, `textgen.training.sizing`);
- what depends on the corpus's size: the vocabulary and how much of it is held out for
  validation;
- what depends on how many times the run reads its text (the budget over the corpus):
  dropout, BPE-dropout and the embedding's weight decay.

Every rule here was measured with `benchmarks/train_quality.py` or the lab's fixed-compute
runs (`benchmarks/lab.py`, benchmarks/notebook); the figures are in docs/recipe.md.
Imports no torch, so the CLI can check a shape instantly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from textgen.errors import SettingError
from textgen.settings import MIN_VOCAB_SIZE, ModelShape, TrainConfig

# Each preset is (layers, width, heads); defaults suit a laptop CPU.
SIZE_PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 64, 2),  # ~0.1 M non-embedding parameters: seconds per epoch, for tests
    "small": (4, 128, 4),  # ~0.8 M: a few minutes on 2 CPU cores already writes words
    "medium": (6, 256, 4),  # ~4.7 M: tens of minutes on CPU, or a GPU
    "large": (8, 512, 8),  # ~25 M: wants a GPU
}
DIAL_HEAD_DIM = 32  # the dial widens by adding heads of this size
HAND_DEPTH = 4  # the depth on the dial when only --width or --heads is given


def depth_shape(depth: int) -> ModelShape:
    """The size dial: `depth` layers, 32 x depth wide, in heads of 32. Depth 2 is the
    `tiny` preset's shape class, depth 4 the `small` preset."""
    return ModelShape(n_layer=depth, n_embd=DIAL_HEAD_DIM * depth, n_head=depth)


def model_shape(
    size: str = "auto",
    layers: int | None = None,
    width: int | None = None,
    heads: int | None = None,
) -> ModelShape:
    """The shape asked for: none when it is left to `--size auto` (chosen at training
    time), else n_layer, n_embd and n_head: a preset's, or the dial's at depth `layers`,
    with any of the three given by hand."""
    if size != "auto" and size not in SIZE_PRESETS:
        raise SettingError(f"{{name}}: choose auto or one of {', '.join(SIZE_PRESETS)}", "size")
    chosen = ModelShape(n_layer=layers, n_embd=width, n_head=heads)
    if size == "auto" and not chosen.given():
        return chosen
    if size == "auto":
        shape = depth_shape(layers if layers is not None else HAND_DEPTH)
    else:
        n_layer, n_embd, n_head = SIZE_PRESETS[size]
        shape = ModelShape(n_layer=n_layer, n_embd=n_embd, n_head=n_head)
    return shape.but(chosen)


@dataclass(frozen=True)
class Recipe:
    """A named starting point (`train --recipe NAME`): a shape, training settings and a
    vocabulary, each still overridden by its own option."""

    shape: ModelShape
    training: dict[str, Any]  # TrainConfig fields
    vocab_size: int | None  # None: sized to the corpus (`default_vocab_size`)
    summary: str


RECIPES = {
    "default": Recipe(ModelShape(), {}, None, "textgen's own (sized to the corpus and budget)"),
    # nanoGPT's CPU recipe (its README: train_shakespeare_char.py with --device=cpu,
    # block 64, batch 12, 4 layers, 4 heads, 128 wide, no dropout): GPT-2's architecture,
    # AdamW, and a tokenizer of bytes alone, which is nanoGPT's characters for ASCII text
    "classic": Recipe(
        ModelShape(
            n_layer=4,
            n_embd=128,
            n_head=4,
            context_window=64,
            dropout=0.0,
            position="learned",
            norm="layernorm",
            activation="gelu",
        ),
        {
            "optimizer": "adamw",
            "learning_rate": 1e-3,
            "batch_size": 12,
            "bpe_dropout": 0.0,
            "weight_decay": 0.1,
            "warmup_steps": 100,
        },  # fmt: skip
        MIN_VOCAB_SIZE,
        "nanoGPT's: GPT-2's architecture, 4×128, AdamW, bytes for characters",
    ),
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise SettingError(f"{{name}}: choose one of {', '.join(RECIPES)}", "recipe")
    return RECIPES[name]


def check_shape(shape: ModelShape) -> None:
    """Raise the SettingError a model of this shape would, before any work (the
    vocabulary and an auto-sized shape are not known yet: stand-ins are checked)."""
    depth_shape(HAND_DEPTH).but(shape).config(MIN_VOCAB_SIZE)


# -- what the corpus and the budget decide ---------------------------------------------------

# Regularisation follows from how many times a run reads its training text: its planned
# training tokens over the corpus's (`expected_epochs`), known before the first step. The
# lab's fixed-compute runs (benchmarks/notebook, sessions 2 and 3: six corpora at 1 and 5
# minutes) set both thresholds.
DROPOUT = 0.1  # residual and embedding dropout, for a run that reads its text many times
DROPOUT_EPOCHS = 10.0  # from this many epochs on: dropout
BPE_DROPOUT = 0.1  # each BPE merge skipped with this probability
BPE_DROPOUT_EPOCHS = 20.0  # from this many epochs on, each pass is segmented anew


def expected_epochs(planned_tokens: float, train_tokens: int) -> float:
    """How many times a run of `planned_tokens` training tokens reads a training text of
    `train_tokens` tokens."""
    return planned_tokens / max(train_tokens, 1)


def default_dropout(epochs: float) -> float:
    """Dropout for a run that reads its text `epochs` times: none until it has read it
    about ten times (before that it only slows learning), 0.1 after.

    Measured (benchmarks/notebook, 5 minutes): no dropout beat 0.1 by 2.8 % at 3.5 epochs
    (fortunes-de, 1.916 against 1.972 bits per byte) and by 1.5 % at 3.9 (fortunes-en),
    tied it at 9.8 (kjv-verse, 1.434 both), lost by 5 % at 15.5 (kjv-prose) and by 9 % at
    28 (builtin, 1.757 against 1.609); 0.1 beat 0.2, the earlier default, in seven of
    eight pairs."""
    return DROPOUT if epochs >= DROPOUT_EPOCHS else 0.0


def default_bpe_dropout(epochs: float) -> float:
    """BPE-dropout for a run that reads its text `epochs` times: each pass then sees the
    text segmented anew (`textgen.text.segmentations`), which pays only once the model
    would otherwise see the same segmentation many times over.

    Measured (benchmarks/notebook), with dropout 0.1 both ways: it cost 3-5 % at 3.6 and
    8.6 epochs (fortunes-de, kjv-verse), 1.7 % at 12 (builtin at 1 minute), 1.2 % at
    15.5 (kjv-prose), and gained 6 % at 28 (builtin at 5 minutes: 1.609 against 1.706);
    the threshold sits between the last two."""
    return BPE_DROPOUT if epochs >= BPE_DROPOUT_EPOCHS else 0.0


# Weight decay. Muon's, on the blocks' matrices, is a constant (TrainConfig's
# muon_weight_decay, 0.1: better than none at every epoch count measured); AdamW's, on the
# embedding (which is also the unembedding), grows with the epochs, as dropout does.
WEIGHT_DECAY = 0.1  # AdamW's, for a run that reads its text a few times
MANY_EPOCHS_WEIGHT_DECAY = 1.0
WEIGHT_DECAY_EPOCHS = 15.0  # from this many epochs on: the larger one


def default_weight_decay(epochs: float) -> float:
    """AdamW's weight decay (the embedding's) for a run that reads its text `epochs`
    times: the usual 0.1, and 1.0 (the data-limited optimum published for many-epoch
    runs) once it has read it about fifteen times.

    Measured (benchmarks/notebook, session 5, 5 minutes), 1.0 against 0.1 with Muon's
    weight decay on, as the rule runs: worse by 1.7 % at 3.8 epochs (fortunes-de), level
    at 10.3 (kjv-verse, 1.382 against 1.384), better by 1.2 % at 15.5 (kjv-prose) and
    1.3 % at 28 (builtin). Without Muon's decay the picture was the same: worse by 1.8 %
    and 0.5 % at 3.8 and 10.3, better by 0.6 % and 1.1 % (median of three seeds) at 15.5
    and 28."""
    return MANY_EPOCHS_WEIGHT_DECAY if epochs >= WEIGHT_DECAY_EPOCHS else WEIGHT_DECAY


def regularised(
    shape: ModelShape, config: TrainConfig, epochs: float
) -> tuple[ModelShape, TrainConfig]:
    """The settings left open (no dropout in `shape`, `bpe_dropout` or `weight_decay`
    None) chosen for a run that reads its text `epochs` times; what is given stays."""
    shape = ModelShape(dropout=default_dropout(epochs)).but(shape)
    if config.bpe_dropout is None:
        config = replace(config, bpe_dropout=default_bpe_dropout(epochs))
    if config.weight_decay is None:
        config = replace(config, weight_decay=default_weight_decay(epochs))
    return shape, config


def default_vocab_size(corpus_bytes: int) -> int:
    """A BPE vocabulary sized to the corpus: about one token type per 400 bytes of text,
    a power of two between 512 and 32768. Small corpora want small vocabularies: every
    extra token type is an extra row in the output layer, trained on fewer examples."""
    target = max(corpus_bytes / 400, 1)
    size = 2 ** int(math.floor(math.log2(target)))
    return int(min(max(size, 512), 32768))


# The validation split: a small share, enough for a steady figure, and no more.
VAL_SHARE = 0.01
MIN_VAL_TOKENS = 2048  # 16 windows of 128 tokens
MAX_VAL_TOKENS = 2**18  # past a quarter-million tokens the figure moves in its third decimal


def held_out_tokens(total_tokens: int, fraction: float | None = None) -> int:
    """How many of the corpus's last tokens are held out for validation: `fraction` of
    them when it is given (`--val-fraction`); by default 1 %, but at least 2,048 tokens
    (never more than a tenth of a small corpus); at most 262,144 either way.

    Every token held out is text the model never learns from, and on a small corpus,
    read many times over in a run, that text is missed: in the lab's fixed-compute runs
    (benchmarks/notebook) holding out 1 % instead of 10 % was better on all six corpora
    at 1 minute (0.2-3.5 %) and by 2.6 % on the built-in corpus at 5 minutes, while a
    few thousand tokens still give a validation figure steady enough to keep the best
    weights by. On a large corpus the cap makes the share irrelevant."""
    if fraction is not None:
        wanted = int(total_tokens * fraction)
    else:
        wanted = max(int(total_tokens * VAL_SHARE), min(MIN_VAL_TOKENS, total_tokens // 10))
    return min(MAX_VAL_TOKENS, max(2, wanted))


HELD_OUT_PIECES = 16  # a spread held-out set: this many pieces, evenly through the corpus


def held_out_pieces(total_tokens: int, held_out: int, context: int) -> list[tuple[int, int]]:
    """Where a spread held-out set lies: (start, end) token ranges, one at the end of each
    of up to 16 equal stretches of the corpus (the last piece ends the corpus), together
    `held_out` tokens: fewer pieces where that keeps each longer than a context window
    (one piece, the tail, when `held_out` is shorter than that)."""
    count = max(1, min(HELD_OUT_PIECES, held_out // (context + 1)))
    size, extra = divmod(held_out, count)
    pieces = []
    for i in range(count):
        length = size + (i < extra)
        end = (i + 1) * total_tokens // count
        pieces.append((end - length, end))
    return pieces
