"""A trained model in the formats other tools run. Each format is one record
(`textgen.export.format.Format`) in a module of its own, listed in `FORMATS`: a Hugging
Face transformers folder (`hf.py`) and a GGUF file for llama.cpp and what is built on it
(`gguf.py`). A new format is a new module and one entry here.

Each format has architectures that compute exactly what textgen's model computes, with the
weights rearranged; a model whose settings have no exact equivalent there is refused,
naming the setting: an export never computes different logits. Nothing is written in
place: the output is built beside its destination and renamed into it when whole.

Importing this package imports no torch (the command line lists the formats at once).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textgen.errors import SettingError, TextgenError
from textgen.export import gguf, hf
from textgen.export.format import Format, Target
from textgen.files import WriteError, atomic_write, why_not
from textgen.settings import ModelConfig
from textgen.store.guard import refuse_model

if TYPE_CHECKING:
    from textgen.model.loaded import LoadedModel

FORMATS: dict[str, Format] = {f.name: f for f in (hf.FORMAT, gguf.FORMAT)}


def choose_format(out: Path, name: str | None = None) -> Format:
    """The format named, or the one OUT's suffix says (a folder format otherwise)."""
    if name is not None:
        if name not in FORMATS:
            raise SettingError(f"{{name}}: use one of {', '.join(FORMATS)}", "format")
        return FORMATS[name]
    suffix = out.suffix.lower()
    files = [f for f in FORMATS.values() if f.is_file and f.suffix == suffix]
    return (files or [f for f in FORMATS.values() if not f.is_file])[0]


def target_for(config: ModelConfig, form: Format) -> Target:
    """The architecture that runs this model exactly in `form`; an error naming the
    setting that none has."""
    if config.qk_norm:
        raise TextgenError(
            "qk_norm: no architecture in transformers or llama.cpp normalises queries and "
            "keys this way; only textgen can run this model"
        )
    if config.logit_softcap is not None:
        raise TextgenError(
            f"logit_softcap {config.logit_softcap:g}: the exported architectures have no "
            "soft cap on the logits; only textgen can run this model"
        )
    for target in form.targets:
        if not _mismatches(config, target):
            return target
    closest = min(form.targets, key=lambda t: len(_mismatches(config, t)))
    names = ", ".join(f"{k} {getattr(config, k)!r}" for k in _mismatches(config, closest))
    raise TextgenError(
        f"{names}: {form.tool}'s {closest.name} architecture, the nearest, has "
        + ", ".join(f"{k} {getattr(closest, k)!r}" for k in _mismatches(config, closest))
        + "; this model cannot be exported exactly"
    )


def _mismatches(config: ModelConfig, target: Target) -> list[str]:
    return [
        k for k in ("position", "norm", "activation") if getattr(config, k) != getattr(target, k)
    ]


def check_destination(out: Path, form: Format, overwrite: bool) -> None:
    """Before any work: OUT is new, or (with --overwrite) a previous export in this format.
    Nothing else is ever replaced: a textgen model, a folder holding one or a file of one
    least of all (`textgen.store.guard`)."""
    empty = out.is_dir() and not out.is_symlink() and not any(out.iterdir())
    if not out.exists() or (empty and not form.is_file):
        return  # new, or an empty folder for a folder export: nothing there to lose
    refuse_model(out, str(out))
    if form.is_file and out.is_dir():
        raise TextgenError(
            f"{out} is a folder; a {form.title} export is a file, e.g. {out}{form.suffix}"
        )
    if not form.is_file and not out.is_dir():
        raise TextgenError(f"{out} is a file; an export to {form.tool} is a folder")
    if not form.is_export(out):
        raise TextgenError(
            f"{out} exists and is not a {form.title} export, so it is never replaced; "
            "choose another destination"
        )
    if not overwrite:
        raise TextgenError(
            f"{out} holds an earlier {form.title} export; add --overwrite to replace it"
        )


def _write_folder(out: Path, write: Callable[[Path], None]) -> None:
    """`write(folder)` into a new folder beside `out`, put in its place when whole."""
    from textgen.store.writer import Staging

    staging = Staging(out)
    try:
        write(staging.create())
        try:
            staging.publish()
        except OSError as exc:
            reason = why_not(exc, out.parent)
            raise WriteError(f"could not write {out} ({reason})", reason) from None
    finally:
        staging.discard()


def export(lm: LoadedModel, out: Path, name: str | None = None, dtype: str | None = None) -> Target:
    """Write `lm` to `out` in the format `name` (None: the one OUT's suffix says), its
    weights in `dtype` (None: the format's first); returns the architecture it was
    written as."""
    form = choose_format(out, name)
    dtype = dtype or form.dtypes[0]
    if dtype not in form.dtypes:
        raise SettingError(
            f"{{name}}: a {form.title} export is {' or '.join(form.dtypes)}", "dtype"
        )
    target = target_for(lm.model_config, form)
    if form.is_file:
        atomic_write(out, lambda path: form.write(lm, path, target, dtype))
    else:
        _write_folder(out, lambda folder: form.write(lm, folder, target, dtype))
    return target
