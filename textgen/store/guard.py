"""What no write replaces: a textgen model's folder and its files.

Every command that writes a file the user names (an export, `--save`, `--html`, a
tokenizer) asks here first. A folder that is a textgen model (its config.json is one
textgen wrote), holds one, or a file of one, is never replaced, with or without
--overwrite: a model is replaced only by training a new one into its folder
(`textgen train --overwrite`, which swaps the whole folder at once).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from textgen.errors import SettingError, TextgenError
from textgen.store.layout import CONFIG, MODEL_FILES

MAX_CONFIG_BYTES = 16 * 2**20  # a config.json larger than this is no textgen config


def textgen_config(path: Path) -> dict | None:
    """config.json as textgen writes it (a JSON object with a format version), or None
    (missing, unreadable, or some other program's)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and "format_version" in data else None


def is_model_folder(folder: Path) -> bool:
    """A folder of textgen's: a trained model, or a tokenizer waiting for one."""
    return textgen_config(folder / CONFIG) is not None


def model_at(path: Path) -> Path | None:
    """The textgen model folder that `path` is, holds (one level down), or is a file of
    (config.json, the weights, ...); None for anything else."""
    if path.is_dir():
        if is_model_folder(path):
            return path
        try:
            children = [p for p in os.scandir(path) if p.is_dir(follow_symlinks=False)]
        except OSError:
            return None
        return next((Path(c.path) for c in children if is_model_folder(Path(c.path))), None)
    if path.name in MODEL_FILES and is_model_folder(path.parent):
        return path.parent
    return None


def refuse_model(path: Path, shown: str) -> None:
    """A TextgenError, naming the path as `shown` ("--save pic.png"), if `path` (or, for a
    symlink, what it points to) is, holds or belongs to a textgen model."""
    real = Path(os.path.realpath(path))
    model = model_at(real)
    if model is None:
        return
    if model == real:
        what = "is a textgen model's folder"
    elif model == real.parent and not real.is_dir():
        what = f"is a file of the model in {model}"
    else:
        what = f"holds a textgen model ({model.name})"
    if real != path.absolute():
        what = f"(a link to {real}) {what}"
    raise TextgenError(
        f"{shown} {what}; nothing replaces a model but training one "
        "(textgen train --overwrite): choose another path"
    )


def check_new_file(path: Path, option: str, what: str, overwrite: bool) -> None:
    """A file that `option` is to write: never a folder nor a model's file, and an
    existing file only with --overwrite (nothing the user had is replaced unasked).
    `what`: "a .png file"."""
    if path.is_dir():
        raise SettingError(f"{option} {path}: that is a folder; name {what}")
    if path.exists():
        refuse_model(path, f"{option} {path}")
        if not overwrite:
            raise SettingError(f"{option} {path}: the file exists; pass --overwrite to replace it")
