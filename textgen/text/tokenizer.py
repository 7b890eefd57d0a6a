"""Text <-> token ids: a thin wrapper over a byte-level BPE from HF `tokenizers`.

Three verbs (train, encode, decode) plus save/load, and the two things a viewer needs:
the raw bytes of each token and a printable rendering of it.

Byte-level BPE starts from the 256 byte values, so any text (emoji, CJK, control
characters) encodes losslessly, and training merges the most frequent adjacent pairs:

    "low lower lowest" -> bytes -> merges ("l","o"), ("lo","w"), ... -> ["low", " low", "er", ...]

Token 0 is `<|endoftext|>`, placed between documents during training and before each
prompt, so the model knows where a text begins.
"""

from __future__ import annotations

import atexit
import codecs
import hashlib
import re
import threading
import time
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from textgen.errors import TextgenError
from textgen.records import Callback, Notice, Working
from textgen.settings import check_vocab_size
from textgen.text.corpus import Corpus

END_OF_TEXT = "<|endoftext|>"
# Training reads at most this much text, sampled evenly from the whole corpus: the merges
# it learns are settled long before, and its word counts would otherwise grow with the
# corpus.
SAMPLE_BYTES = 256 * 2**20
_SURROGATES = re.compile("[\ud800-\udfff]")


LONGEST_PRETOKEN = 256  # bytes: longer pre-tokens are cut while learning merges
PROGRESS_SECONDS = 0.25
STOP_SECONDS = 5  # at most, for the trainer to stop reading (it takes a chunk's time)


class _Stopped(Exception):
    """Raised in the trainer's reading: training was stopped."""


# Trainer threads, and whether one was left behind by an interruption. The interpreter must
# not shut down under a trainer: its threads (Rust's too) would be cancelled inside Rust's
# frames, which aborts the process.
_TRAINERS: set[threading.Thread] = set()
_ABANDONED = threading.Event()


def trainer_abandoned() -> bool:
    """Whether tokenizer training was interrupted in this process: its threads may still
    be in Rust, so a process about to exit should leave at once (`os._exit`) rather than
    shut the interpreter down."""
    return _ABANDONED.is_set()


@atexit.register
def _wait_for_trainers() -> None:
    """A library caller's process, exiting: let the trainer finish rather than abort."""
    for thread in list(_TRAINERS):
        if thread.is_alive():
            thread.join()


def _byte_level() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False)


def _call(function, *args):  # noqa: ANN001, ANN202
    """function(*args), or the exception it raised (for a thread to hand back)."""
    try:
        return function(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        return exc


def clean_text(text: str) -> str:
    """Replace lone surrogates (which cannot be UTF-8 encoded) with U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte -> printable-character table."""
    return {char: byte for byte, char in enumerate(_byte_alphabet())}


def _byte_alphabet() -> list[str]:
    # GPT-2's table: printable bytes map to themselves, the others to unused code points.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {}
    shift = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shift)
            shift += 1
    return [table[b] for b in range(256)]


class Tokenizer:
    """A byte-level BPE tokenizer. `Tokenizer.train(texts, 2048)` or `Tokenizer.load(path)`."""

    def __init__(self, hf: HFTokenizer) -> None:
        self._hf = hf
        # Text that spells "<|endoftext|>" is ordinary text: only textgen places the token.
        hf.encode_special_tokens = True
        eot = hf.token_to_id(END_OF_TEXT)
        if eot is None:
            raise TextgenError(f"the tokenizer has no {END_OF_TEXT} token; retrain it with textgen")
        self.eot_id: int = eot

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> Tokenizer:
        """Learn `vocab_size` tokens from `texts`: byte-level BPE with GPT-2's split into
        words, numbers and punctuation.

        While learning, a pre-token longer than `LONGEST_PRETOKEN` bytes (a line without
        spaces, a base64 blob) is cut into pieces of that length: BPE's cost grows with
        the length of its words, and one word of megabytes would take an hour. Encoding
        keeps the plain GPT-2 split (as every other tool reads it); the merges learned
        apply to long words all the same."""
        check_vocab_size(vocab_size)
        hf = HFTokenizer(models.BPE())
        split_long = pre_tokenizers.Split(Regex(f".{{1,{LONGEST_PRETOKEN}}}"), "isolated")
        hf.pre_tokenizer = pre_tokenizers.Sequence([_byte_level(), split_long])
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[END_OF_TEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator((clean_text(t) for t in texts), trainer=trainer)
        hf.pre_tokenizer = _byte_level()
        return cls(hf)

    @classmethod
    def train_on(cls, corpus: Corpus, vocab_size: int, report: Callback) -> Tokenizer:
        """Train on a corpus (an even sample of it beyond SAMPLE_BYTES), reporting
        `Notice` and `Working` events. Training runs in a thread of its own (the merges are
        learned in Rust, which lets go of the interpreter): the caller's thread reports
        progress meanwhile and Ctrl-C stops it at once."""
        report(Notice(f"training a byte-level BPE tokenizer with {vocab_size} tokens"))
        started = time.perf_counter()
        total = corpus.total_bytes
        if total > SAMPLE_BYTES:
            report(Notice(f"the tokenizer learns from an even sample of {SAMPLE_BYTES >> 20} MB"))
        read, stop = [0], threading.Event()

        def texts() -> Iterator[str]:
            for chunk in corpus.texts(SAMPLE_BYTES, lambda done: read.__setitem__(0, done)):
                if stop.is_set():  # asked to stop: end the trainer's reading, from its thread
                    raise _Stopped
                yield chunk

        outcome: list = []
        worker = threading.Thread(
            target=lambda: outcome.append(_call(cls.train, texts(), vocab_size)), daemon=True
        )
        _TRAINERS.add(worker)
        try:  # from before the start: an interrupt may land between any two bytecodes
            worker.start()
            while worker.is_alive():
                worker.join(PROGRESS_SECONDS)
                if read[0] < total:
                    report(Working("training the tokenizer: reading", read[0], total))
                else:
                    report(Working("training the tokenizer: learning merges", 0, 0))
        except BaseException:
            # The trainer must not be reading when the interpreter goes: a call from Rust
            # into a Python that is shutting down aborts the process. While it learns the
            # merges it calls nothing, and ends with the process.
            stop.set()
            _ABANDONED.set()
            if worker.is_alive():
                worker.join(STOP_SECONDS if read[0] < total else 0)
            raise
        _TRAINERS.discard(worker)
        tokenizer = outcome[0]
        if isinstance(tokenizer, BaseException):
            raise tokenizer
        elapsed = time.perf_counter() - started
        report(Notice(f"tokenizer trained: {tokenizer.vocab_size} tokens in {elapsed:.1f}s"))
        return tokenizer

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exceptions
            raise TextgenError(f"{path}: not a readable tokenizer file ({exc})") from None
        return cls(hf)

    def save(self, path: Path) -> None:
        self._hf.save(str(path))

    def to_json(self) -> str:
        return self._hf.to_str()

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size()

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the tokenizer's vocabulary, merges and settings."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(clean_text(text), add_special_tokens=False).ids

    def encode_document(self, text: str) -> list[int]:
        """`text` as the model sees a document: the end-of-text marker, then its tokens."""
        return [self.eot_id, *self.encode(text)]

    def encode_batch(self, texts: list[str], clean: bool = True) -> list[list[int]]:
        """Encode several texts at once, on all cores. `clean=False` skips the search for
        lone surrogates, for text decoded from UTF-8 (which cannot hold any)."""
        if clean:
            texts = [clean_text(t) for t in texts]
        # the fast variant skips character offsets, which only cost time and memory here
        encode = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def with_bpe_dropout(self, p: float) -> Tokenizer:
        """A copy that skips each merge with probability p, so the same text gets a
        different segmentation each time it is encoded (BPE-dropout, Provilkov et al.)."""
        hf = HFTokenizer.from_str(self.to_json())
        hf.model.dropout = p
        return Tokenizer(hf)

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")

    @cached_property
    def token_bytes(self) -> list[bytes]:
        """The exact bytes each token id stands for (the special token stands for none)."""
        to_byte = _byte_decoder()
        out = []
        for i in range(self.vocab_size):
            token = self._hf.id_to_token(i)
            if token is None or i == self.eot_id:
                out.append(b"")
            else:
                out.append(bytes(to_byte[c] for c in token))
        return out

    def token_text(self, token_id: int) -> str:
        """The token's own text; bytes that are not whole UTF-8 characters become U+FFFD."""
        if token_id == self.eot_id:
            return END_OF_TEXT
        return self.token_bytes[token_id].decode("utf-8", errors="replace")

    @cached_property
    def max_token_bytes(self) -> int:
        return max(len(b) for b in self.token_bytes)

    def render(self, token_id: int) -> str:
        """A printable, unambiguous rendering of one token: ' the' -> '␣the', '\\n' -> '↵'."""
        if token_id == self.eot_id:
            return END_OF_TEXT
        return render_bytes(self.token_bytes[token_id])

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self.token_bytes)


_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def render_bytes(data: bytes) -> str:
    """Render token bytes so whitespace and partial UTF-8 sequences are visible."""
    text = data.decode("utf-8", errors="backslashreplace")
    out = []
    for char in text:
        if char in _VISIBLE:
            out.append(_VISIBLE[char])
        elif not char.isprintable():
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


class StreamDecoder:
    """Turns token ids into text as they arrive, holding back incomplete UTF-8 sequences.

    A byte-level token can end in the middle of a character (an emoji is 4 bytes, often
    split over 2 tokens); printing each token on its own would print replacement marks.
    """

    def __init__(self, token_bytes: list[bytes]) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._decoder.decode(self._token_bytes[token_id])

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)

    def decode_all(self, ids: Iterable[int]) -> Iterator[str]:
        for i in ids:
            piece = self.feed(i)
            if piece:
                yield piece
        tail = self.flush()
        if tail:
            yield tail
