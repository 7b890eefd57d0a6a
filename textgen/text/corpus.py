"""Corpus sources: files, folders, glob patterns, standard input or the built-in corpus.

A corpus is a list of sources: files, folders (searched recursively for text files),
glob patterns, `-` for standard input, or nothing for the built-in corpus (the Python
documentation that ships with every CPython as `pydoc_data.topics`).

Text is read in chunks of about 1 MB, so no corpus is ever held whole in memory. Files
that look binary (a NUL byte in their first 8 KB) are skipped with a warning; text that
is not valid UTF-8 is decoded with U+FFFD replacement characters, with a warning.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

from textgen.errors import TextgenError
from textgen.records import Callback, Notice

CHUNK_BYTES = 1 << 20
SNIFF_BYTES = 8192
BUILTIN_NAME = "built-in corpus (Python documentation, pydoc_data.topics)"

Progress = Callable[[int], None]  # called with the corpus bytes handled so far


@dataclass
class Corpus:
    """The resolved sources of a corpus. Use as a context manager: stdin is spooled to a
    temporary file (it is read twice, to train the tokenizer and to encode) that is
    removed on exit."""

    files: list[Path] = field(default_factory=list)
    builtin: bool = False
    warnings: list[str] = field(default_factory=list)
    _spool_dir: str | None = None

    def __enter__(self) -> Corpus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spooled copy of standard input, if any."""
        if self._spool_dir:
            shutil.rmtree(self._spool_dir, ignore_errors=True)
            self._spool_dir = None

    @property
    def description(self) -> str:
        if self.builtin:
            return BUILTIN_NAME
        if len(self.files) == 1:
            return str(self.files[0])
        return f"{len(self.files)} files"

    @cached_property
    def total_bytes(self) -> int:
        if self.builtin:
            return sum(len(t.encode("utf-8")) for t in _builtin_documents())
        return sum(p.stat().st_size for p in self.files)

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the corpus's bytes, document by document: the same text, in the same
        files and order, has the same fingerprint wherever it lies."""
        digest = hashlib.sha256(b"textgen-corpus\0")
        if self.builtin:
            for text in _builtin_documents():
                digest.update(hashlib.sha256(text.encode("utf-8")).digest())
        for path in self.files:
            file_digest = hashlib.sha256()
            with open(path, "rb") as f:
                while data := f.read(CHUNK_BYTES):
                    file_digest.update(data)
            digest.update(file_digest.digest())
        return digest.hexdigest()

    def report_warnings(self, report: Callback) -> None:
        """Each warning met while reading (skipped files, bad UTF-8), once, as a Notice."""
        for warning in dict.fromkeys(self.warnings):  # unique, in order
            report(Notice(warning, warning=True))

    def documents(self) -> Iterator[Iterator[str]]:
        """One iterator of text chunks per document (a file, or a built-in topic)."""
        if self.builtin:
            for text in _builtin_documents():
                yield iter([text])
            return
        for path in self.files:
            yield _read_chunks(path, self.warnings)

    def texts(
        self, max_bytes: int | None = None, progress: Progress = lambda done: None
    ) -> Iterator[str]:
        """All text chunks of all documents, in order (for tokenizer training). With
        `max_bytes`, an even sample of about that many bytes from across the whole corpus:
        chunks are kept as long as the kept share stays below max_bytes / total bytes."""
        share = 1.0 if max_bytes is None else min(1.0, max_bytes / max(self.total_bytes, 1))
        seen = kept = 0
        for doc in self.documents():
            for chunk in doc:
                size = len(chunk.encode("utf-8"))
                seen += size
                if kept < share * seen:
                    kept += size
                    yield chunk
                progress(seen)


def open_corpus(specs: list[str], stdin: BinaryIO | None = None) -> Corpus:
    """Resolve CORPUS arguments to a `Corpus`. No arguments means the built-in corpus."""
    if not specs:
        return Corpus(builtin=True)
    corpus = Corpus()
    try:
        seen: set[Path] = set()
        for spec in specs:
            if spec == "-":
                path = _spool_stdin(corpus, stdin if stdin is not None else sys.stdin.buffer)
                corpus.files.append(path)
                continue
            for path in _expand(spec, corpus.warnings):
                resolved = path.resolve()
                if resolved not in seen:
                    seen.add(resolved)
                    corpus.files.append(path)
        if not corpus.files:
            raise TextgenError("the corpus is empty: no text files were found in the given paths")
        if corpus.total_bytes == 0:
            raise TextgenError("the corpus is empty: all its files have zero bytes")
    except BaseException:
        corpus.close()  # no spooled copy of standard input is left behind
        raise
    return corpus


def _spool_stdin(corpus: Corpus, stream: BinaryIO) -> Path:
    if corpus._spool_dir is None:
        corpus._spool_dir = tempfile.mkdtemp(prefix="textgen-stdin-")
    path = Path(corpus._spool_dir) / "stdin.txt"
    with open(path, "wb") as out:
        shutil.copyfileobj(stream, out, CHUNK_BYTES)
    if path.stat().st_size == 0:
        raise TextgenError("standard input was empty: pipe some text in, e.g. cat notes.txt |")
    return path


def _expand(spec: str, warnings: list[str]) -> list[Path]:
    path = Path(spec).expanduser()
    if path.is_dir():
        found = [p for p in sorted(_walk(path)) if _looks_like_text(p, warnings)]
        if not found:
            raise TextgenError(f"{spec}: this folder holds no text files")
        return found
    if path.exists():
        if not os.access(path, os.R_OK):
            raise TextgenError(f"{spec}: permission denied")
        return [path] if _looks_like_text(path, warnings) else []
    if glob.has_magic(spec):
        matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            raise TextgenError(f"{spec}: no files match this pattern")
        return [p for p in files if _looks_like_text(p, warnings)]
    raise TextgenError(f"{spec}: no such file or folder")


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # skip .git and the like
        for name in files:
            if not name.startswith("."):
                yield Path(folder) / name


def _looks_like_text(path: Path, warnings: list[str]) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as exc:
        raise TextgenError(f"{path}: cannot read ({exc.strerror})") from None
    if b"\x00" in head:
        warnings.append(f"{path}: skipped, it looks binary (it contains NUL bytes)")
        return False
    return True


def _read_chunks(path: Path, warnings: list[str]) -> Iterator[str]:
    """Yield the text of a file in ~1 MB chunks, split after a newline where possible."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    replaced = False
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK_BYTES)
            if data and not data.endswith(b"\n"):
                data += f.readline()  # finish the line so chunks split between lines
            final = not data
            try:
                text = decoder.decode(data, final=final)
            except UnicodeDecodeError:
                if not replaced:
                    warnings.append(f"{path}: not valid UTF-8; bad bytes read as U+FFFD")
                    replaced = True
                decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                text = decoder.decode(data, final=final)
            if text:
                yield text
            if final:
                return


def _builtin_documents() -> list[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise TextgenError(
            "this Python has no pydoc_data module (the built-in corpus); give a corpus file"
        ) from None
    return [topics[name] for name in sorted(topics)]
