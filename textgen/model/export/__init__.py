"""A trained model in the formats other tools run: a Hugging Face transformers folder
(`hf.py`) and a GGUF file for llama.cpp and what is built on it (`gguf.py`).

Each format has architectures that compute exactly what textgen's model computes, with the
weights rearranged; a model whose settings have no exact equivalent there is refused,
naming the setting: an export never computes different logits. Nothing is written in
place: the output is built beside its destination and renamed into it when whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from textgen.errors import SettingError, TextgenError
from textgen.files import WriteError, atomic_write, why_not
from textgen.model.folder import LoadedModel
from textgen.model.writer import Staging
from textgen.settings import ModelConfig

FORMATS = ("hf", "gguf")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The files an export folder holds: `--overwrite` replaces a folder of these alone.
HF_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
)


@dataclass(frozen=True)
class Target:
    """An architecture in another tool that computes what a textgen model computes."""

    name: str  # as the other tool names it
    position: str
    norm: str
    activation: str


ARCEE = Target("arcee", position="rope", norm="rmsnorm", activation="relu2")
GPT2 = Target("gpt2", position="learned", norm="layernorm", activation="gelu")
TARGETS = {"hf": (ARCEE, GPT2), "gguf": (ARCEE,)}


def target_for(config: ModelConfig, form: str) -> Target:
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
    targets = TARGETS[form]
    for target in targets:
        if (config.position, config.norm, config.activation) == (
            target.position,
            target.norm,
            target.activation,
        ):
            return target
    closest = min(targets, key=lambda t: _differences(config, t))
    names = ", ".join(f"{k} {getattr(config, k)!r}" for k in _mismatches(config, closest))
    tool = "transformers" if form == "hf" else "llama.cpp"
    raise TextgenError(
        f"{names}: {tool}'s {closest.name} architecture, the nearest, has "
        + ", ".join(f"{k} {getattr(closest, k)!r}" for k in _mismatches(config, closest))
        + "; this model cannot be exported exactly"
    )


def _mismatches(config: ModelConfig, target: Target) -> list[str]:
    return [
        k for k in ("position", "norm", "activation") if getattr(config, k) != getattr(target, k)
    ]


def _differences(config: ModelConfig, target: Target) -> int:
    return len(_mismatches(config, target))


def check_destination(out: Path, form: str, overwrite: bool) -> None:
    """Before any work: OUT is new, or --overwrite replaces a previous export (never a
    folder or file of anything else)."""
    if not out.exists():
        return
    if not overwrite:
        raise TextgenError(f"{out} already exists; add --overwrite to replace it")
    if form == "hf":
        if not out.is_dir():
            raise TextgenError(f"{out} is a file; an export to transformers is a folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in HF_FILES)
        if foreign:
            raise TextgenError(
                f"{out} holds files an export does not write ({', '.join(foreign[:3])}); "
                "choose another destination"
            )
    elif out.is_dir():
        raise TextgenError(f"{out} is a folder; a GGUF export is a file, e.g. {out}.gguf")


def write_folder(out: Path, write: Callable[[Path], None]) -> None:
    """`write(folder)` into a new folder beside `out`, put in its place when whole."""
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


def write_file(out: Path, write: Callable[[Path], None]) -> None:
    """`write(path)` into a temporary file beside `out`, renamed to it when whole."""
    atomic_write(out, write)


def tensor(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A weight as an export holds it: on the CPU, contiguous, in `dtype`."""
    return weight.detach().to("cpu", dtype).contiguous()


def export(lm: LoadedModel, out: Path, form: str, dtype: str = "float32") -> Target:
    """Write `lm` to `out` in `form` (hf or gguf), in `dtype`; returns the architecture
    it was written as."""
    if form not in FORMATS:
        raise SettingError(f"--format: use one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise SettingError(f"--dtype: use one of {', '.join(DTYPES)}")
    target = target_for(lm.model_config, form)
    if form == "hf":
        from textgen.model.export import hf

        write_folder(out, lambda folder: hf.write(lm, folder, target, DTYPES[dtype]))
    else:
        from textgen.model.export import gguf

        if dtype == "bfloat16":
            raise SettingError("--dtype: a GGUF export is float32 or float16")
        write_file(out, lambda path: gguf.write(lm, path, DTYPES[dtype]))
    return target
