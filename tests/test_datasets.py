"""Datasets as they come: JSON Lines, CSV/TSV (also gzip-compressed) and Parquet corpora
are read record by record, one document per record, from the field the user names; bad
records are named and skipped, never a traceback."""

from __future__ import annotations

import csv
import gzip
import json
import re
import subprocess
import sys
import tracemalloc

import pytest
from helpers import make_corpus, one_line_error, run, train_command

from textgen.errors import TextgenError
from textgen.text.corpus import open_corpus
from textgen.text.structured import Reading

DOCS = ["The cat sees the moon.\nA second line, with a comma.", 'She said "hi"\tand left.', "ok"]


def documents(path, reading=None) -> tuple[list[str], list[str]]:
    with open_corpus([str(path)], reading=reading) as corpus:
        texts = ["".join(doc) for doc in corpus.documents()]
        return texts, corpus.warnings


def write_jsonl(path, records, opener=open) -> None:
    with opener(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write((record if isinstance(record, str) else json.dumps(record)) + "\n")


@pytest.mark.parametrize("name", ["d.jsonl", "d.ndjson", "d.jsonl.gz"])
def test_json_lines_give_one_document_per_record(tmp_path, name):
    path = tmp_path / name
    write_jsonl(path, [{"text": d, "id": i} for i, d in enumerate(DOCS)],
                gzip.open if name.endswith(".gz") else open)  # fmt: skip
    assert documents(path) == (DOCS, [])


@pytest.mark.parametrize("name, delimiter", [("d.csv", ","), ("d.tsv", "\t"), ("d.csv.gz", ",")])
def test_csv_and_tsv_rows_give_one_document_each_quoted_newlines_and_all(tmp_path, name, delimiter):
    path = tmp_path / name
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["id", "body"])
        writer.writerows([i, d] for i, d in enumerate(DOCS))
    assert documents(path, Reading.of(["body"], None))[0] == DOCS


def test_several_fields_join_with_a_blank_line_and_a_template_places_them(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(
        path, [{"title": "One", "body": "first", "n": 1}, {"title": "Two", "body": "b", "n": 2}]
    )
    assert documents(path, Reading.of(["title", "body"], None))[0] == ["One\n\nfirst", "Two\n\nb"]
    templated = Reading.of(None, "# {title} ({n})\n{body}")
    assert documents(path, templated)[0] == ["# One (1)\nfirst", "# Two (2)\nb"]


def test_bad_records_are_skipped_counted_and_the_first_few_named(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [{"text": "good one"}, "not json {", [1, 2], {"other": "x"}, {"text": 5}, "",
             {"text": "good two"}, {"text": None}]  # fmt: skip
    write_jsonl(path, lines)
    texts, warnings = documents(path)
    assert texts == ["good one", "good two"]
    assert len(warnings) == 1
    warning = warnings[0]
    assert "skipped 5 of 7 records" in warning
    assert "line 2: not valid JSON" in warning and "line 3: not an object (a list)" in warning
    assert "line 4: no field 'text'" in warning and "and 2 more" in warning


def test_a_file_where_no_record_has_the_field_is_one_error_naming_the_fields_it_has(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [{"title": "a", "body": "b"}, {"title": "c", "body": "d"}])
    with pytest.raises(
        TextgenError,
        match=r"the field 'text' \(line 1: no field 'text'\); its records have: title, body",
    ):
        documents(path)
    table = tmp_path / "d.csv"
    table.write_text("id,content\n1,hello\n", encoding="utf-8")
    with pytest.raises(TextgenError, match="no column 'text'; its columns: id, content"):
        documents(table)


def test_parquet_is_read_by_column_and_batch(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": DOCS, "n": [1, 2, 3]}), path, row_group_size=2)
    assert documents(path) == (DOCS, [])
    assert documents(path, Reading.of(None, "{n}. {text}"))[0][0] == f"1. {DOCS[0]}"
    with pytest.raises(TextgenError, match="no column 'body'; its columns: text, n"):
        documents(path, Reading.of(["body"], None))


def test_parquet_without_pyarrow_says_which_extra_to_install(tmp_path, monkeypatch):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 not really")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed
    with pytest.raises(TextgenError, match=r"needs pyarrow: pip install 'textgen-cli\[data\]'"):
        documents(path)


def test_a_large_json_lines_file_is_streamed_never_held_whole(tmp_path):
    path = tmp_path / "big.jsonl"
    record = {"text": "word " * 200}  # 1 KB a record
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(8000):  # 8 MB
            f.write(json.dumps(record) + "\n")
    with open_corpus([str(path)]) as corpus:
        tracemalloc.start()
        count = sum(1 for doc in corpus.documents() for _ in doc)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert count == 8000
    assert peak < 1_000_000  # a few records' worth, not 8 MB


def test_the_same_file_read_by_another_field_is_another_corpus(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [{"a": "one", "b": "two"}])
    a, b = Reading.of(["a"], None), Reading.of(["b"], None)
    with open_corpus([str(path)], reading=a) as first, open_corpus([str(path)], reading=b) as other:
        assert first.fingerprint != other.fingerprint  # the token cache keeps them apart
        assert first.record()["reading"]["fields"] == ["a"]


def test_a_users_jsonl_with_a_bad_line_trains_and_says_which_line(tmp_path):
    path = tmp_path / "notes.jsonl"
    lines = [json.dumps({"text": paragraph}) for paragraph in make_corpus().split("\n")]
    lines.insert(5, '{"text": "cut short')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    folder = tmp_path / "m"
    done = subprocess.run(
        train_command(path, folder, "--steps", "10"), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "notes.jsonl: skipped 1 of" in done.stderr and "line 6: not valid JSON" in done.stderr
    scored = run("eval", str(path), "--model", str(folder), "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["bits_per_byte"] > 0


def test_a_dataset_without_the_field_stops_training_with_one_line_and_leaves_nothing(tmp_path):
    path = tmp_path / "notes.jsonl"
    write_jsonl(path, [{"body": "x y z " * 50}] * 20)
    folder = tmp_path / "m"
    done = subprocess.run(
        train_command(path, folder, "--steps", "5"), capture_output=True, text=True, timeout=300
    )
    one_line_error(done.returncode, done.stderr, 1, "its records have: body")
    assert "--field NAME" in done.stderr
    assert not folder.exists()
    done = subprocess.run(
        train_command(path, folder, "--steps", "5", "--field", "body"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "options, message",
    [
        (["--template", "{title"], "--template"),
        (["--template", "no fields"], "names no field"),
        (["--field", "a", "--template", "{b}"], "give one"),
    ],
)
def test_bad_reading_options_are_one_line(tmp_path, options, message):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [{"text": "hello"}])
    done = run("train", str(path), "--model", str(tmp_path / "m"), "--steps", "1", *options)
    one_line_error(done.returncode, done.stderr, 2, message)


def test_a_byte_order_mark_is_not_part_of_the_first_field_or_record(tmp_path):
    table = tmp_path / "excel.csv"
    table.write_bytes("\ufefftext,title\r\nhello there,a\r\nsecond row,b\r\n".encode())
    assert documents(table) == (["hello there", "second row"], [])
    lines = tmp_path / "bom.jsonl"
    lines.write_bytes('\ufeff{"text": "first"}\n{"text": "second"}\n'.encode())
    assert documents(lines) == (["first", "second"], [])


@pytest.mark.parametrize(
    "lines, reason",
    [
        (["{bad", "nope", "[1]"], "line 1: not valid JSON"),
        ([{"text": 1}, {"text": 2}], "line 1: field 'text' is a number, not a string"),
    ],
)
def test_when_no_record_gives_a_text_the_error_says_why_of_the_first(tmp_path, lines, reason):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, lines)
    with pytest.raises(TextgenError, match=re.escape(reason)):
        documents(path)


def test_a_parquet_column_of_numbers_is_named_as_such(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"n": [1, 2]}), path)
    with pytest.raises(TextgenError, match="row 1: field 'n' is a number, not a string"):
        documents(path, Reading.of(["n"], None))


def test_field_on_plain_text_says_it_is_read_as_text(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text('{"text": "hi"}\n', encoding="utf-8")
    texts, warnings = documents(path, Reading.of(["title"], None))
    assert texts == ['{"text": "hi"}\n']
    assert any("read as plain text" in w for w in warnings)


def test_resume_with_another_field_and_no_corpus_is_refused(tmp_path):
    done = run("train", "--resume", "--model", str(tmp_path / "m"), "--field", "body")
    one_line_error(done.returncode, done.stderr, 2, "give it")


def test_a_template_writes_numbers_but_not_booleans(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [{"n": 3, "ok": False, "text": "a"}, {"n": 4, "ok": True, "text": "b"}])
    assert documents(path, Reading.of(None, "{n}: {text}"))[0] == ["3: a", "4: b"]
    with pytest.raises(TextgenError, match="field 'ok' is a boolean, not a string"):
        documents(path, Reading.of(None, "{ok} {text}"))
