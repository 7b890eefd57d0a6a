"""Shared fixtures: a small corpus, a real tokenizer and a real tiny model trained on it.

Everything a test writes goes to a temporary folder: TEXTGEN_HOME points there, so no
test touches the repo's models/ folder.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import TINY, make_corpus

from textgen.settings import TrainConfig

# Tests press Ctrl-C in the commands they start, as a user at a terminal would. A suite
# started in the background (`make test &`) inherits SIGINT ignored, and so would every
# command it starts (a process that finds SIGINT ignored keeps it so): catch it here
# instead, so the commands start with SIGINT at its default, as at a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
    from textgen.text.corpus import open_corpus
    from textgen.training.run import train

    folder = tmp_path_factory.mktemp("models") / "tiny"
    config = TrainConfig(
        steps=200, time_budget=None, batch_size=16, eval_interval=100, seed=0, bpe_dropout=0.0
    )
    with open_corpus([str(corpus_file)]) as corpus:
        train(folder, corpus, config, TINY, vocab_size=300)
    return folder


@pytest.fixture(scope="session")
def lm(trained_folder):
    from textgen.store.folder import load

    return load(trained_folder)


@pytest.fixture(scope="session")
def tokenizer(lm):
    return lm.tokenizer
