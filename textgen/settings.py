"""Settings as plain dataclasses, one per concern, validated on construction: the model's
architecture, how to train it, how to sample from it.

This module imports no torch, so the CLI can validate options (and answer `--help`)
instantly. Every check raises `SettingError` with a message that names the option.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from textgen.errors import SettingError

MAX_TEMPERATURE = 2.0  # above this, sampling approaches uniform noise over the vocabulary
DTYPES = ("auto", "float32", "bfloat16", "float16")  # precisions a model can run in
MIN_VOCAB_SIZE = 257  # 256 byte tokens + the end-of-text token
MAX_VOCAB_SIZE = 2**18  # 262,144: beyond the largest vocabularies in use
MAX_SEED = 2**63 - 1  # what a torch generator takes
MAX_STOPS = 16  # stop strings a sample takes (the OpenAI API allows 4)
MAX_STOP_CHARS = 1000  # a stop string is a marker, not a document
# Bounds on a model's shape: far beyond what textgen trains, and low enough that checking a
# hand-edited config.json never means allocating terabytes.
MAX_CONTEXT = 2**20
MAX_WIDTH = 2**16
MAX_LAYERS = 1024
MAX_MLP_RATIO = 64


def _require(condition: bool, message: str, setting: str | None = None) -> None:
    if not condition:
        raise SettingError(message, setting)


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)


def _kinds(annotation: Any) -> tuple[type, ...]:
    """The types a field's annotation allows: `int | None` -> (int, NoneType)."""
    return typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)


def _fits(value: Any, kinds: tuple[type, ...]) -> bool:
    """Whether a JSON value is of one of `kinds`; an integer is a float too, a bool never
    a number."""
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return any(isinstance(value, kind) for kind in kinds if kind in (int, float, str, type(None)))


def _from_dict(cls: type, data: dict[str, Any], complete: bool = False) -> Any:
    """Build a config from JSON data, checking field names and types before anything runs.
    `complete`: every field must be there (a saved model's file), none left to a default."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(data) - set(known))
    _require(not unknown, f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    for name, value in data.items():
        kinds = _kinds(hints[name])
        names = " or ".join("None" if kind is type(None) else kind.__name__ for kind in kinds)
        _require(_fits(value, kinds), f"{name} should be {names}, not {value!r}")
    missing = [name for name in known if name not in data] if complete else []
    _require(not missing, f"missing {cls.__name__} field(s): {', '.join(missing)}")
    return cls(**data)


@dataclass
class ModelConfig:
    """The architecture: enough to rebuild the model exactly from `config.json`."""

    vocab_size: int
    context_window: int = 128  # tokens the model sees at once; attention cost grows with its square
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    mlp_ratio: int = 4  # hidden width of the MLP relative to n_embd
    # Swappable pieces, so recipes can be compared side by side (see benchmarks/).
    position: str = "rope"  # "rope" (rotary, relative) or "learned" (absolute, GPT-2 style)
    norm: str = "rmsnorm"  # "rmsnorm" or "layernorm"
    activation: str = "relu2"  # "relu2" (squared ReLU) or "gelu"
    tie_embeddings: bool = True  # share the embedding matrix with the unembedding
    dropout: float = 0.0  # during training; against memorising a small corpus over many epochs
    qk_norm: bool = False  # normalise queries and keys: attention logits stay bounded
    zero_init_proj: bool = False  # each block starts as the identity (outputs zeroed)
    logit_softcap: float | None = None  # logits -> cap * tanh(logits / cap)
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        _require(
            2 <= self.vocab_size <= MAX_VOCAB_SIZE, f"vocab_size must be 2 to {MAX_VOCAB_SIZE}"
        )
        _require(
            2 <= self.context_window <= MAX_CONTEXT,
            f"context window must be 2 to {MAX_CONTEXT:,} tokens",
        )
        _require(self.n_layer >= 1, "the model needs at least 1 layer")
        _require(self.n_layer <= MAX_LAYERS, f"the model can have at most {MAX_LAYERS} layers")
        _require(self.n_head >= 1, "the model needs at least 1 attention head")
        _require(1 <= self.n_embd <= MAX_WIDTH, f"width must be 1 to {MAX_WIDTH:,}")
        _require(
            self.n_embd % self.n_head == 0,
            f"width {self.n_embd} is not divisible by {self.n_head} heads",
        )
        _require(1 <= self.mlp_ratio <= MAX_MLP_RATIO, f"mlp_ratio must be 1 to {MAX_MLP_RATIO}")
        _require(_finite(self.dropout) and 0 <= self.dropout < 1, "dropout must be within [0, 1)")
        _require(
            self.logit_softcap is None or (_finite(self.logit_softcap) and self.logit_softcap > 0),
            "logit_softcap must be a positive number",
        )
        _require(
            _finite(self.rope_base) and self.rope_base > 1, "rope_base must be a number above 1"
        )
        _require(self.position in ("rope", "learned"), "position must be 'rope' or 'learned'")
        _require(self.norm in ("rmsnorm", "layernorm"), "norm must be 'rmsnorm' or 'layernorm'")
        _require(self.activation in ("gelu", "relu2"), "activation must be 'gelu' or 'relu2'")
        _require(
            self.position != "rope" or self.head_dim % 2 == 0,
            f"rotary positions need an even head size; width/heads = {self.head_dim}",
        )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """A saved model's architecture: every field given, each checked."""
        return _from_dict(cls, data, complete=True)

    def parameters(self) -> int:
        """How many parameters a model of this shape has (norm gains included), without
        building it."""
        width, hidden = self.n_embd, self.mlp_ratio * self.n_embd
        block = 4 * width * width + 2 * width * hidden + 2 * width  # attention, MLP, 2 norms
        embeddings = self.vocab_size * width * (1 if self.tie_embeddings else 2)
        positions = self.context_window * width if self.position == "learned" else 0
        return embeddings + positions + self.n_layer * block + width  # + the final norm


@dataclass(frozen=True)
class ModelShape:
    """An architecture as far as it is given: ModelConfig's fields but the vocabulary
    (which is the tokenizer's), each None where it is left to the recipe, the budget or
    the model fine-tuned from (`textgen.training.recipe`). Merged into a ModelConfig in
    one place, `config`."""

    context_window: int | None = None
    n_layer: int | None = None  # None: sized for the budget and the corpus (--size auto)
    n_embd: int | None = None
    n_head: int | None = None
    mlp_ratio: int | None = None
    position: str | None = None
    norm: str | None = None
    activation: str | None = None
    tie_embeddings: bool | None = None
    dropout: float | None = None  # None: from the epochs the run reads (recipe.default_dropout)
    qk_norm: bool | None = None
    zero_init_proj: bool | None = None
    logit_softcap: float | None = None  # None is also ModelConfig's own: no cap
    rope_base: float | None = None

    @classmethod
    def of(cls, config: ModelConfig) -> ModelShape:
        """A whole model's shape (every field given)."""
        return cls(**{k: v for k, v in config.to_dict().items() if k != "vocab_size"})

    def given(self) -> dict[str, Any]:
        """The fields set, by name."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value is not None}

    def but(self, other: ModelShape) -> ModelShape:
        """This shape with what `other` gives instead."""
        return replace(self, **other.given())

    @property
    def context(self) -> int:
        """The context window it will have."""
        return self.context_window or ModelConfig.context_window

    def config(self, vocab_size: int) -> ModelConfig:
        """The model of this shape for a vocabulary, ModelConfig's defaults elsewhere."""
        return ModelConfig(vocab_size=vocab_size, **self.given())


@dataclass
class TrainConfig:
    """How to train: budget, batches, optimizer and evaluation."""

    steps: int | None = None  # stop after this many optimizer steps ...
    time_budget: float | None = 300.0  # ... or after this many seconds, whichever comes first
    batch_size: int = 16  # sequences per step, over all processes (benchmarks/: small wins)
    micro_batch_size: int | None = None  # per forward pass and process; None: no accumulation
    learning_rate: float = 2e-3
    weight_decay: float | None = None  # AdamW's, on the embedding; None: from the epochs
    grad_clip: float = 1.0
    warmup_steps: int = 50
    cooldown_fraction: float = 0.4  # the last part of the run decays the learning rate to zero
    cpu_bf16: bool = False  # bf16 autocast for training on CPU
    bpe_dropout: float | None = None  # stochastic segmentations; None: from the epochs
    compile: bool | None = None  # torch.compile the model for training; None: on CUDA only
    optimizer: str = "muon"  # "muon" for the blocks' matrices (AdamW for the rest), or "adamw"
    muon_learning_rate: float = 0.02
    # Muon's own decoupled weight decay for the blocks' matrices: each step shrinks them
    # by muon_learning_rate x this, scheduled as the learning rate is (textgen.training.recipe)
    muon_weight_decay: float = 0.1
    # the final weights averaged over about the last part of the run (a power-function
    # EMA of this relative width, textgen.training.averaging); 0: the last step's weights
    average_width: float = 0.0
    eval_interval: int = 100  # steps between validation passes (and checkpoints, by default)
    save_every_steps: int | None = None  # checkpoint this often instead ...
    save_every_seconds: float | None = None  # ... or this often in wall-clock time
    eval_tokens: int = 32768  # tokens per periodic validation pass; the final one reads all
    keep_best: bool = True  # model.safetensors holds the weights with the best validation loss
    val_fraction: float | None = None  # share held out; None: recipe.held_out_tokens decides
    # where the held-out tokens come from: "tail", the corpus's end, or "spread", pieces
    # taken at even intervals through it (textgen.training.recipe.held_out_pieces)
    held_out: str = "tail"
    # how windows are drawn: "epochs", tiling the text from a random offset, shuffled,
    # every token once an epoch; or "random", anywhere, with replacement (as nanoGPT
    # draws them). Epochs were better on every corpus measured (docs/recipe.md)
    sampling: str = "epochs"
    seed: int = 1337
    device: str = "auto"
    # a short sample from the model as it trains: every `sample_every` steps (None: at
    # each validation pass; 0: never), `sample_tokens` long, after `sample_prompt` (None:
    # the corpus's first word)
    sample_every: int | None = None
    sample_tokens: int = 48
    sample_prompt: str | None = None

    def __post_init__(self) -> None:
        _require(
            self.steps is not None or self.time_budget is not None,
            "give a number of steps (--steps) or a time budget (--time)",
        )
        _require(self.steps is None or self.steps >= 1, "{name} must be at least 1", "steps")
        _require(
            self.time_budget is None or (_finite(self.time_budget) and self.time_budget > 0),
            "{name} must be a positive duration",
            "time_budget",
        )
        _require(self.batch_size >= 1, "{name} must be at least 1", "batch_size")
        _require(
            self.micro_batch_size is None or self.micro_batch_size >= 1,
            "{name} must be at least 1",
            "micro_batch_size",
        )
        _require(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            "{name} must be a positive number",
            "learning_rate",
        )
        _require(
            self.weight_decay is None or (_finite(self.weight_decay) and self.weight_decay >= 0),
            "{name} must be >= 0",
            "weight_decay",
        )
        _require(
            _finite(self.muon_weight_decay) and self.muon_weight_decay >= 0,
            "{name} must be >= 0",
            "muon_weight_decay",
        )
        _require(
            _finite(self.average_width) and 0 <= self.average_width < 0.28,
            "{name} must be 0 (off) or within (0, 0.28)",
            "average_width",
        )
        _require(self.warmup_steps >= 0, "warmup steps must be >= 0")
        _require(
            _finite(self.cooldown_fraction) and 0 <= self.cooldown_fraction <= 1,
            "cooldown fraction must be within [0, 1]",
        )
        _require(
            self.bpe_dropout is None or (_finite(self.bpe_dropout) and 0 <= self.bpe_dropout < 1),
            "{name} must be within [0, 1)",
            "bpe_dropout",
        )
        _require(0 <= self.seed <= MAX_SEED, f"{{name}} must be 0 to {MAX_SEED}", "seed")
        _require(self.optimizer in ("adamw", "muon"), "optimizer must be 'adamw' or 'muon'")
        _require(self.eval_interval >= 1, "{name} must be at least 1", "eval_interval")
        _require(
            self.save_every_steps is None or self.save_every_steps >= 1,
            "{name} must be at least 1 step",
            "save_every_steps",
        )
        _require(
            self.save_every_seconds is None
            or (_finite(self.save_every_seconds) and self.save_every_seconds > 0),
            "{name} must be a positive duration",
            "save_every_seconds",
        )
        _require(self.eval_tokens >= 1, "eval tokens must be at least 1")
        _require(
            self.sample_every is None or self.sample_every >= 0,
            "{name} must be 0 (no samples) or more",
            "sample_every",
        )
        _require(
            0 <= self.sample_tokens <= 4096,
            "{name} must be 0 (no samples) to 4096",
            "sample_tokens",
        )
        _require(
            self.val_fraction is None
            or (_finite(self.val_fraction) and 0 < self.val_fraction < 0.5),
            "{name} must be within (0, 0.5)",
            "val_fraction",
        )
        _require(self.held_out in ("tail", "spread"), "{name}: tail or spread", "held_out")
        _require(self.sampling in ("random", "epochs"), "{name}: random or epochs", "sampling")
        _require(
            self.device in ("auto", "cpu", "cuda", "mps"),
            "{name}: auto, cpu, cuda or mps",
            "device",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class SampleConfig:
    """How to turn logits into tokens. See `textgen.decode.sampling`."""

    temperature: float = 0.8  # 0 is greedy; the cap is MAX_TEMPERATURE
    top_k: int | None = None  # keep only the k most likely tokens
    top_p: float | None = None  # keep the smallest set whose probability reaches p
    min_p: float | None = None  # drop tokens less likely than min_p x the top token
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the context
    max_new_tokens: int = 200
    seed: int | None = None  # same seed, same model, same prompt: same text
    # the text ends before the first of these strings to appear in it (the one whose end
    # comes first, the longest of those ending together): checked as it streams
    stop: tuple[str, ...] = ()
    num_samples: int = 1
    # (token id, bias) pairs added to the model's logits before anything else: -100 bans
    # a token, +100 all but forces it (OpenAI's logit_bias)
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        t = self.temperature
        _require(
            math.isfinite(t) and 0 <= t <= MAX_TEMPERATURE,
            f"{{name}} must be between 0 and {MAX_TEMPERATURE:g} (0 is greedy, "
            f"{MAX_TEMPERATURE:g} is the cap); got {t:g}",
            "temperature",
        )
        _require(self.top_k is None or self.top_k >= 1, "{name} must be at least 1", "top_k")
        _require(
            self.top_p is None or (math.isfinite(self.top_p) and 0 < self.top_p <= 1),
            "{name} must be in (0, 1]",
            "top_p",
        )
        _require(
            self.min_p is None or (math.isfinite(self.min_p) and 0 <= self.min_p <= 1),
            "{name} must be in [0, 1]",
            "min_p",
        )
        _require(
            math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0,
            "{name} must be a positive number",
            "repetition_penalty",
        )
        _require(self.max_new_tokens >= 0, "{name} must be >= 0", "max_new_tokens")
        _require(self.num_samples >= 1, "{name} must be at least 1", "num_samples")
        _require(all(self.stop), "{name}: a stop string cannot be empty", "stop")
        _require(
            len(self.stop) <= MAX_STOPS and all(len(s) <= MAX_STOP_CHARS for s in self.stop),
            f"{{name}}: at most {MAX_STOPS} stop strings of up to {MAX_STOP_CHARS:,} "
            "characters each",
            "stop",
        )
        _require(
            all(
                isinstance(i, int)
                and 0 <= i < MAX_VOCAB_SIZE
                and math.isfinite(b)
                and abs(b) <= 100
                for i, b in self.logit_bias
            ),
            "{name}: token ids with biases from -100 to 100",
            "logit_bias",
        )
        _require(
            self.seed is None or 0 <= self.seed <= MAX_SEED,
            f"{{name}} must be 0 to {MAX_SEED}",
            "seed",
        )

    def distribution(self) -> SampleConfig:
        """These settings less those that never change how one step's logits become a
        token (length, seed, stop strings, count): requests whose distributions are equal
        can be sampled in one call. A field added later counts unless it is named here."""
        return replace(self, max_new_tokens=0, seed=None, stop=(), num_samples=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_vocab_size(size: int) -> int:
    _require(
        size >= MIN_VOCAB_SIZE,
        f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 bytes + end-of-text)",
    )
    _require(size <= MAX_VOCAB_SIZE, f"--vocab-size can be at most {MAX_VOCAB_SIZE:,}")
    return size
