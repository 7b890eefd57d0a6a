"""BPE-dropout: the training text segmented anew, several times over.

A small corpus is read many times in a run. Each copy here spells the same documents
with other tokens (every BPE merge skipped with probability p, Provilkov et al.), so the
model learns how tokens compose instead of memorising one token sequence. Validation and
generation keep the tokenizer's usual segmentation.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from textgen.records import Callback, Notice
from textgen.text.tokenizer import Tokenizer
from textgen.text.tokens import TokenFile, cached_tokens

# At most this many segmentations of the training text, and at most this many tokens of
# them all together (32 MB as uint16): a corpus of a few MB gets fewer copies, and one
# past ~16M tokens none (a run reads such a corpus only a few times).
MAX_SEGMENTATIONS = 16
SEGMENTATION_TOKENS = 2**24


def segmentations(
    token_file: TokenFile,
    train_tokens: np.ndarray,
    tokenizer: Tokenizer,
    dropout: float,
    seed: int,
    callback: Callback,
) -> TokenFile | None:
    """The training tokens followed by other segmentations of the same text, from the
    cache or made now; None without BPE-dropout or when the corpus is too large for a
    second copy.

    The dropout's randomness is the tokenizer's own (not seeded); the cache keeps a run's
    segmentations under its seed, so a resume or a rerun with the same seed trains on the
    same ones."""
    if dropout == 0:
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
    recipe = f"{token_file.path.stem} {len(train_tokens)} {dropout} {copies}"
    key = hashlib.sha256(f"{recipe} {seed}".encode()).hexdigest()[:32]
    started = time.perf_counter()
    stream, cached = cached_tokens(
        key,
        np.dtype(token_file.dtype),
        lambda path: _write(path, train_tokens, tokenizer, dropout, copies),
        f"{copies} segmentations (BPE-dropout {dropout:g})",
    )
    how = "found in the cache" if cached else f"in {time.perf_counter() - started:.1f}s"
    callback(
        Notice(
            f"BPE-dropout {dropout:g}: the training text in {copies} "
            f"segmentations, {stream.n_tokens:,} tokens, {how}"
        )
    )
    return stream


def _write(path: Path, tokens: np.ndarray, tokenizer: Tokenizer, dropout: float, copies: int):
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
