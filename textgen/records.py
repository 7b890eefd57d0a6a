"""Plain records that cross from the library to the screen: what a training run reports as
it goes and returns, what an evaluation measures, what each generated token was.

Plain data only (numbers, strings, lists): `textgen.ui` draws these without importing
torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- measuring ----------------------------------------------------------------------------------


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy per predicted token, in nats
    bits_per_byte: float
    tokens: int  # predicted tokens
    bytes: int  # UTF-8 bytes those tokens stand for

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))


# -- training -----------------------------------------------------------------------------------


@dataclass
class Notice:
    message: str
    warning: bool = False


@dataclass
class Working:
    """Progress of a long step before training: training the tokenizer, encoding."""

    task: str
    done: int  # corpus bytes handled
    total: int


@dataclass
class Progress:
    """How far a training run is: steps, tokens, time and the smoothed training loss."""

    step: int = 0
    tokens_seen: int = 0
    elapsed: float = 0.0  # seconds of training, over every resumed part of the run
    smoothed_loss: float = math.nan

    def add_loss(self, value: float) -> None:
        previous = self.smoothed_loss
        self.smoothed_loss = value if math.isnan(previous) else 0.9 * previous + 0.1 * value

    def summary(self) -> dict[str, Any]:
        """How far the run is, as config.json's "training" section records it."""
        return {
            "steps": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed_seconds": round(self.elapsed, 2),
            "train_loss": self.smoothed_loss,
        }


@dataclass
class RunStarted:
    parameters: int
    train_tokens: int
    val_tokens: int
    device: str
    max_steps: int | None
    time_budget: float | None
    start_step: int
    processes: int = 1
    accumulation: int = 1  # micro-batches per step and process


@dataclass
class StepReport:
    step: int
    loss: float  # smoothed training loss
    learning_rate: float
    tokens_seen: int
    tokens_per_second: float
    elapsed: float
    fraction_done: float
    flops_per_second: float = 0.0  # model FLOP/s achieved (all processes together)
    mfu: float | None = None  # share of the hardware's peak, where the peak is known


@dataclass
class EvalReport:
    step: int
    elapsed: float
    tokens_seen: int
    train_loss: float
    result: EvalResult
    final: bool
    kept: bool = False  # these weights were saved as the model (the best so far)


@dataclass
class SampleReport:
    """A short sample written by the model as it trains (`train --sample-every`): from
    the weights at `step`, the same prompt and seed each time, so successive samples
    differ only by what the model has learned."""

    step: int
    tokens_seen: int
    val_bpb: float | None  # the latest validation pass's, if there was one
    prompt: str
    pieces: list[tuple[str, float]]  # the generated text, piece by piece, with each
    # piece's probability under the model

    @property
    def text(self) -> str:
        return "".join(piece for piece, _ in self.pieces)


@dataclass
class TrainResult:
    folder: Path
    steps: int
    tokens_seen: int
    elapsed: float
    parameters: int
    final_eval: EvalResult | None  # of the weights at the end of training
    stopped_by: int | None  # the signal that stopped the run early (Ctrl-C: SIGINT), if any
    kept_step: int  # the step whose weights model.safetensors holds
    kept_eval: EvalResult | None  # and their evaluation
    first_word: str | None = None  # of the corpus: a prompt to try

    @property
    def interrupted(self) -> bool:
        return self.stopped_by is not None


Callback = Callable[[Any], None]


@dataclass(frozen=True)
class World:
    """This process's place among the processes torchrun started (one process without)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> World:
        """What torchrun put in the environment: RANK, WORLD_SIZE, LOCAL_RANK."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        rank = int(os.environ.get("RANK", "0"))
        return cls(rank, size, int(os.environ.get("LOCAL_RANK", rank)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


# -- generating ---------------------------------------------------------------------------------


@dataclass
class Candidate:
    token_id: int
    logprob: float  # under the model itself (temperature 1)
    prob: float  # in the distribution sampled from (after temperature and filters)


@dataclass
class TokenRecord:
    """One generated token of one sample: what it added to the text and how likely it was."""

    sample: int
    token_id: int | None  # None for the held-back text released when a sample ends
    text: str  # the text it completed ('' while a multi-byte character is incomplete)
    prob: float  # probability under the distribution it was sampled from
    # log-probability under the model itself (temperature 1); None for the first token of
    # a text that is scored, not generated (nothing precedes it)
    logprob: float | None
    candidates: list[Candidate] = field(default_factory=list)  # the model's most likely first


@dataclass
class Sample:
    """One sample of a completion, as it grows: its text, its tokens, and why it ended."""

    text: str = ""
    tokens: list[TokenRecord] = field(default_factory=list)  # with the released tail
    generated_tokens: int = 0  # tokens the model produced (the end-of-text one included)
    finish_reason: str = "length"  # "length", "stop" (a stop string) or "end_of_text"


@dataclass
class Generation:
    """A finished completion, as plain data: the prompt as the model read it, the
    settings (with the seed actually used) and the samples."""

    prompt: str
    prompt_tokens: int | None  # None: a prompt so long only its end was tokenized
    dropped_tokens: int | None  # prompt tokens left out to fit the context window
    settings: Any  # textgen.settings.SampleConfig
    samples: list[Sample]

    @property
    def seed(self) -> int:
        return self.settings.seed


# -- looking inside -----------------------------------------------------------------------------


@dataclass
class Lens:
    """The logit lens over a text: at each depth of the residual stream (after the
    embedding, after each block) and each position, the tokens the model would predict if
    its final norm and unembedding were applied there. The last depth is the model's own
    prediction."""

    token_ids: list[int]  # the positions read, in order (the end of the text)
    first_position: int  # the index of token_ids[0] in the text as the model read it
    dropped_tokens: int | None  # the text's tokens left out for the context window (None: many)
    depths: list[str]  # "embedding", "layer 0", ... (the last: the model's output)
    top: list[list[list[Candidate]]]  # [depth][position]: the most likely first
    next_prob: list[list[float | None]]  # [depth][position]: the text's real next token's


@dataclass
class Neighbour:
    token_id: int
    similarity: float  # cosine similarity of embedding vectors, -1..1


@dataclass
class Term:
    """One word of a `neighbors` query, with its sign in an analogy."""

    sign: int  # +1 or -1
    text: str
    token_ids: list[int]  # as the tokenizer reads it (a mean vector when several)


@dataclass
class Neighbours:
    terms: list[Term]
    neighbours: list[Neighbour]  # most similar first, the query's own tokens left out


@dataclass
class HeadStats:
    """What one attention head does over a sample of text, as averages over its queries."""

    layer: int
    head: int
    entropy_bits: float  # of each query's attention, in bits
    spread: float  # entropy over its maximum (uniform over the visible keys = 1)
    previous: float  # attention on the token just before
    first: float  # attention on the window's first position
    same_token: float  # attention on earlier occurrences of the query's own token
    induction: float  # attention on the tokens that followed those occurrences
    label: str | None  # "previous-token", "first-token", ... where one clearly fits
