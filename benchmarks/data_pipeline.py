"""The data pipeline at scale: throughput and peak memory on a corpus larger than comfort.

    python benchmarks/data_pipeline.py               # a 1 GB synthetic corpus
    python benchmarks/data_pipeline.py --size 200MB  # a quicker look
    python benchmarks/data_pipeline.py --corpus big.txt

It writes a synthetic English-like corpus (Zipf-distributed words in sentences and
paragraphs, every byte freshly drawn, in a temporary folder removed afterwards), then runs
each stage in its own process and reports its throughput and peak resident memory (RSS):

- tokenizer: `Tokenizer.train_on` (an even sample of at most 256 MB of the corpus);
- raw encode: `tokenizers` batch encoding of the same 1 MB chunks, results discarded: the
  ceiling for the encoding stage;
- textgen encode: reading, encoding and writing the memory-mapped token file (cold cache);
- cached: the same call again (hashing the corpus to find the cached file);
- train: `textgen train` for 20 steps on the cached tokens (start-up, model, first steps).

Targets (issue #7): peak RSS under 1.5 GB at 1 GB, textgen encode >= 80 % of raw encode.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = 50_000
VOCAB_SIZE = 8192


def make_corpus(path: Path, size: int, seed: int = 0) -> None:
    """Zipf-distributed pseudo-words (letters drawn by English frequency) in sentences of
    5-25 words, paragraphs of 2-8 sentences."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    weights = 1 / np.arange(1, 27) ** 0.9
    lengths = rng.integers(1, 11, WORDS)
    vocab = np.array(
        ["".join(rng.choice(letters, n, p=weights / weights.sum())) for n in lengths],
        dtype=object,
    )
    ranks = 1 / np.arange(1, WORDS + 1) ** 1.1
    ranks /= ranks.sum()
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < size:
            words = vocab[rng.choice(WORDS, 400_000, p=ranks)]
            sentence_ends = np.cumsum(rng.integers(5, 26, 40_000))
            sentence_ends = sentence_ends[sentence_ends < len(words)]
            pieces = np.split(words, sentence_ends)
            paragraphs = []
            for i in range(0, len(pieces), 5):
                sentences = [" ".join(p).capitalize() + "." for p in pieces[i : i + 5] if len(p)]
                paragraphs.append(" ".join(sentences))
            block = "\n\n".join(paragraphs) + "\n\n"
            out.write(block)
            written += len(block.encode("utf-8"))


# -- the stages, each run in a child process (`--stage NAME`) ---------------------------------


def stage_tokenizer(corpus_path: str, work: Path) -> dict:
    from textgen.text.corpus import open_corpus
    from textgen.text.tokenizer import SAMPLE_BYTES, Tokenizer

    with open_corpus([corpus_path]) as corpus:
        tokenizer = Tokenizer.train_on(corpus, VOCAB_SIZE, lambda event: None)
        bytes_read = min(corpus.total_bytes, SAMPLE_BYTES)
    tokenizer.save(work / "tokenizer.json")
    return {"bytes": bytes_read}


def stage_raw(corpus_path: str, work: Path) -> dict:
    """tokenizers' batch encoding of the corpus's chunks, as textgen reads them."""
    from tokenizers import Tokenizer as HFTokenizer

    from textgen.text.corpus import open_corpus

    hf = HFTokenizer.from_file(str(work / "tokenizer.json"))
    batch_chunks = max(8, 2 * (os.cpu_count() or 1))
    with open_corpus([corpus_path]) as corpus:
        tokens, seconds = 0, 0.0
        for batch in _chunk_batches(corpus, batch_chunks):
            started = time.perf_counter()  # the encoding alone, not the reading
            encodings = hf.encode_batch_fast(batch, add_special_tokens=False)
            seconds += _since(started)
            tokens += sum(len(e.ids) for e in encodings)
        return {"bytes": corpus.total_bytes, "tokens": tokens, "seconds": seconds}


def _chunk_batches(corpus, size: int):
    batch: list[str] = []
    for chunk in corpus.texts():
        batch.append(chunk)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def stage_encode(corpus_path: str, work: Path) -> dict:
    from textgen.text.corpus import open_corpus
    from textgen.text.tokenizer import Tokenizer
    from textgen.text.tokens import cached_encoding

    tokenizer = Tokenizer.load(work / "tokenizer.json")
    with open_corpus([corpus_path]) as corpus:
        started = time.perf_counter()
        token_file, cached = cached_encoding(corpus, tokenizer)
        seconds = _since(started)
        return {
            "bytes": corpus.total_bytes,
            "tokens": token_file.n_tokens,
            "cached": cached,
            "seconds": seconds,
        }


STAGES = {"tokenizer": stage_tokenizer, "raw": stage_raw, "encode": stage_encode}


def _since(started: float) -> float:
    return time.perf_counter() - started


def run_stage(argv: list[str], env: dict) -> tuple[dict, float, float]:
    """Run a child process; return its JSON result (if any), wall seconds, peak RSS in MB."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env)
        out = child.stdout.read() if child.stdout else b""
        _, status, usage = os.wait4(child.pid, 0)
        seconds = _since(started)
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            sys.exit(f"{' '.join(argv[-2:])} failed:\n{log.read().decode()[-2000:]}")
    lines = out.decode().strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return result, seconds, usage.ru_maxrss / 1024  # Linux reports KB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GB", help="synthetic corpus size (1GB, 200MB)")
    parser.add_argument("--corpus", help="use this file instead of a synthetic corpus")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # in a child process
        print(json.dumps(STAGES[args.stage](args.corpus, Path(args.work))))
        return

    with tempfile.TemporaryDirectory(prefix="textgen-pipeline-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, TEXTGEN_CACHE=str(work / "cache"), TEXTGEN_HOME=str(work))
        if args.corpus:
            corpus = args.corpus
        else:
            corpus = str(work / "corpus.txt")
            size = parse_size(args.size)
            started = time.perf_counter()
            make_corpus(Path(corpus), size)
            print(f"generated {size / 1e6:,.0f} MB of synthetic text in {_since(started):.0f}s")
        total = os.path.getsize(corpus)
        print(
            f"corpus: {total / 1e6:,.0f} MB; {os.cpu_count()} CPUs; "
            f"peak RSS of `python -c 'import torch'` shown as the floor"
        )
        stage = [sys.executable, __file__, "--corpus", corpus, "--work", str(work), "--stage"]
        rows = []
        _, _, floor = run_stage([sys.executable, "-c", "import torch, tokenizers"], env)
        rows.append(("import torch + tokenizers", None, None, floor))

        result, wall, rss = run_stage([*stage, "tokenizer"], env)
        rows.append(("tokenizer training (sample)", result["bytes"], wall, rss))
        raw, _, raw_rss = run_stage([*stage, "raw"], env)
        rows.append(("raw tokenizers encode_batch", raw["bytes"], raw["seconds"], raw_rss))
        cold, _, cold_rss = run_stage([*stage, "encode"], env)
        rows.append(("textgen encode (to token file)", cold["bytes"], cold["seconds"], cold_rss))
        warm, _, warm_rss = run_stage([*stage, "encode"], env)
        assert warm["cached"] and not cold["cached"]
        rows.append(("textgen encode, cached (hash)", warm["bytes"], warm["seconds"], warm_rss))

        folder = work / "model"
        folder.mkdir()
        (folder / "tokenizer.json").write_bytes((work / "tokenizer.json").read_bytes())
        train = [sys.executable, "-m", "textgen", "train", corpus, "--model", str(folder)]
        _, wall, rss = run_stage([*train, "--steps", "20", "--eval-interval", "1000"], env)
        rows.append(("textgen train, 20 steps (cached)", None, wall, rss))

        print(f"\n{'stage':<34}{'MB':>8}{'seconds':>9}{'MB/s':>8}{'peak RSS':>11}")
        for name, nbytes, seconds, rss in rows:
            mb = f"{nbytes / 1e6:,.0f}" if nbytes else ""
            secs = f"{seconds:.1f}" if seconds is not None else ""
            speed = f"{nbytes / 1e6 / seconds:.1f}" if nbytes and seconds else ""
            print(f"{name:<34}{mb:>8}{secs:>9}{speed:>8}{rss:>8,.0f} MB")
        ratio = raw["seconds"] / cold["seconds"]
        peak = max(rss for name, _, _, rss in rows if name.startswith(("textgen", "tokenizer")))
        print(
            f"\ntokens: {cold['tokens']:,} ({total / cold['tokens']:.2f} bytes/token); "
            f"textgen encode at {ratio:.0%} of raw encode_batch throughput (target >= 80%); "
            f"peak RSS {peak:,.0f} MB (target < 1536 MB)"
        )


def parse_size(text: str) -> int:
    units = {"KB": 1e3, "MB": 1e6, "GB": 1e9}
    text = text.strip().upper()
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


if __name__ == "__main__":
    main()
