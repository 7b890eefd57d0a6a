"""What an export format is: one record per format (`Format`), declared in the format's
own module, and the architectures of other tools that compute what a textgen model
computes (`Target`). Imports no torch, so the command line can list the formats
instantly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from textgen.model.loaded import LoadedModel


@dataclass(frozen=True)
class Target:
    """An architecture in another tool that computes what a textgen model computes."""

    name: str  # as the other tool names it
    position: str
    norm: str
    activation: str


ARCEE = Target("arcee", position="rope", norm="rmsnorm", activation="relu2")
GPT2 = Target("gpt2", position="learned", norm="layernorm", activation="gelu")


@dataclass(frozen=True)
class Format:
    """An export format: what it is called, what it writes, what it can export and how
    the tool that reads it loads it."""

    name: str  # the value of --format
    title: str  # as people name it ("GGUF")
    summary: str  # what it is, for --help
    tool: str  # the program that runs it, for messages
    targets: tuple[Target, ...]  # the architectures it can hold, nearest first
    dtypes: tuple[str, ...]  # the weights' precisions it takes, the default first
    # write(lm, out, target, dtype): into `out`, a new file or folder (see `suffix`)
    write: Callable[[LoadedModel, Path, Target, str], None]
    loading: str  # how to run the export, with {out} for its path, {context} the window
    # is_export(path): whether `path` holds an export of this format (what --overwrite
    # may replace; nothing else is ever replaced)
    is_export: Callable[[Path], bool]
    suffix: str | None = None  # a file with this suffix; None: a folder

    @property
    def is_file(self) -> bool:
        return self.suffix is not None

    @property
    def precisions(self) -> str:
        """The dtypes it takes, as a sentence says them: "float32, float16 or bfloat16"."""
        return f"{', '.join(self.dtypes[:-1])} or {self.dtypes[-1]}"


def tensor(weight: torch.Tensor, dtype: str) -> torch.Tensor:
    """A weight as an export holds it: on the CPU, contiguous, in `dtype` (float32, ...)."""
    import torch

    return weight.detach().to("cpu", getattr(torch, dtype)).contiguous()
