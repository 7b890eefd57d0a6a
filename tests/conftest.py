"""Shared fixtures: a small corpus, a real tokenizer and a real tiny model trained on it.

Everything a test writes goes to a temporary folder: TEXTGEN_HOME points there, so no
test touches the repo's models/ folder.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from textgen.config import TrainConfig

TINY = dict(context_window=32, n_layer=2, n_embd=64, n_head=4)


def train_command(corpus: Path | str, folder: Path, *options: str) -> list[str]:
    """`textgen train` of a tiny model on `corpus` into `folder`, as a subprocess argv."""
    return [
        sys.executable,
        "-m",
        "textgen",
        "train",
        str(corpus),
        "--model",
        str(folder),
        "--size",
        "tiny",
        "--context",
        "32",
        "--vocab-size",
        "300",
        *options,
    ]


def make_corpus(n_sentences: int = 600, seed: int = 0) -> str:
    """Simple, learnable English: a few hundred sentences from a small grammar."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the old fox", "my friend", "the bird", "a child"]
    verbs = ["sees", "likes", "chases", "finds", "follows", "watches"]
    objects = ["the ball", "a red hat", "the river", "some bread", "the moon", "a small box"]
    places = ["in the garden", "by the sea", "at night", "after lunch", "near the house"]
    lines = []
    for _ in range(n_sentences):
        sentence = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}"
        if rng.random() < 0.5:
            sentence += f" {rng.choice(places)}"
        lines.append(sentence.capitalize() + ".")
    return "\n".join(" ".join(lines[i : i + 4]) for i in range(0, len(lines), 4)) + "\n"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Encoded corpora are cached in a temporary folder, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEXTGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTGEN_HOME", str(tmp_path / "models"))
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    path.write_text(make_corpus(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_folder(tmp_path_factory, corpus_file) -> Path:
    """A tiny model (2 layers, 64 wide, context 32) trained for 200 steps (a few seconds)."""
    from textgen.corpus import open_corpus
    from textgen.train import train

    folder = tmp_path_factory.mktemp("models") / "tiny"
    config = TrainConfig(steps=200, time_budget=None, batch_size=16, eval_interval=100, seed=0)
    with open_corpus([str(corpus_file)]) as corpus:
        train(folder, corpus, config, dict(TINY), vocab_size=300)
    return folder


@pytest.fixture(scope="session")
def lm(trained_folder):
    from textgen import modeldir

    return modeldir.load(trained_folder)


@pytest.fixture(scope="session")
def tokenizer(lm):
    return lm.tokenizer
