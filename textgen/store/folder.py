"""The model folder: save, load and validate, with atomic writes.

    models/NAME/
        config.json         architecture, tokenizer summary, training settings, format version
        model.safetensors   weights (never a pickle: loading a model runs no code)
        tokenizer.json      the HF `tokenizers` file, loadable by any HF tool
        train_state.pt      optimizer, step and RNG state for resuming (weights_only load)
        metrics.jsonl       one line per evaluation (`textgen.store.metrics`)

Every write is atomic (`textgen.files`), so a crash at any moment leaves the last good
file whole.

torch is imported only by the functions that build or save a model, so listing models and
reading their configuration stays instant.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textgen.errors import SettingError, TextgenError
from textgen.files import atomic_write, write_json, write_text
from textgen.settings import ModelConfig
from textgen.store.layout import (  # noqa: F401 - the names, for this module's users
    CONFIG,
    FORMAT_VERSION,
    METRICS,
    SAMPLES,
    TOKENIZER,
    TRAIN_STATE,
    WEIGHTS,
)
from textgen.text.tokenizer import Tokenizer

if TYPE_CHECKING:
    import torch

    from textgen.model.loaded import LoadedModel
    from textgen.model.transformer import Transformer


def models_home() -> Path:
    """Where `--model NAME` lives: $TEXTGEN_HOME, or ./models."""
    given = os.environ.get("TEXTGEN_HOME")
    if given is not None and not given.strip():
        raise TextgenError(
            "TEXTGEN_HOME is set but empty; set it to a folder, or unset it to keep models "
            "in ./models"
        )
    home = Path(given or "models").expanduser()
    if home.exists() and not home.is_dir():
        raise TextgenError(
            f"TEXTGEN_HOME={given}: a file, not a folder; point it at a folder of models"
            if given
            else f"{home.resolve()}: a file, not a folder of models; set TEXTGEN_HOME to a folder"
        )
    return home


def where_models_live() -> str:
    """Where `--model NAME` looks, and how to look elsewhere, for messages."""
    return (
        f"models are looked for in {models_home().resolve()}; set TEXTGEN_HOME to look "
        "elsewhere, or give a folder's path (--model ./my-model)"
    )


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


def tokenizer_summary(tokenizer: Tokenizer, **extra: Any) -> dict[str, Any]:
    """config.json's "tokenizer" section: its kind, size, end-of-text id and hash."""
    return {
        "type": "byte-level-bpe",
        "vocab_size": tokenizer.vocab_size,
        "end_of_text_id": tokenizer.eot_id,
        "sha256": tokenizer.fingerprint,
        **extra,
    }


def save_config(folder: Path, model_config: ModelConfig, tokenizer: Tokenizer, **extra) -> None:
    data = {
        "format_version": FORMAT_VERSION,
        "model": model_config.to_dict(),
        "tokenizer": tokenizer_summary(tokenizer),
        **extra,
    }
    write_json(folder / CONFIG, data)


def save_tokenizer_only(folder: Path, tokenizer: Tokenizer, corpus: str, fingerprint: str) -> None:
    """A folder holding a tokenizer alone (`textgen tokenizer train`): tokenizer.json, and a
    config.json that records the corpus it was trained on, so that `textgen train` reuses
    it for that corpus only."""
    save_tokenizer(folder, tokenizer)
    summary = tokenizer_summary(tokenizer, corpus=corpus, corpus_fingerprint=fingerprint)
    write_json(folder / CONFIG, {"format_version": FORMAT_VERSION, "tokenizer": summary})


def survey(home: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The models in `home`, each summed up from its config and its weights' header (no
    weights are read), and what is wrong with the folders that hold none."""
    summaries, problems = [], []
    for folder in published(home):
        try:
            meta = read_config(folder)
            parameters = count_parameters(folder)
        except TextgenError as exc:
            problems.append(str(exc))
            continue
        model, training = meta["model_config"], meta["training"]
        summaries.append(
            {
                "name": folder.name,
                "path": str(folder.resolve()),
                "parameters": parameters,
                "n_layer": model.n_layer,
                "n_embd": model.n_embd,
                "n_head": model.n_head,
                "vocab_size": model.vocab_size,
                "context_window": model.context_window,
                "steps": training.get("steps", 0),
                "val_bits_per_byte": training.get("val_bits_per_byte"),
            }
        )
    return summaries, problems


def published(home: Path) -> list[Path]:
    """The model folders in `home`, in name order: not the hidden ones (a run's staging
    folder, `.NAME.new-PID`, among them), and only those with a config.json."""
    try:
        entries = sorted(home.iterdir())
    except OSError:
        return []
    return [p for p in entries if not p.name.startswith(".") and (p / CONFIG).is_file()]


def tokenizer_record(folder: Path) -> dict[str, Any]:
    """What config.json says of the folder's tokenizer ({} where it says nothing)."""
    try:
        record = read_json_config(folder).get("tokenizer")
    except TextgenError:
        return {}
    return record if isinstance(record, dict) else {}


def read_json_config(folder: Path) -> dict[str, Any]:
    """config.json as a JSON object of this format version (a model's, or a tokenizer's)."""
    path = folder / CONFIG
    if not folder.exists():
        raise TextgenError(f"{folder}: no such model folder ({where_models_live()})")
    if not folder.is_dir():
        raise TextgenError(f"{folder}: a file, not a model folder")
    if not path.exists():
        raise TextgenError(f"{path}: missing; this folder holds no trained model")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TextgenError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise TextgenError(f"{path}: not a config textgen wrote (nested too deeply)") from None
    except OSError as exc:
        raise TextgenError(f"{path}: cannot read it ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise TextgenError(f"{path}: expected a JSON object")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TextgenError(
            f"{path}: format_version should be the number {FORMAT_VERSION}, not {version!r}"
        )
    if version != FORMAT_VERSION:
        raise TextgenError(
            f"{path}: format version {version}, but this textgen reads version {FORMAT_VERSION}"
        )
    return data


def read_config(folder: Path) -> dict[str, Any]:
    """Read and validate a model's config.json before anything is built from it: every
    model setting present, of its type and in its range; the tokenizer summary's types;
    and the training summary kept to the entries a command can show."""
    path = folder / CONFIG
    data = read_json_config(folder)
    if "model" not in data and isinstance(data.get("tokenizer"), dict):
        raise TextgenError(
            f"{folder}: holds a tokenizer only; train a model with it: "
            f"textgen train CORPUS --model {folder}"
        )
    if not isinstance(data.get("model"), dict):
        raise TextgenError(f"{path}: no 'model' section")
    try:
        data["model_config"] = ModelConfig.from_dict(data["model"])
    except (TypeError, SettingError) as exc:
        raise TextgenError(f"{path}: bad model settings: {exc}") from None
    tokenizer = data.get("tokenizer", {})
    wrong = not isinstance(tokenizer, dict) or any(
        not isinstance(tokenizer.get(key, 0), int) or isinstance(tokenizer.get(key), bool)
        for key in ("vocab_size", "end_of_text_id")
    )
    if wrong or not isinstance(tokenizer.get("sha256", ""), str):
        raise TextgenError(f"{path}: bad tokenizer summary")
    data["training"] = _training_summary(data.get("training"))
    return data


# The training summary's entries and their types: anything else (a hand edit) is left out.
_TRAINING_NUMBERS = ("train_loss", "val_loss", "val_bits_per_byte", "elapsed_seconds")
_TRAINING_COUNTS = ("steps", "tokens_seen", "corpus_bytes", "train_tokens", "val_tokens")


def _training_summary(training: Any) -> dict[str, Any]:
    if not isinstance(training, dict):
        return {}
    kept = {}
    for key, value in training.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key in _TRAINING_COUNTS and isinstance(value, int) and not isinstance(value, bool):
            kept[key] = value
        elif key in _TRAINING_NUMBERS and number and math.isfinite(value):
            kept[key] = float(value)
        elif key not in _TRAINING_COUNTS + _TRAINING_NUMBERS:
            kept[key] = value
    if "val_loss" not in kept:
        kept.pop("val_bits_per_byte", None)  # shown together
    return kept


def load(folder: Path, device: torch.device | None = None, dtype: str = "float32") -> LoadedModel:
    """Load and validate a model folder; every mismatch is an error naming the file.
    Everything is checked against config.json before a single weight is allocated: the
    tokenizer's size and hash, the shapes in the weights file's header, and the memory.
    `dtype` is float32, bfloat16, float16 or auto (see `textgen.model.device.inference_dtype`)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from textgen.model.cpu_step import CpuStep, lay_out_for_steps
    from textgen.model.device import inference_dtype
    from textgen.model.loaded import LoadedModel
    from textgen.model.transformer import Transformer

    config = read_config(folder)
    model_config: ModelConfig = config["model_config"]
    tokenizer = load_tokenizer(folder)
    _check_tokenizer(folder, tokenizer, model_config, config["tokenizer"])
    path = folder / WEIGHTS
    if not path.exists():
        raise TextgenError(f"{path}: missing; the model was never saved (train it first)")
    _check_memory(folder, model_config)
    with torch.device("meta"):  # the expected shapes, without allocating anything
        skeleton = Transformer(model_config, init_weights=False)
    expected = {k: tuple(v.shape) for k, v in _weights_to_save(skeleton).items()}
    _check_shapes(path, expected)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise TextgenError(f"{path}: unreadable or truncated ({exc})") from None
    model = Transformer(model_config, init_weights=False)  # the weights come from the file
    model.load_state_dict(state, strict=False, assign=True)
    if model_config.tie_embeddings:
        model.unembed.weight = model.embed.weight
    device = device or torch.device("cpu")
    model.to(device, inference_dtype(dtype, device)).eval()
    if CpuStep.for_model(model):
        lay_out_for_steps(model)
    return LoadedModel(folder=folder, model=model, tokenizer=tokenizer, config=config)


def _check_tokenizer(
    folder: Path, tokenizer: Tokenizer, model_config: ModelConfig, summary: dict[str, Any]
) -> None:
    if tokenizer.vocab_size != model_config.vocab_size:
        raise TextgenError(
            f"{folder / TOKENIZER}: {tokenizer.vocab_size} tokens, but the model expects "
            f"{model_config.vocab_size}; the tokenizer belongs to another model"
        )
    if summary.get("sha256") not in (None, tokenizer.fingerprint):  # older folders: no hash
        raise TextgenError(
            f"{folder / TOKENIZER}: not the tokenizer this model was trained with (its hash "
            "differs from config.json's); put the model's own tokenizer.json back"
        )


def _check_memory(folder: Path, model_config: ModelConfig) -> None:
    from textgen.model.device import memory_bytes

    needed, available = 4 * model_config.parameters(), memory_bytes()
    if available is not None and needed > available:
        raise TextgenError(
            f"{folder / CONFIG}: a model of this shape needs {needed / 2**30:,.1f} GB, more "
            f"than this machine's {available / 2**30:,.1f} GB"
        )


def _check_shapes(path: Path, expected: dict[str, tuple[int, ...]]) -> None:
    found = {name: tuple(entry["shape"]) for name, entry in read_header(path).items()}
    problems = [f"missing {k}" for k in expected if k not in found]
    problems += [f"unexpected {k}" for k in found if k not in expected]
    problems += [
        f"{k} has shape {found[k]}, config says {shape}"
        for k, shape in expected.items()
        if k in found and found[k] != shape
    ]
    if problems:
        raise TextgenError(f"{path}: does not match config.json: {'; '.join(problems[:3])}")


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file holds (name -> dtype, shape, offsets), from its
    header alone."""
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if not 2 <= header_len <= min(path.stat().st_size - 8, 100 * 2**20):
                raise ValueError("bad header length")
            header = json.loads(f.read(header_len))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        for entry in tensors.values():
            shape = entry["shape"]
            if not all(isinstance(n, int) and n >= 0 for n in shape):
                raise ValueError("bad shape")
    except RecursionError:
        raise TextgenError(f"{path}: unreadable (its header is nested too deeply)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TextgenError(f"{path}: unreadable or truncated ({exc})") from None
    return tensors


def save_train_state(folder: Path, state: dict[str, Any]) -> None:
    import torch

    atomic_write(folder / TRAIN_STATE, lambda tmp: torch.save(state, tmp))


def load_train_state(folder: Path) -> dict[str, Any]:
    path = folder / TRAIN_STATE
    if not path.exists():
        raise TextgenError(f"{path}: missing; this model cannot be resumed (use --overwrite)")
    import torch

    try:
        with warnings.catch_warnings():  # torch warns of what it refuses: the line says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many kinds here (unpickling, zip, EOF), with advice
        state = None  # that does not apply: textgen never loads a pickle that runs code
    step = state.get("step") if isinstance(state, dict) else None
    elapsed = state.get("elapsed", 0) if isinstance(state, dict) else None
    counts = isinstance(step, int) and not isinstance(step, bool) and step >= 0
    if not counts or not isinstance(elapsed, int | float) or not 0 <= elapsed < math.inf:
        raise TextgenError(
            f"{path}: unreadable or damaged, so this run cannot be resumed; the model itself "
            "still loads: train a new one with --overwrite"
        )
    return state


def count_parameters(folder: Path) -> int:
    """The number of parameters in model.safetensors, read from its header alone."""
    return sum(math.prod(entry["shape"]) for entry in read_header(folder / WEIGHTS).values())
