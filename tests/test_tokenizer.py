"""The tokenizer: lossless round trips on awkward text, streaming decode, rendering."""

from __future__ import annotations

import pytest

from textgen.errors import SettingError
from textgen.text.tokenizer import END_OF_TEXT, Tokenizer

AWKWARD = [
    "",
    "hello world",
    "  leading and trailing spaces  ",
    "emoji 😀👩‍👩‍👧 and flags 🇫🇷",
    "中文字符和日本語のテキスト",
    "control \x00\x01\x07\x1b[31m chars\x7f",
    "tabs\tand\r\nwindows\nnewlines\n\n\n",
    "combining: e\u0301 a\u0308 \ufeff zero-width\u200b",
    "x" * 500,
    END_OF_TEXT,  # the special token's text, typed by a user, is ordinary text
]


@pytest.mark.parametrize("text", AWKWARD)
def test_round_trip_is_lossless(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize("text", AWKWARD)
def test_token_bytes_concatenate_to_the_utf8_text(tokenizer, text):
    ids = tokenizer.encode(text)
    assert b"".join(tokenizer.token_bytes[i] for i in ids) == text.encode("utf-8")


def test_typed_end_of_text_is_not_the_special_token(tokenizer):
    assert tokenizer.eot_id not in tokenizer.encode(END_OF_TEXT)


def test_lone_surrogates_become_replacement_characters(tokenizer):
    text = "bad \ud800 half \udfff pair"
    assert tokenizer.decode(tokenizer.encode(text)) == "bad \ufffd half \ufffd pair"


@pytest.mark.parametrize("text", AWKWARD)
def test_stream_decoder_matches_decode_and_never_splits_a_character(tokenizer, text):
    decoder = tokenizer.stream_decoder()
    pieces = list(decoder.decode_all(tokenizer.encode(text)))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_multibyte_character_is_split_over_tokens_and_held_back(tokenizer):
    ids = tokenizer.encode("😀")
    assert len(ids) > 1  # a 300-token vocabulary has no merge for it
    decoder = tokenizer.stream_decoder()
    assert [decoder.feed(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert decoder.feed(ids[-1]) == "😀"


def test_render_makes_whitespace_and_bytes_visible(tokenizer):
    assert tokenizer.render(tokenizer.encode(" ")[0]) == "␣"
    assert tokenizer.render(tokenizer.encode("\n")[0]) == "↵"
    assert tokenizer.render(tokenizer.eot_id) == END_OF_TEXT
    first_emoji_byte = tokenizer.encode("😀")[0]
    assert tokenizer.render(first_emoji_byte).startswith("\\x")


def test_training_respects_vocab_size_and_learns_frequent_words():
    tok = Tokenizer.train(["the cat sat on the mat. " * 200], 300)
    assert 257 <= tok.vocab_size <= 300
    assert len(tok.encode(" the cat")) < len(b" the cat")  # merges happened


def test_vocab_below_bytes_plus_special_is_rejected():
    with pytest.raises(SettingError, match="at least 257"):
        Tokenizer.train(["some text"], 100)


def test_save_and_load_give_the_same_encoding(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    text = "The cat finds 😀 the moon."
    assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.eot_id == tokenizer.eot_id


def test_batch_encoding_equals_single_encoding(tokenizer):
    texts = ["one text", "another 😀", ""]
    assert tokenizer.encode_batch(texts) == [tokenizer.encode(t) for t in texts]
