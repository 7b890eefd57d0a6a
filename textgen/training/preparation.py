"""Before the first step: the tokenizer (the folder's own, or one trained on the corpus)
and the corpus encoded to token ids, each reported to the run's callback as it goes."""

from __future__ import annotations

import time
from pathlib import Path

from textgen.errors import SettingError, TextgenError
from textgen.files import FolderLock
from textgen.records import Callback, Notice, Working
from textgen.store import folder as model_folder
from textgen.store.writer import FolderContents
from textgen.text.corpus import Corpus
from textgen.text.tokenizer import Tokenizer
from textgen.text.tokens import TokenFile, cached_encoding
from textgen.training.recipe import default_vocab_size


def choose_tokenizer(
    folder: Path,
    contents: FolderContents,
    corpus: Corpus,
    vocab_size: int | None,
    overwrite: bool,
    keep: bool,
    report: Callback,
) -> Tokenizer:
    """The tokenizer of a new model: the folder's own when it was trained on this very
    corpus (`textgen tokenizer train`), or when asked to keep it (`keep`); else a new one.
    A folder's tokenizer trained on other text is never taken silently."""
    if keep:
        if not contents.has_tokenizer:
            raise SettingError(f"--keep-tokenizer: {folder} holds no tokenizer to keep")
        tokenizer = model_folder.load_tokenizer(folder)
        report(Notice(f"keeping the folder's tokenizer ({tokenizer.vocab_size} tokens)"))
    elif contents.has_tokenizer and not (overwrite or contents.has_model):
        record = model_folder.tokenizer_record(folder)
        if record.get("corpus_fingerprint") != corpus.fingerprint:
            what = (
                f"trained on {record['corpus']}, not on this corpus"
                if "corpus" in record
                else "whose corpus is not recorded"
            )
            raise TextgenError(
                f"{folder} holds a tokenizer {what}; add --keep-tokenizer to train with it "
                "anyway, or --overwrite to train a new one"
            )
        tokenizer = model_folder.load_tokenizer(folder)
        size = tokenizer.vocab_size
        report(Notice(f"using the folder's tokenizer, trained on this corpus ({size} tokens)"))
    else:
        return Tokenizer.train_on(
            corpus, vocab_size or default_vocab_size(corpus.total_bytes), report
        )
    if vocab_size is not None and vocab_size != tokenizer.vocab_size:
        report(Notice(f"--vocab-size {vocab_size} is ignored: the tokenizer is kept", True))
    return tokenizer


def train_tokenizer(
    folder: Path,
    corpus: Corpus,
    vocab_size: int | None = None,
    overwrite: bool = False,
    report: Callback = lambda event: None,
) -> Tokenizer:
    """`textgen tokenizer train`: a tokenizer alone, saved into `folder` with a record of
    its corpus, for a later `textgen train` on that corpus to use."""
    with FolderLock(folder):
        contents = FolderContents.of(folder)
        if contents.has_model:  # its weights would be left without their tokenizer
            raise TextgenError(
                f"{folder} holds a trained model, whose tokenizer is replaced only with the "
                "model (textgen train --overwrite); train this tokenizer into another --model"
            )
        contents.check(folder, overwrite)
        target = folder / model_folder.TOKENIZER
        if contents.has_tokenizer and not overwrite:
            raise TextgenError(f"{target} already exists; add --overwrite to replace it")
        report(Notice(f"corpus: {corpus.description}"))
        size = vocab_size or default_vocab_size(corpus.total_bytes)
        tokenizer = Tokenizer.train_on(corpus, size, report)
        corpus.report_warnings(report)
        model_folder.save_tokenizer_only(folder, tokenizer, corpus.description, corpus.fingerprint)
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
