"""The recipe on many kinds of text: classic vs textgen's default over a suite of corpora.

    python benchmarks/corpus_suite.py                          # 1 and 5 minutes, every corpus
    python benchmarks/corpus_suite.py --budgets 1m --corpora builtin fortunes-en
    python benchmarks/corpus_suite.py --variants classic default default+dropout-0.1

Each corpus's last 10 % is held out (never trained on) and scored by a full pass in bits
per byte, as `train_quality.py` does; each row is the median over --seeds. The summary
gives, per budget, each corpus's ratio default / classic and their geometric mean.

The corpora, each built once into the cache folder (--cache, default
~/.cache/textgen-bench) and reused:

- builtin: the built-in corpus (English technical prose, Python's documentation).
- stdlib-3mb: source code: the running CPython's standard library `.py` files, tests and
  site-packages left out, in sorted path order, up to 3 MB (so: deterministic for a given
  Python version; the table names it).
- fortunes-en: short documents: Debian's `fortunes` package (English quotations and
  jokes), its text files in sorted order.
- fortunes-de: another language: Debian's `fortunes-de` (German), the same way.
- stdlib-30mb: a larger corpus, where data is not the limit: every `.py` file of the
  standard library, tests included, sorted, up to 30 MB.

The Debian packages are fetched with `apt-get download PACKAGE` (no root needed; it uses
the machine's apt sources) into the cache and unpacked with `dpkg-deb -x`; nothing is
installed. The classic recipe is nanoGPT's, at the level of characters (Unicode code
points, for German too).
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch
from train_quality import VARIANTS, run_seeds, split_text

from textgen.model.device import keep_freed_memory
from textgen.text.corpus import open_corpus
from textgen.units import parse_duration

CORPORA = [
    "builtin",
    "kjv-prose",
    "kjv-verse",
    "stdlib-3mb",
    "fortunes-en",
    "fortunes-de",
    "stdlib-30mb",
]
# Literary text: slices of the King James Bible (Debian's bible-kjv-text, read with the
# `bible` program of bible-kjv), one verse a line, verse numbers left out, each chapter
# under its heading: narrative prose (Genesis to Judges) and verse (Job to Lamentations:
# the poetic and prophetic books).
KJV_SLICES = {"kjv-prose": "gen1:1-judg21:25", "kjv-verse": "job1:1-lam5:22"}
# Corpora outside the suite, to check rules set on it (`--corpora jargon`): never part of
# the default list, so no rule is measured on them first. The Jargon File (Debian's
# jargon-text, public domain): 1.7 MB of English prose, a glossary of hacker slang with
# tables drawn in box characters.
OUTSIDE = ["jargon"]


def stdlib_files(with_tests: bool) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix())
    skip = {"site-packages"} if with_tests else {"site-packages", "test", "tests", "idle_test"}
    return [p for p in files if not skip & set(p.relative_to(root).parts)]


def concatenated(files: list[Path], limit: int) -> str:
    parts, size = [], 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text.encode("utf-8"))
        if size >= limit:
            break
    return "".join(parts)


def debian_texts(package: str, subfolder: str, cache: Path) -> str:
    """The text files of a Debian fortunes package: fetched with apt-get download,
    unpacked with dpkg-deb -x, the .dat indexes and .u8 links left out."""
    folder = _unpacked(package, cache) / subfolder
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
    )
    return "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


def _unpacked(package: str, cache: Path) -> Path:
    """A Debian package fetched with apt-get download and unpacked into the cache."""
    unpacked = cache / package
    if not unpacked.exists():
        cache.mkdir(parents=True, exist_ok=True)
        # unpacked beside the cache entry and renamed into place: a failed or concurrent
        # fetch never leaves a half-unpacked package behind
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run(
                ["apt-get", "download", package], cwd=tmp, check=True, capture_output=True
            )
            deb = next(Path(tmp).glob("*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/root"], check=True)
            try:
                Path(tmp, "root").rename(unpacked)
            except OSError:  # another process put it in place first
                if not unpacked.is_dir():
                    raise
    return unpacked


def kjv_text(books: str, cache: Path) -> str:
    """A range of the King James Bible as plain text: chapter headings, then one verse a
    line without its number."""
    program = _unpacked("bible-kjv", cache) / "usr/bin/bible"
    data = _unpacked("bible-kjv-text", cache) / "usr/lib"
    out = subprocess.run(
        [str(program), "-p", str(data), "-l100000", books], check=True, capture_output=True
    ).stdout.decode("utf-8", errors="replace")
    lines = (re.sub(r"^\s+\d+ ", "", line) for line in out.splitlines())
    return "\n".join(lines).strip() + "\n"


def corpus_text(name: str, cache: Path) -> str:
    path = cache / f"{name}.txt"
    if path.exists():
        return path.read_text(encoding="utf-8")
    if name == "builtin":
        with open_corpus([]) as corpus:
            text = "".join(corpus.texts())
    elif name == "stdlib-3mb":
        text = concatenated(stdlib_files(with_tests=False), 3 * 10**6)
    elif name == "stdlib-30mb":
        text = concatenated(stdlib_files(with_tests=True), 30 * 10**6)
    elif name in KJV_SLICES:
        text = kjv_text(KJV_SLICES[name], cache)
    elif name == "fortunes-en":
        text = debian_texts("fortunes", "usr/share/games/fortunes", cache)
    elif name == "fortunes-de":
        text = debian_texts("fortunes-de", "usr/share/games/fortunes/de", cache)
    elif name == "jargon":
        packed = _unpacked("jargon-text", cache) / "usr/share/doc/jargon-text/jargon.txt.gz"
        text = gzip.decompress(packed.read_bytes()).decode("utf-8", errors="replace")
    else:
        raise SystemExit(f"unknown corpus {name}; known: {', '.join(CORPORA + OUTSIDE)}")
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=CORPORA)
    parser.add_argument("--budgets", nargs="+", default=["1m", "5m"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", default=["classic", "default"])
    parser.add_argument(
        "--cache", type=Path, default=Path(os.path.expanduser("~/.cache/textgen-bench"))
    )
    args = parser.parse_args()
    unknown = [
        p for v in args.variants if v != "classic" for p in v.split("+") if p not in VARIANTS
    ]
    if unknown:
        sys.exit(f"unknown variants {unknown}; see train_quality.py's VARIANTS")
    keep_freed_memory()  # as textgen train does, for every recipe alike
    texts = {name: corpus_text(name, args.cache) for name in args.corpora}
    print(
        f"Python {sys.version.split()[0]}, {torch.get_num_threads()} threads, "
        f"seeds {args.seeds} (medians)"
    )
    for name, text in texts.items():
        print(f"  {name:<12} {len(text.encode()):>12,} bytes, {len(set(text)):>6,} characters")
    print(
        f"{'budget':>6}  {'corpus':<12} {'variant':<24}{'params':>8}{'tokens':>9}"
        f"{'bpb':>8}{'vs classic':>11}",
        flush=True,
    )
    ratios: dict[tuple[str, str], list[float]] = {}
    for budget_text in args.budgets:
        budget = parse_duration(budget_text)
        for name, text in texts.items():
            train_text, held_out = split_text(text)
            classic = None
            for variant in args.variants:
                runs = run_seeds(variant, train_text, held_out, budget, args.seeds)
                bpb = statistics.median(r["bpb"] for r in runs)
                params = statistics.median(r["params"] for r in runs)
                tokens = statistics.median(r["tokens"] for r in runs)
                classic = bpb if variant == "classic" else classic
                ratio = bpb / classic if classic else math.nan  # nan: classic not run
                if variant != "classic" and classic:
                    ratios.setdefault((budget_text, variant), []).append(ratio)
                spread = ""
                if len(runs) > 1:
                    spread = (
                        f"  ({min(r['bpb'] for r in runs):.3f}-{max(r['bpb'] for r in runs):.3f})"
                    )
                print(
                    f"{budget_text:>6}  {name:<12} {variant:<24}{params / 1e6:>7.2f}M"
                    f"{tokens / 1e6:>8.2f}M{bpb:>8.3f}{ratio:>10.2f}x{spread}",
                    flush=True,
                )
    print("\nsummary: bits per byte, variant / classic")
    for (budget_text, variant), values in ratios.items():
        geometric = math.exp(sum(math.log(v) for v in values) / len(values))
        cells = "  ".join(f"{n} {v:.2f}x" for n, v in zip(texts, values, strict=True))
        print(f"  {budget_text:>4} {variant:<20} {cells}  geometric mean {geometric:.2f}x")


if __name__ == "__main__":
    main()
