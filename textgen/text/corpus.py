"""Corpus sources: files, folders, glob patterns, standard input or the built-in corpus.

A corpus is a list of sources: files, folders (searched recursively for text files),
glob patterns, `-` for standard input, or nothing for the built-in corpus (the Python
documentation that ships with every CPython as `pydoc_data.topics`).

Text is read in chunks of about 1 MB, so no corpus is ever held whole in memory. Files
that look binary (a NUL byte in their first 8 KB) are skipped with a warning; text that
is not valid UTF-8 is decoded with U+FFFD replacement characters, with a warning.
Datasets (JSON Lines, CSV/TSV, Parquet) are read record by record, one document per
record (`textgen.text.structured`).
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

from textgen.errors import TextgenError
from textgen.records import Callback, Notice
from textgen.text import structured
from textgen.text.structured import Reading

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
    names: dict[Path, str] = field(default_factory=dict)  # spooled streams: what they were
    reading: Reading = field(default_factory=Reading)  # how a dataset's records read
    _spool_dir: str | None = None

    @property
    def has_datasets(self) -> bool:
        """Whether some of its files are datasets, read record by record."""
        return any(structured.kind(p) for p in self.files)

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
            return self.names.get(self.files[0], str(self.files[0]))
        return f"{len(self.files)} files"

    def record(self) -> dict[str, Any]:
        """What a resumed run needs to find this corpus again (see `reopen`)."""
        kind = "builtin" if self.builtin else "stream" if self.names else "files"
        record = {
            "kind": kind,
            "files": [str(p.resolve()) for p in self.files] if kind == "files" else [],
            "fingerprint": self.fingerprint,
            "description": self.description,
        }
        if self.has_datasets:
            record["reading"] = {
                "fields": list(self.reading.fields),
                "template": self.reading.template,
            }
        return record

    @cached_property
    def total_bytes(self) -> int:
        if self.builtin:
            return sum(len(t.encode("utf-8")) for t in _builtin_documents())
        total = 0
        for path in self.files:
            if structured.kind(path):  # its text's bytes, not the file's (markup, zip)
                texts = structured.documents(path, self.reading, [])
                total += sum(len(text.encode("utf-8")) for text in texts)
            else:
                total += path.stat().st_size
        return total

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
        if self.has_datasets:  # the same file read by other fields is another text
            digest.update(repr((self.reading.fields, self.reading.template)).encode())
        return digest.hexdigest()

    def first_word(self) -> str | None:
        """The corpus's first word (a prompt that suits it, in its own language and script),
        at most 20 characters of it."""
        for chunk in self.texts():
            found = re.search(r"\S+", chunk)
            if found:
                return found.group()[:20]
        return None

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
            if structured.kind(path):
                for text in structured.documents(path, self.reading, self.warnings):
                    yield iter([text])
            else:
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


def open_corpus(
    specs: list[str], stdin: BinaryIO | None = None, reading: Reading | None = None
) -> Corpus:
    """Resolve CORPUS arguments to a `Corpus`. No arguments means the built-in corpus.
    `reading`: which fields of a dataset's records make its documents (default `text`)."""
    if not specs:
        return Corpus(builtin=True)
    corpus = Corpus(reading=reading or Reading())
    try:
        seen: set[Path] = set()
        for spec in specs:
            if spec == "-":
                _spool(corpus, stdin if stdin is not None else sys.stdin.buffer, "standard input")
                continue
            for path in _expand(spec, corpus):
                resolved = path.resolve()
                if resolved not in seen:
                    seen.add(resolved)
                    corpus.files.append(path)
        if not corpus.files:
            skipped = "; ".join(dict.fromkeys(corpus.warnings)) or "no text files were found"
            raise TextgenError(f"the corpus is empty: {skipped}")
        if corpus.total_bytes == 0:
            raise TextgenError("the corpus is empty: all its files have zero bytes")
        if reading is not None and reading != Reading() and not corpus.has_datasets:
            corpus.warnings.append(
                f"--field and --template read datasets ({', '.join(structured.KINDS)}, "
                "also .gz); this corpus has none, so it is read as plain text"
            )
    except BaseException:
        corpus.close()  # no spooled copy of standard input is left behind
        raise
    return corpus


def reopen(record: dict[str, Any]) -> Corpus:
    """The corpus a run recorded (`Corpus.record`), if it is still there and unchanged."""
    kind, description = record.get("kind"), record.get("description", "its corpus")
    read = record.get("reading") or {}
    reading = Reading(tuple(read.get("fields") or ("text",)), read.get("template"))
    if kind == "builtin":
        corpus = Corpus(builtin=True)
    elif kind == "files" and all(Path(p).is_file() for p in record.get("files", [])):
        corpus = Corpus(files=[Path(p) for p in record["files"]], reading=reading)
    elif kind == "stream":
        raise TextgenError(
            f"the run read its corpus from {description}, which cannot be read again: "
            "give it again (cat notes.txt | textgen train - --resume ...)"
        )
    else:
        raise TextgenError(
            f"the run's corpus ({description}) is no longer where it was: give it as CORPUS"
        )
    if corpus.fingerprint != record.get("fingerprint"):
        raise TextgenError(
            f"the run's corpus ({description}) has changed since: give it as CORPUS to go on "
            "training on it as it is now"
        )
    return corpus


def _spool(corpus: Corpus, stream: BinaryIO, name: str) -> Path:
    """A copy of a stream (stdin, a pipe) in a temporary file: a corpus is read twice, to
    train the tokenizer and to encode it."""
    if corpus._spool_dir is None:
        corpus._spool_dir = tempfile.mkdtemp(prefix="textgen-stream-")
    path = Path(corpus._spool_dir) / f"{len(corpus.names)}.txt"
    with open(path, "wb") as out:
        shutil.copyfileobj(stream, out, CHUNK_BYTES)
    if path.stat().st_size == 0:
        if name == "standard input":
            raise TextgenError("standard input was empty: pipe some text in, e.g. cat notes.txt |")
        raise TextgenError(f"{name}: empty (nothing came out of it)")
    corpus.names[path] = name
    corpus.files.append(path)
    return path


def _expand(spec: str, corpus: Corpus) -> list[Path]:
    warnings = corpus.warnings
    path = Path(spec).expanduser()
    if path.is_dir():
        found = [p for p in sorted(_walk(path, warnings)) if _looks_like_text(p, warnings)]
        if not found:
            raise TextgenError(f"{spec}: this folder holds no text files")
        return found
    if path.exists():
        if not os.access(path, os.R_OK):
            raise TextgenError(f"{spec}: permission denied")
        if not path.is_file():  # a named pipe, <(command), /dev/stdin: read it once, now
            with open(path, "rb") as stream:
                spooled = _spool(corpus, stream, spec)
            corpus.files.remove(spooled)  # added below, once sniffed
            return [spooled] if _looks_like_text(spooled, warnings, spec) else []
        return [path] if _looks_like_text(path, warnings) else []
    if glob.has_magic(spec):
        matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            raise TextgenError(f"{spec}: no files match this pattern")
        return [p for p in files if _looks_like_text(p, warnings)]
    raise TextgenError(f"{spec}: no such file or folder")


def _walk(root: Path, warnings: list[str]) -> Iterator[Path]:
    """The files under `root`; hidden ones (.git, .venv, .DS_Store), broken links and
    files that cannot be read are skipped, with a word."""
    hidden, unreadable = [], []
    for folder, dirs, files in os.walk(root):
        hidden += [d + "/" for d in dirs if d.startswith(".")]
        hidden += [name for name in files if name.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if name.startswith("."):
                continue
            if not path.is_file() or not os.access(path, os.R_OK):  # a broken link, a socket
                unreadable.append(str(path.relative_to(root)))
                continue
            yield path
    for skipped, what in (
        (hidden, "hidden files and folders"),
        (unreadable, "broken links and files that cannot be read"),
    ):
        if skipped:
            names = sorted(set(skipped))
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            warnings.append(f"{root}: skipped {len(skipped)} {what} ({shown})")


# The first bytes of compressed files, and how to decompress them into a pipe.
COMPRESSED = {
    b"\x1f\x8b": ("gzip", "zcat"),
    b"BZh": ("bzip2", "bzcat"),
    b"\xfd7zXZ\x00": ("xz", "xzcat"),
    b"\x28\xb5\x2f\xfd": ("zstd", "zstdcat"),
    b"PK\x03\x04": ("zip", "unzip -p"),
}


def _looks_like_text(path: Path, warnings: list[str], name: str | None = None) -> bool:
    """Whether to read a file as text; a compressed or binary one is skipped, with a word
    (a dataset, read record by record, may be either)."""
    name = name or str(path)
    if structured.kind(path):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as exc:
        raise TextgenError(f"{name}: cannot read ({exc.strerror})") from None
    for magic, (kind, command) in COMPRESSED.items():
        if head.startswith(magic):
            warnings.append(
                f"{name}: skipped, it looks compressed ({kind}); decompress it first: "
                f"{command} {name} | textgen train -"
            )
            return False
    if b"\x00" in head:
        warnings.append(f"{name}: skipped, it looks binary (it contains NUL bytes)")
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
