"""The corpus as token ids: a flat, memory-mapped file, encoded once and kept in a cache.

Encoding a large corpus takes minutes, so the token file is kept under the user's cache
folder, named by a hash of the corpus's content and of the tokenizer: a second run on the
same text with the same tokenizer (a resume, another model size, every process of a
torchrun) skips it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textgen.errors import TextgenError
from textgen.files import WriteError, atomic_write, write_json
from textgen.text.corpus import Corpus, Progress
from textgen.text.tokenizer import Tokenizer

CACHE_FORMAT = 1  # bump when the token file layout changes
CACHE_MAX_BYTES = 20 * 2**30  # oldest entries are removed beyond this


@dataclass
class TokenFile:
    """A flat file of token ids (uint16 or uint32), memory-mapped on read."""

    path: Path
    dtype: str
    n_tokens: int

    def array(self) -> np.ndarray:
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every token id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def encode_corpus(
    corpus: Corpus,
    tokenizer: Tokenizer,
    out_path: Path,
    progress: Progress = lambda done: None,
    batch_chunks: int | None = None,
) -> TokenFile:
    """Encode every document, each preceded by the end-of-text token, into `out_path`.

    Chunks are encoded in batches, which the tokenizer spreads over all cores (in Rust,
    without the GIL), and appended to the file, so memory stays bounded by a batch of
    chunks whatever the corpus size.
    """
    batch_chunks = batch_chunks or max(8, 2 * (os.cpu_count() or 1))
    dtype = token_dtype(tokenizer.vocab_size)
    eot = np.asarray([tokenizer.eot_id], dtype=dtype)
    n_tokens = done = 0
    with open(out_path, "wb") as out:

        def flush(batch: list[str]) -> int:
            nonlocal done
            written = 0
            for ids in tokenizer.encode_batch(batch, clean=False):  # decoded from UTF-8
                np.asarray(ids, dtype=dtype).tofile(out)
                written += len(ids)
            done += sum(len(t.encode("utf-8")) for t in batch)
            progress(done)
            batch.clear()
            return written

        pending: list[str] = []
        for doc in corpus.documents():
            # the end-of-text token goes before each document, so flush what precedes it
            n_tokens += flush(pending) if pending else 0
            eot.tofile(out)
            n_tokens += 1
            for chunk in doc:
                pending.append(chunk)
                if len(pending) >= batch_chunks:
                    n_tokens += flush(pending)
        n_tokens += flush(pending) if pending else 0
    return TokenFile(out_path, dtype.name, n_tokens)


# -- the cache ----------------------------------------------------------------------------------


def cache_folder() -> Path:
    """$TEXTGEN_CACHE, else $XDG_CACHE_HOME/textgen, else ~/.cache/textgen."""
    if os.environ.get("TEXTGEN_CACHE"):
        return Path(os.environ["TEXTGEN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "textgen"


def corpus_key(corpus: Corpus, tokenizer: Tokenizer) -> str:
    """The cache entry of a corpus encoded by a tokenizer."""
    recipe = f"textgen-tokens-{CACHE_FORMAT}\0{corpus.fingerprint}\0{tokenizer.fingerprint}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:32]


def cached_encoding(
    corpus: Corpus, tokenizer: Tokenizer, progress: Progress = lambda done: None
) -> tuple[TokenFile, bool]:
    """The corpus's token file from the cache, encoding it first if it is not there yet.
    Returns the file and whether it came from the cache."""
    return cached_tokens(
        corpus_key(corpus, tokenizer),
        token_dtype(tokenizer.vocab_size),
        lambda tmp: encode_corpus(corpus, tokenizer, tmp, progress),
        corpus.description,
    )


def cached_tokens(
    key: str, dtype: np.dtype, write: Callable[[Path], object], description: str
) -> tuple[TokenFile, bool]:
    """The cache entry `key`: a token file that `write(path)` makes on a miss (or when the
    entry is damaged). Returns the file and whether it came from the cache."""
    folder = cache_folder() / "tokens"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TextgenError(
            f"{folder}: cannot create the cache folder ({exc.strerror}); "
            "point TEXTGEN_CACHE at a writable folder"
        ) from None
    path, meta_path = folder / f"{key}.bin", folder / f"{key}.json"
    try:
        meta = json.loads(meta_path.read_text())
        if path.stat().st_size == meta["n_tokens"] * np.dtype(meta["dtype"]).itemsize:
            os.utime(path)  # recently used: evicted last
            return TokenFile(path, meta["dtype"], meta["n_tokens"]), True
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        pass  # not cached, or a damaged entry: make it again
    try:
        atomic_write(path, write)
        token_file = TokenFile(path, dtype.name, path.stat().st_size // dtype.itemsize)
        meta = {"dtype": dtype.name, "n_tokens": token_file.n_tokens}
        write_json(meta_path, {**meta, "corpus": description})
    except (OSError, WriteError) as exc:
        reason = exc.reason if isinstance(exc, WriteError) else exc.strerror or str(exc)
        raise TextgenError(
            f"could not write the encoded corpus in {folder} ({reason}); "
            "free some space or point TEXTGEN_CACHE elsewhere"
        ) from None
    _evict(folder, keep=path)
    return token_file, False


def _evict(folder: Path, keep: Path, limit: int = CACHE_MAX_BYTES) -> None:
    """Remove the least recently used token files while the cache holds more than `limit`."""
    entries = []
    for path in folder.glob("*.bin"):
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        if path != keep:
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            total -= size
