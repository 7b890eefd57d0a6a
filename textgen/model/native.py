"""The decoding step in C (`step.c`): built with this machine's C compiler on first use,
kept in textgen's cache folder (`$TEXTGEN_CACHE`, else ~/.cache/textgen), and called
through ctypes.

A decoding step of a small model is a few dozen operations on a few hundred numbers: in
NumPy each costs a few microseconds of dispatch, more than its arithmetic, so the step
costs that many dispatches. In C it is one call (benchmarks/decode_speed.py has the
figures). The library is built once per machine (a second or two), for this CPU
(`-march=native`; the CPU's identity is in the file's name, so a cache folder shared by
machines never hands one a library built for another; one that does not load is built
again). The compiler is $CC where it is set (with its arguments), else cc, gcc or clang;
one that fails, or takes over a minute, is given up on. Where none works, or with
TEXTGEN_NATIVE=0, `library()` is None and decoding steps run in NumPy.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from textgen.text.tokens import cache_folder

SOURCE = Path(__file__).with_name("step.c")
# -ffp-contract=fast: a * b + c as one fused multiply-add wherever the CPU has one, in
# vector and scalar code alike (ISO C mode would turn it off)
FLAGS = ["-O3", "-std=c11", "-ffp-contract=fast", "-fopenmp-simd", "-shared", "-fPIC"]
TUNED = ["-march=native"]  # dropped where the compiler does not take it


class Model(ctypes.Structure):
    """step.c's `Model`, field for field."""

    _fields_ = [
        *[(name, ctypes.c_int64) for name in ("n_layer", "n_embd", "n_head", "hidden")],
        *[(name, ctypes.c_int64) for name in ("vocab", "window", "rows")],
        *[(name, ctypes.c_int64) for name in ("rms", "relu2", "qk_norm")],
        *[(name, ctypes.c_float) for name in ("softcap", "eps", "qk_eps")],
        ("embed", ctypes.c_void_p),
        ("embed_row", ctypes.c_int64),
        ("embed_col", ctypes.c_int64),
        *[(name, ctypes.c_void_p) for name in ("pos_embed", "cos", "sin")],
        *[(name, ctypes.c_void_p) for name in ("norm_attn", "qkv", "proj")],
        *[(name, ctypes.c_void_p) for name in ("norm_mlp", "up", "down")],
        *[(name, ctypes.c_void_p) for name in ("norm_out", "unembed", "keys", "values")],
    ]


def _machine() -> str:
    """What a library built with -march=native depends on: the CPU model and its flags."""
    identity = [platform.system(), platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    identity.append(line.strip())
                if not line.strip():  # the first processor's lines are enough
                    break
    except OSError:
        pass
    return "\n".join(identity)


def _compiler() -> list[str] | None:
    """$CC (a command, with its arguments) where it is set, as make takes it; else the
    first of cc, gcc and clang found."""
    given = os.environ.get("CC", "").strip()
    if given:
        command = shlex.split(given)
        return command if shutil.which(command[0]) else None
    found = next((name for name in ("cc", "gcc", "clang") if shutil.which(name)), None)
    return [found] if found else None


BUILD_SECONDS = 60  # a compiler that takes longer than this is given up on


def _build(compiler: list[str], target: Path) -> bool:
    """Compile step.c into `target` (written whole or not at all); tuned for this CPU where
    the compiler can, else portable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        for flags in (FLAGS + TUNED, FLAGS):
            command = [*compiler, *flags, "-o", str(built), str(SOURCE), "-lm"]
            if not _run(command):
                continue
            os.replace(built, target)  # another process may have built it too: same file
            return True
    return False


def _run(command: list[str]) -> bool:
    """Whether `command` succeeded within BUILD_SECONDS; one that hangs is stopped with all
    it started (a compiler wrapper's own children too)."""
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, to stop as a whole
        )
    except OSError:
        return False
    try:
        return process.wait(timeout=BUILD_SECONDS) == 0
    except subprocess.TimeoutExpired:
        _stop(process)
        return False
    except BaseException:  # Ctrl-C while it builds: nothing left running
        _stop(process)
        raise


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    process.wait()


def _load(path: Path) -> ctypes.CDLL | None:
    try:
        loaded = ctypes.CDLL(str(path))
        loaded.textgen_step  # noqa: B018 - a library without it is not this one
    except (OSError, AttributeError):
        return None
    loaded.textgen_step.argtypes = [ctypes.POINTER(Model), ctypes.c_int64] + [ctypes.c_void_p] * 4
    loaded.textgen_step.restype = ctypes.c_int
    return loaded


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built step, loaded (built first if this machine has not yet); None where it
    cannot be (no C compiler, an unwritable cache folder, TEXTGEN_NATIVE=0)."""
    if os.environ.get("TEXTGEN_NATIVE", "1") == "0":
        return None
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join(FLAGS + TUNED).encode() + _machine().encode()
    ).hexdigest()[:16]
    suffix = ".dll" if platform.system() == "Windows" else ".so"
    target = cache_folder() / f"step-{key}{suffix}"
    loaded = _load(target) if target.exists() else None
    if loaded is None:  # not built yet, or a file that does not load (cut short, damaged)
        compiler = _compiler()
        try:
            if compiler is None or not _build(compiler, target):
                return None
        except OSError:  # the cache folder cannot be written
            return None
        loaded = _load(target)
    return loaded
