"""The model folder: save, load and validate, with atomic writes.

    models/NAME/
        config.json         architecture, tokenizer summary, training settings, format version
        model.safetensors   weights (never a pickle: loading a model runs no code)
        tokenizer.json      the HF `tokenizers` file, loadable by any HF tool
        train_state.pt      optimizer, step and RNG state for resuming (weights_only load)
        metrics.jsonl       one line per evaluation

Every write is atomic (`textgen.files`), so a crash at any moment leaves the last good
file whole.

torch is imported only by the functions that build or save a model, so listing models and
reading their configuration stays instant.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textgen.errors import SettingError, TextgenError
from textgen.files import atomic_write, finite, write_json, write_text
from textgen.settings import ModelConfig
from textgen.text.tokenizer import Tokenizer

if TYPE_CHECKING:
    import torch

    from textgen.model.transformer import Transformer

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TRAIN_STATE = "train_state.pt"
METRICS = "metrics.jsonl"


def models_home() -> Path:
    """Where `--model NAME` lives: $TEXTGEN_HOME, or ./models."""
    return Path(os.environ.get("TEXTGEN_HOME", "models"))


def resolve(name: str) -> Path:
    """'tiny' -> models/tiny; './m', '/data/m' or '~/m' -> that folder."""
    if not name or not name.strip():
        raise SettingError("--model needs a name or a folder path")
    if os.sep in name or "/" in name or name.startswith(("~", ".")):
        return Path(name).expanduser()
    return models_home() / name


def has_weights(folder: Path) -> bool:
    return (folder / WEIGHTS).exists()


def save_tokenizer(folder: Path, tokenizer: Tokenizer) -> None:
    write_text(folder / TOKENIZER, tokenizer.to_json())


def load_tokenizer(folder: Path) -> Tokenizer:
    path = folder / TOKENIZER
    if not path.exists():
        raise TextgenError(f"{path}: missing; train one with `textgen train` or `tokenizer train`")
    return Tokenizer.load(path)


def _weights_to_save(model: Transformer) -> dict[str, torch.Tensor]:
    state = dict(model.state_dict())
    if model.config.tie_embeddings:
        del state["unembed.weight"]  # the same tensor as embed.weight
    return state


def save_weights(folder: Path, model: Transformer) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in _weights_to_save(model).items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(state, str(tmp), {"format": "pt"}))


def save_config(folder: Path, model_config: ModelConfig, tokenizer: Tokenizer, **extra) -> None:
    data = {
        "format_version": FORMAT_VERSION,
        "model": model_config.to_dict(),
        "tokenizer": {
            "type": "byte-level-bpe",
            "vocab_size": tokenizer.vocab_size,
            "end_of_text_id": tokenizer.eot_id,
        },
        **extra,
    }
    write_json(folder / CONFIG, data)


def read_config(folder: Path) -> dict[str, Any]:
    """Read and validate config.json (before anything is built from it)."""
    path = folder / CONFIG
    if not folder.exists():
        raise TextgenError(f"{folder}: no such model folder (see `textgen models`)")
    if not path.exists():
        raise TextgenError(f"{path}: missing; this folder holds no trained model")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TextgenError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TextgenError(f"{path}: expected a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise TextgenError(
            f"{path}: format version {version!r}, this textgen reads version {FORMAT_VERSION}"
        )
    if not isinstance(data.get("model"), dict):
        raise TextgenError(f"{path}: no 'model' section")
    try:
        data["model_config"] = ModelConfig.from_dict(data["model"])
    except (TypeError, SettingError) as exc:
        raise TextgenError(f"{path}: bad model settings: {exc}") from None
    return data


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


def load(folder: Path, device: torch.device | None = None, dtype: str = "float32") -> LoadedModel:
    """Load and validate a model folder; every mismatch is an error naming the file.
    `dtype` is float32, bfloat16, float16 or auto (see `textgen.model.device.inference_dtype`)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from textgen.model.device import inference_dtype
    from textgen.model.transformer import Transformer

    config = read_config(folder)
    model_config: ModelConfig = config["model_config"]
    tokenizer = load_tokenizer(folder)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise TextgenError(
            f"{folder / TOKENIZER}: {tokenizer.vocab_size} tokens, but the model expects "
            f"{model_config.vocab_size}; the tokenizer belongs to another model"
        )
    path = folder / WEIGHTS
    if not path.exists():
        raise TextgenError(f"{path}: missing; the model was never saved (train it first)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise TextgenError(f"{path}: unreadable or truncated ({exc})") from None
    model = Transformer(model_config, init_weights=False)  # the weights come from the file
    expected = _weights_to_save(model)
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, config says {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise TextgenError(f"{path}: does not match config.json: {'; '.join(problems[:3])}")
    model.load_state_dict(state, strict=False, assign=True)
    if model_config.tie_embeddings:
        model.unembed.weight = model.embed.weight
    device = device or torch.device("cpu")
    model.to(device, inference_dtype(dtype, device, model.num_parameters())).eval()
    return LoadedModel(folder=folder, model=model, tokenizer=tokenizer, config=config)


def save_train_state(folder: Path, state: dict[str, Any]) -> None:
    import torch

    atomic_write(folder / TRAIN_STATE, lambda tmp: torch.save(state, tmp))


def load_train_state(folder: Path) -> dict[str, Any]:
    path = folder / TRAIN_STATE
    if not path.exists():
        raise TextgenError(f"{path}: missing; this model cannot be resumed (use --overwrite)")
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds here: unpickling, zip, EOF
        raise TextgenError(f"{path}: unreadable or truncated ({exc})") from None


def count_parameters(folder: Path) -> int:
    """The number of parameters in model.safetensors, read from its header alone."""
    path = folder / WEIGHTS
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
    except (OSError, ValueError) as exc:
        raise TextgenError(f"{path}: unreadable or truncated ({exc})") from None
    return sum(
        math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__"
    )


def append_metrics(folder: Path, record: dict[str, Any]) -> None:
    with open(folder / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(finite(record)) + "\n")


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """All complete lines of metrics.jsonl (a line cut short by a crash is skipped)."""
    path = folder / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
