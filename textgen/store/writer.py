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
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from textgen.errors import TextgenError
from textgen.files import WriteError, check_writable, why_not
from textgen.store.guard import textgen_config
from textgen.store.layout import CONFIG, METRICS, MODEL_FILES, TOKENIZER, WEIGHTS

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
        foreign = [n for n in names if n not in MODEL_FILES | SYSTEM_FILES and n not in temporary]
        config = textgen_config(folder / CONFIG) if CONFIG in names else None
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


class Staging:
    """A folder beside `target` where a new model is built, put in place by `publish`.
    A symlinked target is followed: the new model is built beside the folder the link
    points to and takes that folder's place, the link left as it was."""

    def __init__(self, target: Path) -> None:
        self.target = target  # as the user named it, for messages
        self.place = target.resolve()  # where the folder really is
        self.path = self.place.parent / f".{self.place.name}.new-{os.getpid()}"
        self.published = False

    def create(self) -> Path:
        """An empty staging folder (the leftovers of runs that died, removed), once it is
        clear that the new model can be put in place: the first write of a run, so an
        unwritable place is found before any work."""
        for leftover in self.place.parent.glob(f".{self.place.name}.new-*"):
            if leftover == self.path or not _running(leftover.name.rpartition("-")[2]):
                shutil.rmtree(leftover, ignore_errors=True)
        if self.place.exists():
            if os.path.ismount(self.place):
                raise TextgenError(
                    f"{self.target} is a mount point, so a new model cannot take its place; "
                    f"train into a folder inside it (--model {self.target / 'NAME'})"
                )
            check_writable(self.place, MODEL_FILES)  # its old files go once replaced
        try:
            self.path.mkdir(parents=True)
        except OSError as exc:
            folder, reason = self.place.parent, why_not(exc, self.place.parent)
            raise WriteError(f"{folder}: cannot write there ({reason})", reason) from None
        return self.path

    def publish(self) -> Path:
        """Put the staging folder in place of the target, and remove what it replaces."""
        if not self.place.exists():
            os.replace(self.path, self.place)
        elif not _exchange(self.path, self.place):
            # no atomic exchange here: two renames, the old model aside for the moment between
            aside = self.path.with_name(self.path.name.replace(".new-", ".old-"))
            os.replace(self.place, aside)
            os.replace(self.path, self.place)
            os.replace(aside, self.path)
        shutil.rmtree(self.path, ignore_errors=True)  # the old model, now at self.path
        self.published = True
        return self.target

    def discard(self) -> None:
        if not self.published:
            shutil.rmtree(self.path, ignore_errors=True)


def _running(pid: str) -> bool:
    """Whether the process `pid` (a staging folder's suffix) is still running."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OverflowError:
        return False
    except PermissionError:
        return True  # another user's process, alive
    return True


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
