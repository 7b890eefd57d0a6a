"""Reading corpora: files, folders, globs, stdin, the built-in one; encoding to tokens."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

from textgen.errors import TextgenError
from textgen.settings import ModelShape
from textgen.text.corpus import open_corpus
from textgen.text.tokenizer import Tokenizer
from textgen.text.tokens import cached_encoding, encode_corpus


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a.txt").write_text("first file\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second file\n")
    (tmp_path / "sub" / "image.bin").write_bytes(b"\x89PNG\x00\x00binary")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: hidden\n")
    return tmp_path


def test_folders_are_read_recursively_skipping_binary_and_hidden_files(tree):
    with open_corpus([str(tree)]) as corpus:
        assert [p.name for p in corpus.files] == ["a.txt", "b.md"]
        assert any("image.bin" in w and "binary" in w for w in corpus.warnings)
        assert "".join(corpus.texts()) == "first file\nsecond file\n"


def test_globs_expand_and_duplicates_are_read_once(tree):
    with open_corpus([str(tree / "**" / "*.md"), str(tree / "sub" / "b.md")]) as corpus:
        assert [p.name for p in corpus.files] == ["b.md"]


@pytest.mark.parametrize(
    "spec, message",
    [("missing.txt", "no such file or folder"), ("nomatch*.txt", "no files match")],
)
def test_bad_paths_are_clear_errors(tmp_path, spec, message):
    with pytest.raises(TextgenError, match=message):
        open_corpus([str(tmp_path / spec)])


def test_empty_files_and_empty_folders_are_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(TextgenError, match="empty"):
        open_corpus([str(tmp_path / "empty.txt")])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(TextgenError, match="holds no text files"):
        open_corpus([str(tmp_path / "nothing")])


def test_invalid_utf8_is_read_with_replacement_characters(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café naïve\n".encode("latin-1"))
    with open_corpus([str(path)]) as corpus:
        text = "".join(corpus.texts())
    assert text == "caf\ufffd na\ufffdve\n"
    assert any("not valid UTF-8" in w for w in corpus.warnings)


def test_stdin_is_spooled_and_removed_afterwards():
    with open_corpus(["-"], stdin=io.BytesIO(b"piped text\n")) as corpus:
        spooled = corpus.files[0]
        assert "".join(corpus.texts()) == "piped text\n"
        assert "".join(corpus.texts()) == "piped text\n"  # readable twice
    assert not spooled.exists()


def test_empty_stdin_is_refused_and_leaves_no_spooled_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(TextgenError, match="standard input was empty"):
        open_corpus(["-"], stdin=io.BytesIO(b""))
    with pytest.raises(TextgenError, match="no such file"):  # piped text, then a bad path
        open_corpus(["-", str(tmp_path / "missing.txt")], stdin=io.BytesIO(b"piped text\n"))
    assert list(tmp_path.iterdir()) == []


def test_no_arguments_means_the_builtin_python_documentation():
    with open_corpus([]) as corpus:
        assert corpus.builtin
        assert corpus.total_bytes > 100_000
        first = next(corpus.texts())
        assert isinstance(first, str) and first


def test_encoding_puts_end_of_text_before_each_document(tree, tokenizer, tmp_path):
    with open_corpus([str(tree)]) as corpus:
        token_file = encode_corpus(corpus, tokenizer, tmp_path / "tokens.bin")
    ids = token_file.array()
    assert ids.dtype == np.uint16
    eot = tokenizer.eot_id
    expected = [eot, *tokenizer.encode("first file\n"), eot, *tokenizer.encode("second file\n")]
    assert ids.tolist() == expected


def test_large_files_are_read_in_chunks_that_add_up_to_the_file(tmp_path, monkeypatch):
    import textgen.text.corpus as corpus_module

    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", 64)
    text = "".join(f"line {i} with some words é\n" for i in range(200))
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")
    with open_corpus([str(path)]) as corpus:
        chunks = list(corpus.texts())
    assert len(chunks) > 10
    assert "".join(chunks) == text
    assert all(c.endswith("\n") for c in chunks)


def test_tokenizer_sample_is_spread_over_the_whole_corpus(tmp_path):
    for i in range(10):
        (tmp_path / f"{i}.txt").write_text(f"file {i} " * 100 + "\n")  # 701 bytes each
    with open_corpus([str(tmp_path)]) as corpus:
        sample = list(corpus.texts(max_bytes=3 * 701))
        assert [text.split()[1] for text in sample] == ["0", "3", "6"]  # not the first three
        assert "".join(corpus.texts()) == "".join(p.read_text() for p in corpus.files)


@pytest.fixture
def notes(tmp_path, monkeypatch):
    """A small text file, and a cache folder of the test's own."""
    monkeypatch.setenv("TEXTGEN_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "notes.txt"
    path.write_text("the cat sees the moon\n" * 50)
    return path


def test_second_encoding_of_the_same_text_comes_from_the_cache(notes, tokenizer, tmp_path):
    path = notes
    with open_corpus([str(path)]) as corpus:
        first, cached_first = cached_encoding(corpus, tokenizer)
        second, cached_second = cached_encoding(corpus, tokenizer)
    assert (cached_first, cached_second) == (False, True)
    assert second.path == first.path and second.path.parent == tmp_path / "cache" / "tokens"
    assert np.array_equal(second.array(), first.array())
    path.write_text("the dog sees the sun\n" * 50)  # same size, other content
    with open_corpus([str(path)]) as corpus:
        changed, cached = cached_encoding(corpus, tokenizer)
    assert not cached and changed.path != first.path
    assert tokenizer.decode(changed.array()[1:]) == path.read_text()


def test_a_damaged_cache_entry_is_encoded_again(notes, tokenizer):
    with open_corpus([str(notes)]) as corpus:
        first, _ = cached_encoding(corpus, tokenizer)
        expected = np.array(first.array())
        with open(first.path, "r+b") as f:
            f.truncate(10)  # as after a crash or a full disk
        again, cached = cached_encoding(corpus, tokenizer)
    assert not cached
    assert np.array_equal(again.array(), expected)


def test_an_unwritable_cache_folder_is_a_clear_error(tmp_path, tokenizer, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TEXTGEN_CACHE", str(blocker))
    with open_corpus([str(blocker)]) as corpus, pytest.raises(TextgenError, match="TEXTGEN_CACHE"):
        cached_encoding(corpus, tokenizer)


def test_encoding_reports_progress_up_to_the_corpus_size(tree, tokenizer, tmp_path):
    seen: list[int] = []
    with open_corpus([str(tree)]) as corpus:
        encode_corpus(corpus, tokenizer, tmp_path / "t.bin", progress=seen.append, batch_chunks=1)
        assert seen == sorted(seen) and seen[-1] == corpus.total_bytes
        assert len(seen) == 2  # one report per batch: here, per file


# -- odd corpora ----------------------------------------------------------------------------


def test_a_compressed_file_is_named_as_such_with_the_command_to_read_it(tmp_path):
    path = tmp_path / "notes.txt.gz"
    path.write_bytes(gzip.compress(b"some notes\n" * 100))
    with pytest.raises(TextgenError, match=r"looks compressed \(gzip\).*zcat .*notes.txt.gz \|"):
        open_corpus([str(path)])


def test_a_named_pipe_is_read_as_a_stream(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    text = "text that comes down a pipe\n" * 50
    writer = threading.Thread(target=lambda: fifo.write_text(text))
    writer.start()
    with open_corpus([str(fifo)]) as corpus:
        assert "".join(corpus.texts()) == text
        assert "".join(corpus.texts()) == text  # read twice: it was kept
        assert corpus.description == str(fifo)
    writer.join()


def test_process_substitution_works_as_a_corpus(tmp_path, corpus_file):
    folder = tmp_path / "m"
    command = (
        f"{sys.executable} -m textgen tokenizer train <(cat {corpus_file}) "
        f"--model {folder} --vocab-size 280"
    )
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Tokenizer.load(folder / "tokenizer.json").vocab_size <= 280


def test_hidden_files_and_folders_are_skipped_with_a_word(tree):
    with open_corpus([str(tree)]) as corpus:
        assert any("skipped 1 hidden files and folders (.git/)" in w for w in corpus.warnings)


def test_a_corpus_of_one_repeated_character_says_what_is_wrong(tmp_path):
    from textgen.settings import TrainConfig
    from textgen.training.run import train

    path = tmp_path / "aaa.txt"
    path.write_text("a" * 20_000)
    config = TrainConfig(steps=1, bpe_dropout=0.0)
    with (
        open_corpus([str(path)]) as corpus,
        pytest.raises(TextgenError, match=r"20,000 bytes encode to \d+ tokens: the text repeats"),
    ):
        train(tmp_path / "m", corpus, config, ModelShape(context_window=128), vocab_size=300)


def test_a_long_line_without_spaces_trains_a_tokenizer_that_reads_like_gpt2(tmp_path):
    """Words of megabytes would take BPE training an hour: long pre-tokens are cut while
    learning; encoding keeps GPT-2's plain split, which other tools reproduce."""
    rng = random.Random(0)
    line = "".join(rng.choice("abcdefghij0123456789") for _ in range(300_000))
    tokenizer = Tokenizer.train([line], 600)
    assert tokenizer.vocab_size == 600
    assert tokenizer.decode(tokenizer.encode(line)) == line
    saved = json.loads(tokenizer.to_json())["pre_tokenizer"]
    assert saved["type"] == "ByteLevel" and saved["use_regex"] and not saved["add_prefix_space"]


def test_ctrl_c_stops_tokenizer_training_at_once(tmp_path):
    rng = random.Random(1)
    words = [
        "".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 9)))
        for _ in range(20_000)
    ]
    path = tmp_path / "big.txt"
    with open(path, "w") as f:
        for _ in range(10):
            f.write(" ".join(rng.choice(words) for _ in range(200_000)) + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "textgen", "tokenizer", "train", str(path), "--model",
         str(tmp_path / "m"), "--vocab-size", "20000"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in process.stderr:
        if "training a byte-level BPE tokenizer" in line:
            break
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=60)[1]  # a bound for a hang, not a speed check
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "warning: interrupted"
    assert not (tmp_path / "m").exists()
