"""Files that are never seen half-written, and folders with one writer at a time.

Every write goes to a temporary file in the same folder, is flushed to disk, and is then
renamed over its target (`os.replace` is atomic on one filesystem): a crash at any moment
leaves the previous file whole, and at worst a temporary file that `remove_temporaries`
clears up. A write that fails (a full disk, a read-only folder) is a `WriteError` that
says why in words, whatever library did the writing.
"""

from __future__ import annotations

import datetime
import errno
import functools
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textgen.errors import TextgenError

LOW_SPACE_BYTES = 1 << 20  # a failed write with less free than this: the disk is full


class WriteError(TextgenError):
    """A file could not be written; the previous version of it is intact."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # why, in a few words: "No space left on device"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it over `path` (a
    symlink there is replaced, never written through: what it points to is untouched)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        reason = why_not(exc, path.parent)
        raise WriteError(f"{path.parent}: cannot write there ({reason})", reason) from None
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # as any new file: mkstemp made it private
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError | RuntimeError) or _disk_full(path.parent, exc):
            reason = why_not(exc, path.parent)
            raise WriteError(f"could not write {path} ({reason})", reason) from None
        raise


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _disk_full(folder: Path, exc: BaseException) -> bool:
    """A library's own error for a write that failed on a full disk (safetensors has one)."""
    if not isinstance(exc, Exception) or isinstance(exc, TextgenError):
        return False
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def why_not(exc: BaseException, folder: Path) -> str:
    """Why a write failed, in words. Libraries that write for themselves (torch,
    safetensors) report a full disk as a generic failure: the free space tells."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.strerror or os.strerror(exc.errno)
    if _disk_full(folder, exc):
        return os.strerror(errno.ENOSPC)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def remove_temporaries(folder: Path) -> None:
    """Delete the temporary files a killed process left behind (see `atomic_write`)."""
    if folder.is_dir():
        for path in folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)


def check_writable(folder: Path, files: frozenset[str] = frozenset()) -> None:
    """A WriteError now, before any work, where no file can be made in `folder` (read-only,
    immutable, a read-only mount) or one of its `files` there cannot be replaced (an
    immutable or append-only file): later, it would cost the run."""
    path = folder
    try:
        fd, tmp = tempfile.mkstemp(prefix=".textgen-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
        for name in sorted(files):
            path = folder / name
            if path.exists() and not path.is_symlink():
                # setting a file's times to what they are changes nothing, and is refused
                # where the file is immutable, append-only or not the user's to change
                times = path.stat()
                os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
    except OSError as exc:
        reason = why_not(exc, folder)
        raise WriteError(f"{path}: cannot write there ({reason})", reason) from None


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(finite(data), indent=2, allow_nan=False) + "\n")


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class FolderBusy(TextgenError):
    """Another process is writing the folder."""


class FolderLock:
    """An exclusive lock on a folder, for as long as one process writes it (a context
    manager). It lives in a file beside the folder (`.NAME.lock`), so it holds whatever
    becomes of the folder itself, and the kernel releases it when its process ends,
    however it ends: the holder's process gone, the lock is free."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        place = folder.resolve()  # `.` has a name too
        self.path = place.parent / f".{place.name}.lock"
        self._file: Any = None

    def __enter__(self) -> FolderLock:
        while True:
            handle = self._open()
            if not _try_lock(handle):
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise FolderBusy(
                    f"{self.folder} is being written by {holder}; wait for it to finish, "
                    "or use another --model"
                )
            if _same_file(handle, self.path):
                break
            handle.close()  # its holder removed it as we opened it: take the new one
        started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        command = " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200]
        handle.seek(0)
        handle.truncate()
        handle.write(f"textgen (pid {os.getpid()}, since {started}: {command})")
        handle.flush()
        self._file = handle
        return self

    def _open(self) -> Any:
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            return open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until exit
        except OSError as exc:
            reason = why_not(exc, self.folder.parent)
            raise WriteError(
                f"{self.folder.parent}: cannot write there ({reason})", reason
            ) from None

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)  # while still held: nobody else has it yet
            self._file.close()  # closing releases the lock
            self._file = None


def _same_file(handle: Any, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


def _try_lock(handle: Any) -> bool:
    """An exclusive, non-blocking lock on an open file: flock where there is one (the
    kernel drops it with its process), msvcrt's byte lock on Windows."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
