"""Writing a new model into a folder without ever losing what the folder held.

- One writer at a time: a run holds `textgen.files.FolderLock` on the folder.
- Only textgen's own files are ever replaced: a folder holding anything else is refused,
  and one whose config.json or metrics.jsonl textgen did not write needs --overwrite.
- Nothing is replaced until its replacement is complete: a new model is built in a
  staging folder beside its target (`.NAME.new-PID`), and swapped into place at its
  first complete checkpoint (weights, config and training state), in one atomic rename
  where the system has one. A run that dies before that leaves the folder as it was.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from textgen.errors import TextgenError
from textgen.files import WriteError, why_not
from textgen.store.folder import CONFIG, METRICS, TOKENIZER, TRAIN_STATE, WEIGHTS

OWN_FILES = frozenset({CONFIG, WEIGHTS, TOKENIZER, TRAIN_STATE, METRICS})
SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # written by file browsers


@dataclass
class FolderContents:
    """What a folder holds, as far as training into it is concerned."""

    exists: bool
    foreign: list[str]  # files textgen never writes
    not_ours: list[str]  # textgen's names, but not textgen's content
    has_model: bool  # config.json and model.safetensors of a trained model
    has_tokenizer: bool

    @classmethod
    def of(cls, folder: Path) -> FolderContents:
        if folder.exists() and not folder.is_dir():
            raise TextgenError(f"--model {folder}: a file, not a folder; choose another --model")
        if not folder.exists():
            return cls(False, [], [], False, False)
        try:
            names = sorted(p.name for p in folder.iterdir())
        except OSError as exc:
            raise TextgenError(f"{folder}: cannot read it ({exc.strerror})") from None
        temporary = [n for n in names if n.startswith(".") and n.endswith(".tmp")]
        foreign = [n for n in names if n not in OWN_FILES | SYSTEM_FILES and n not in temporary]
        config = _config(folder / CONFIG) if CONFIG in names else None
        not_ours = []
        if CONFIG in names and config is None:
            not_ours.append(CONFIG)
        if METRICS in names and config is None:
            not_ours.append(METRICS)
        has_model = config is not None and "model" in config and WEIGHTS in names
        return cls(True, foreign, not_ours, has_model, TOKENIZER in names)

    def check(self, folder: Path, overwrite: bool) -> None:
        """Refuse to train into a folder where that would lose something of the user's."""
        if self.foreign:
            shown = ", ".join(self.foreign[:3]) + (", ..." if len(self.foreign) > 3 else "")
            raise TextgenError(
                f"{folder} holds files textgen did not write ({shown}); a model gets a folder "
                "of its own: choose another --model"
            )
        if self.not_ours and not overwrite:
            raise TextgenError(
                f"{folder} holds {' and '.join(self.not_ours)} that textgen did not write; "
                "add --overwrite to replace them, or choose another --model"
            )
        if self.has_model and not overwrite:
            raise TextgenError(
                f"{folder} already holds a trained model; add --resume to continue training "
                "it or --overwrite to replace it"
            )


def _config(path: Path) -> dict | None:
    """config.json as textgen writes it (a JSON object with a format version), or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "format_version" in data else None


class Staging:
    """A folder beside `target` where a new model is built, put in place by `publish`."""

    def __init__(self, target: Path) -> None:
        self.target = target
        place = target.resolve()
        self.path = place.parent / f".{place.name}.new-{os.getpid()}"
        self.published = False

    def create(self) -> Path:
        """An empty staging folder (and a leftover of a run that died, removed): the
        first write of a run, so an unwritable place is found before any work."""
        for leftover in self.path.parent.glob(f".{self.target.resolve().name}.new-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            self.path.mkdir(parents=True)
        except OSError as exc:
            folder, reason = self.target.parent, why_not(exc, self.target.parent)
            raise WriteError(f"{folder}: cannot write there ({reason})", reason) from None
        return self.path

    def publish(self) -> Path:
        """Put the staging folder in place of the target, and remove what it replaces."""
        if not self.target.exists():
            os.replace(self.path, self.target)
        elif not _exchange(self.path, self.target):
            # no atomic exchange here: two renames, the old model aside for the moment between
            aside = self.path.with_name(self.path.name.replace(".new-", ".old-"))
            os.replace(self.target, aside)
            os.replace(self.path, self.target)
            os.replace(aside, self.path)
        shutil.rmtree(self.path, ignore_errors=True)  # the old model, now at self.path
        self.published = True
        return self.target

    def discard(self) -> None:
        if not self.published:
            shutil.rmtree(self.path, ignore_errors=True)


RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux's renameat2 RENAME_EXCHANGE); False where
    the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # no such call, or filesystem
        return False
    raise OSError(code, os.strerror(code), str(b))
