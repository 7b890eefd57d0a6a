"""Structured corpora: datasets as they come, JSON Lines, CSV/TSV and Parquet, read
record by record, one document per record.

A file is structured by its name: `.jsonl`/`.ndjson`, `.csv`, `.tsv` (each also
gzip-compressed, `.jsonl.gz`) and `.parquet`. A record's text is one field (`--field`,
default `text`), several joined by a blank line (`--field title --field body`), or a
template over its fields (`--template "{title}\n\n{body}"`). Files are streamed: a line,
a row or a Parquet batch at a time, never the whole file.

Bad records are skipped and counted, and the first few are named with their line or
row number and what was wrong; a file where no record has the field is one error that
names the fields its records do have.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from textgen.errors import TextgenError, install_hint

KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
NAMED_BAD = 3  # bad records named in the warning; the rest are counted
PARQUET_BATCH = 1024  # rows read at a time


def kind(path: Path) -> str | None:
    """The structured format of a file, by its name (None: plain text)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
        if name.endswith(".parquet"):
            return None
    for suffix, found in KINDS.items():
        if name.endswith(suffix):
            return found
    return None


class BadRecord(Exception):
    """A record that gives no text, and why (what the warning says of it)."""


@dataclass(frozen=True)
class Reading:
    """How a record becomes a document: its fields, joined by a blank line, or a template
    over them (`{title}` is the field `title`)."""

    fields: tuple[str, ...] = ("text",)
    template: str | None = None

    @classmethod
    def of(cls, fields: list[str] | None, template: str | None) -> Reading:
        if template is not None:
            if fields:
                raise TextgenError("--field and --template: give one (a template names its fields)")
            try:
                named = [name for _, name, _, _ in string.Formatter().parse(template) if name]
            except ValueError as exc:
                raise TextgenError(f"--template {template!r}: {exc}") from None
            if not named:
                raise TextgenError(
                    f"--template {template!r} names no field; write them in braces: "
                    '"{title}\\n\\n{body}"'
                )
            if any(not name.isidentifier() for name in named):
                raise TextgenError(
                    f"--template {template!r}: a field in braces is a plain name ({{title}})"
                )
            return cls(tuple(dict.fromkeys(named)), template)
        return cls(tuple(fields) if fields else ("text",))

    def describe(self) -> str:
        if self.template is not None:
            return f"the template {self.template!r}"
        names = ", ".join(repr(f) for f in self.fields)
        return f"the field {names}" if len(self.fields) == 1 else f"the fields {names}"

    def text(self, record: Any) -> str:
        """The document a record gives, or BadRecord saying why it gives none."""
        if not isinstance(record, dict):
            raise BadRecord(f"not an object ({_type_name(record)})")
        values = {}
        for name in self.fields:
            if name not in record:
                raise BadRecord(f"no field {name!r}")
            value = record[name]
            if isinstance(value, str):
                values[name] = value
            elif (
                self.template is not None
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                values[name] = str(value)
            else:
                raise BadRecord(f"field {name!r} is {_type_name(value)}, not a string")
        if self.template is not None:
            return self.template.format_map(values)
        return "\n\n".join(values[name] for name in self.fields)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
        str: "a string",
    }.get(type(value), type(value).__name__)


def documents(path: Path, reading: Reading, warnings: list[str]) -> Iterator[str]:
    """The documents of a structured file, one per good record, in order. At the end, a
    warning names the bad records (once per file, however often it is read); a file
    with records but no good one is an error naming the fields it does have."""
    found = kind(path)
    records = {"jsonl": _jsonl, "csv": _delimited, "tsv": _delimited, "parquet": _parquet}
    good, bad, named, seen = 0, 0, [], _FieldsSeen()
    for where, record in records[found](path, found, reading):  # type: ignore[index]
        try:
            if isinstance(record, BadRecord):
                raise record
            text = reading.text(record)
        except BadRecord as why:
            bad += 1
            seen.add(record)
            if len(named) < NAMED_BAD:
                named.append(f"{where}: {why}")
            continue
        good += 1
        if text:
            yield text
    if bad and not good:
        raise TextgenError(
            f"{path}: no record has {reading.describe()} ({named[0]}){seen.phrase()}; "
            "choose the field with --field NAME (or --template)"
        )
    if bad:
        more = f", and {bad - len(named)} more" if bad > len(named) else ""
        warnings.append(f"{path}: skipped {bad} of {bad + good} records ({'; '.join(named)}{more})")


class _FieldsSeen:
    """The field names bad records had, for the error when none is good."""

    def __init__(self) -> None:
        self.names: dict[str, None] = {}

    def add(self, record: Any) -> None:
        if isinstance(record, dict) and len(self.names) < 50:
            self.names.update(dict.fromkeys(str(k) for k in record))

    def phrase(self) -> str:
        if not self.names:
            return ""
        names = list(self.names)
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        return f"; its records have: {shown}"


def _open_text(path: Path) -> IO[str]:
    """The file as text (gunzipped if it ends in .gz); the caller closes it."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    raw: IO[bytes] = opener(path, "rb")  # type: ignore[assignment]
    # utf-8-sig: a byte-order mark (Excel and Windows tools write one) is not text
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def _jsonl(path: Path, found: str, reading: Reading) -> Iterator[tuple[str, Any]]:
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"line {number}", json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    yield f"line {number}", BadRecord("not valid JSON")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise TextgenError(f"{path}: cannot read it ({_why(exc)})") from None


def _delimited(path: Path, found: str, reading: Reading) -> Iterator[tuple[str, Any]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a document may be long
    delimiter = "\t" if found == "tsv" else ","
    try:
        with _open_text(path) as f:
            rows = csv.DictReader(f, delimiter=delimiter)
            columns = list(rows.fieldnames or [])
            _check_columns(path, columns, reading)
            for row in rows:
                # the header is line 1; a row's number is its line's for one-line rows
                where = f"row {rows.line_num - 1}"
                if None in row:  # more cells than the header has columns
                    cells = len(columns) + len(row[None])
                    yield where, BadRecord(f"{cells} cells, the header has {len(columns)}")
                elif any(row.get(name) is None for name in reading.fields):
                    yield where, BadRecord(f"fewer cells than the header's {len(columns)}")
                else:
                    yield where, row
    except (OSError, EOFError, gzip.BadGzipFile, csv.Error) as exc:
        raise TextgenError(f"{path}: cannot read it ({_why(exc)})") from None


def _parquet(path: Path, found: str, reading: Reading) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TextgenError(
            f"{path}: reading Parquet needs pyarrow: {install_hint('data')}"
        ) from None
    try:
        table = pq.ParquetFile(path)
        _check_columns(path, table.schema_arrow.names, reading)
        row = 0
        for batch in table.iter_batches(batch_size=PARQUET_BATCH, columns=list(reading.fields)):
            for record in batch.to_pylist():
                row += 1
                yield f"row {row}", record
    except TextgenError:
        raise
    except Exception as exc:  # pyarrow's own errors: a damaged or foreign file
        raise TextgenError(f"{path}: cannot read it as Parquet ({exc})") from None


def _check_columns(path: Path, columns: list[str], reading: Reading) -> None:
    """A table without a column the reading needs is one error naming those it has."""
    missing = [name for name in reading.fields if name not in columns]
    if missing:
        shown = ", ".join(columns[:10]) + (", ..." if len(columns) > 10 else "")
        raise TextgenError(
            f"{path}: no column {missing[0]!r}; its columns: {shown or 'none'}; choose one "
            "with --field NAME (or --template)"
        )


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
