"""Before the first step: the tokenizer (the folder's own, or one trained on the corpus)
and the corpus encoded to token ids, each reported to the run's callback as it goes."""

from __future__ import annotations

import time
from pathlib import Path

from textgen.errors import TextgenError
from textgen.model import folder as model_folder
from textgen.records import Callback, Notice, Working
from textgen.text.corpus import Corpus
from textgen.text.tokenizer import Tokenizer
from textgen.text.tokens import TokenFile, cached_encoding
from textgen.training.recipe import default_vocab_size


def prepare_tokenizer(
    folder: Path, corpus: Corpus, vocab_size: int | None, retrain: bool, report: Callback
) -> Tokenizer:
    """Use the folder's tokenizer if it has one (unless retraining), else train one."""
    if (folder / model_folder.TOKENIZER).exists() and not retrain:
        tokenizer = model_folder.load_tokenizer(folder)
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


def train_tokenizer(
    folder: Path,
    corpus: Corpus,
    vocab_size: int | None = None,
    overwrite: bool = False,
    report: Callback = lambda event: None,
) -> Tokenizer:
    """`textgen tokenizer train`: a tokenizer alone, saved into `folder` for a later
    `textgen train` to use."""
    target = folder / model_folder.TOKENIZER
    if target.exists() and not overwrite:
        raise TextgenError(f"{target} already exists; add --overwrite to replace it")
    if model_folder.has_weights(folder):
        raise TextgenError(
            f"{folder} holds a trained model that needs its tokenizer; use another --model"
        )
    report(Notice(f"corpus: {corpus.description}"))
    size = vocab_size or default_vocab_size(corpus.total_bytes)
    tokenizer = Tokenizer.train_on(corpus, size, report)
    corpus.report_warnings(report)
    model_folder.save_tokenizer(folder, tokenizer)
    report(Notice(f"saved {target} ({tokenizer.vocab_size} tokens)"))
    return tokenizer


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
    corpus.report_warnings(callback)
    return token_file
