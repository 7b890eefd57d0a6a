"""From text to training batches: the tokenizer, the token file, the held-out split, and
the random windows each step trains on (split over processes and micro-batches).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from textgen import modeldir
from textgen.config import TrainConfig, default_vocab_size
from textgen.corpus import Corpus, TokenFile, cached_encoding, cached_tokens
from textgen.errors import TextgenError
from textgen.events import Callback, Notice, Working
from textgen.tokenizer import Tokenizer

# The held-out share of the corpus is capped: the final validation pass reads all of it, and
# past a quarter-million tokens more text changes the figure in its third decimal only.
MAX_VAL_TOKENS = 2**18

# BPE-dropout keeps at most this many segmentations of the training text, and at most this
# many tokens of them all together (32 MB as uint16): a corpus of a few MB gets fewer
# copies, and one past ~16M tokens none (a run reads such a corpus only a few times).
MAX_SEGMENTATIONS = 16
SEGMENTATION_TOKENS = 2**24


class Batches:
    """Random windows of the training tokens, drawn with a seeded generator (so a resumed
    run draws the same batches it would have drawn).

    Every process draws the same starts for the whole batch and reads its own share of
    them, so a batch is the same whatever the number of processes and micro-batches."""

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int) -> None:
        self.tokens, self.context, self.batch_size = tokens, context, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> torch.Tensor:
        """The start positions of the next batch's windows, (batch_size,)."""
        high = len(self.tokens) - self.context - 1
        return torch.randint(0, high + 1, (self.batch_size,), generator=self.generator)

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


def prepare_tokenizer(
    folder: Path, corpus: Corpus, vocab_size: int | None, retrain: bool, report: Callback
) -> Tokenizer:
    """Use the folder's tokenizer if it has one (unless retraining), else train one."""
    if (folder / modeldir.TOKENIZER).exists() and not retrain:
        tokenizer = modeldir.load_tokenizer(folder)
        if vocab_size is not None and vocab_size != tokenizer.vocab_size:
            report(
                Notice(
                    f"keeping the folder's tokenizer ({tokenizer.vocab_size} tokens); "
                    f"--vocab-size {vocab_size} is ignored",
                    warning=True,
                )
            )
        else:
            report(Notice(f"using the folder's tokenizer ({tokenizer.vocab_size} tokens)"))
        return tokenizer
    if vocab_size is None:
        vocab_size = default_vocab_size(corpus.total_bytes)
    return Tokenizer.train_on(corpus, vocab_size, report)


def encode(corpus: Corpus, tokenizer: Tokenizer, callback: Callback) -> TokenFile:
    """The corpus as token ids, from the cache or encoded now (with progress)."""
    started = time.perf_counter()
    token_file, cached = cached_encoding(
        corpus,
        tokenizer,
        lambda done: callback(Working("encoding the corpus", done, corpus.total_bytes)),
    )
    how = "found in the cache" if cached else f"in {time.perf_counter() - started:.1f}s"
    callback(
        Notice(
            f"encoded {corpus.description}: {token_file.n_tokens:,} tokens "
            f"({corpus.total_bytes / max(token_file.n_tokens, 1):.2f} bytes/token) {how}"
        )
    )
    for warning in dict.fromkeys(corpus.warnings):  # unique, in order
        callback(Notice(warning, warning=True))
    return token_file


def split(token_file: TokenFile, config: TrainConfig, context: int) -> tuple[np.ndarray, ...]:
    """The (train, validation) split of the token file: the last part is held out."""
    tokens = token_file.array()
    n_val = min(MAX_VAL_TOKENS, max(2, int(len(tokens) * config.val_fraction)))
    train_tokens, val_tokens = tokens[:-n_val], tokens[-n_val:]
    if len(train_tokens) < context + 1:
        raise TextgenError(
            f"the corpus is too small: {max(len(train_tokens), 0)} training tokens, but one "
            f"context window needs {context + 1}; add text or lower --context"
        )
    return train_tokens, val_tokens


def segmentations(
    token_file: TokenFile,
    train_tokens: np.ndarray,
    tokenizer: Tokenizer,
    config: TrainConfig,
    callback: Callback,
) -> TokenFile | None:
    """The training tokens followed by other segmentations of the same text (BPE-dropout),
    from the cache or made now; None without BPE-dropout or when the corpus is too large
    for a second copy.

    A small corpus is read many times over in a run: each copy, segmented anew, spells
    the same words with other tokens, so the model learns how tokens compose instead of
    memorising one token sequence. The dropout's randomness is the tokenizer's own (not
    seeded); the cache keeps a run's segmentations, so a resume or a rerun with the same
    seed trains on the same ones."""
    if config.bpe_dropout == 0:
        return None
    copies = min(MAX_SEGMENTATIONS, SEGMENTATION_TOKENS // max(len(train_tokens), 1))
    if copies < 2:
        callback(
            Notice(
                f"BPE-dropout is off: {len(train_tokens):,} training tokens leave no room for "
                f"a second segmentation (at most {SEGMENTATION_TOKENS:,} tokens in all)"
            )
        )
        return None
    recipe = f"{token_file.path.stem} {len(train_tokens)} {config.bpe_dropout} {copies}"
    key = hashlib.sha256(f"{recipe} {config.seed}".encode()).hexdigest()[:32]
    started = time.perf_counter()
    stream, cached = cached_tokens(
        key,
        np.dtype(token_file.dtype),
        lambda path: _write_segmentations(
            path, train_tokens, tokenizer, config.bpe_dropout, copies
        ),
        f"{copies} segmentations (BPE-dropout {config.bpe_dropout:g})",
    )
    how = "found in the cache" if cached else f"in {time.perf_counter() - started:.1f}s"
    callback(
        Notice(
            f"BPE-dropout {config.bpe_dropout:g}: the training text in {copies} "
            f"segmentations, {stream.n_tokens:,} tokens, {how}"
        )
    )
    return stream


def _write_segmentations(
    path: Path, tokens: np.ndarray, tokenizer: Tokenizer, dropout: float, copies: int
) -> None:
    """`tokens` as they are, then copies - 1 new segmentations of their documents."""
    eot = np.asarray([tokenizer.eot_id], dtype=tokens.dtype)
    starts = np.flatnonzero(tokens == tokenizer.eot_id).tolist()  # each document's first
    bounds = zip([0, *starts], [*starts, len(tokens)], strict=True)
    # the end-of-text token decodes to nothing
    texts = [tokenizer.decode(tokens[a:b].tolist()) for a, b in bounds if b > a]
    noisy = tokenizer.with_bpe_dropout(dropout)
    with open(path, "wb") as out:
        np.asarray(tokens).tofile(out)
        for _ in range(copies - 1):
            for ids in noisy.encode_batch(texts, clean=False):  # decoded from UTF-8
                eot.tofile(out)
                np.asarray(ids, dtype=tokens.dtype).tofile(out)


def micro_batches(config: TrainConfig, processes: int) -> tuple[int, int]:
    """(sequences per forward pass, forward passes per step) in each process."""
    per_process, rest = divmod(config.batch_size, processes)
    if rest:
        raise TextgenError(
            f"--batch-size {config.batch_size} does not split evenly over {processes} "
            f"processes; use a multiple of {processes}"
        )
    micro = config.micro_batch_size or per_process
    if per_process % micro:
        raise TextgenError(
            f"--micro-batch-size {micro} does not divide the {per_process} sequences each "
            f"process takes per step (--batch-size {config.batch_size} over {processes} "
            "processes); use a divisor of it"
        )
    return micro, per_process // micro
