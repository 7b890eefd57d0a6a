"""A model ready to run, as decoding, evaluation, export and serving take it: weights,
tokenizer and what its folder's config.json says about them (`textgen.store.folder.load`
builds one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textgen.model.transformer import Transformer
from textgen.settings import ModelConfig
from textgen.text.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    """A model ready to run: weights, tokenizer and what config.json says about them."""

    folder: Path
    model: Transformer
    tokenizer: Tokenizer
    config: dict[str, Any]

    @property
    def model_config(self) -> ModelConfig:
        return self.model.config
