"""Where the model runs: the best available device, and the matching autocast."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys

import torch

from textgen.errors import TextgenError
from textgen.settings import DTYPES


def choose_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TextgenError("--device cuda: no CUDA GPU is available here; use --device auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise TextgenError("--device mps: Apple's MPS backend is not available; use --device auto")
    return torch.device(name)


def autocast(device: torch.device, cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA GPUs that support it, and on CPU when asked; full precision
    elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cpu_bf16:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@functools.cache
def fast_bf16_matmul(device: torch.device) -> bool:
    """Whether bf16 matrix products are faster than float32 ones here: on CUDA GPUs that
    support bf16, and on CPUs where oneDNN has bf16 kernels (AVX-512, AMX, Arm BF16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def inference_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto': bf16 on GPUs that support it (float16 on the others); float32 on the CPU,
    where decoding steps run in NumPy (`textgen.model.cpu_step`) and are exact; otherwise
    the named dtype, whatever the model's size.

    Measured (2 cores with AVX-512 bf16, batch 1, tokens/s): float32 in NumPy against
    bf16 in PyTorch, 249 against 201 at 12 M parameters, 139 against 132 at 27 M, 57
    against 50 at 88 M. bf16 halves the bytes a step reads, but PyTorch's cost per
    operation and its bf16 kernels at batch 1 give that back."""
    if name != "auto":
        if name not in DTYPES:
            raise TextgenError(f"--dtype {name}: use one of {', '.join(DTYPES)}")
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def memory_bytes() -> int | None:
    """The machine's physical memory, where the system says (None elsewhere)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def device_memory_bytes(device: torch.device) -> int | None:
    """The memory `device` has: a GPU's own, else the machine's."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return memory_bytes()


def prepare_device(device: torch.device) -> None:
    """Settings that make training faster at no cost in quality: TF32 tensor cores for the
    float32 matrix multiplies left outside autocast, on GPUs that have them; on CPU, a
    malloc that keeps freed memory for the next step (`keep_freed_memory`)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device.type == "cpu":
        keep_freed_memory()


# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a training step frees for the next one.

    By default it maps every block over 128 KB-32 MB afresh from the kernel and unmaps it
    when freed, and returns the top of its heap too, so each step's activations and
    gradients (megabytes each) are page-faulted in and zeroed by the kernel again, step
    after step. Serving blocks under 256 MB from the heap, and giving its top back only
    once 1 GB of it lies unused, spares that work at the same peak memory (docs/recipe.md has
    the figures). Does nothing (False) where the C library is not
    glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 256 * 2**20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**30))


@functools.cache
def _openblas_threads_setter():  # noqa: ANN202 - a ctypes function, or None
    """NumPy's own OpenBLAS's thread setter: the library its wheels bundle (numpy.libs on
    Linux and Windows, numpy/.dylibs on macOS), under the names it exports; None where
    NumPy uses another BLAS."""
    from pathlib import Path

    import numpy

    package = Path(numpy.__file__).parent
    for library in [
        *package.parent.glob("numpy.libs/*openblas*"),
        *package.glob(".dylibs/*openblas*"),
    ]:
        try:
            loaded = ctypes.CDLL(str(library))  # the copy already loaded: the same handle
        except OSError:
            continue
        for name in (
            "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads",
            "openblas_set_num_threads",
        ):
            if hasattr(loaded, name):
                return getattr(loaded, name)
    return None


def numpy_threads(count: int) -> bool:
    """Let NumPy's matrix products use at most `count` threads (as PyTorch's own setting).
    OpenBLAS starts one thread per core by default and, on a machine whose cores are
    busy, its threads wait on each other: a decoding step in NumPy (`cpu_step`) then runs
    several times slower than on one thread. False where it cannot be set."""
    setter = _openblas_threads_setter()
    if setter is None:
        return False
    setter(max(1, count))
    return True


# Dense bf16 peak FLOP/s per GPU, by a part of its name (the first match wins); for MFU.
PEAK_FLOPS = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def peak_flops(device: torch.device) -> float | None:
    """The peak FLOP/s of one device, for MFU: $TEXTGEN_PEAK_TFLOPS if set, else the
    datasheet figure of a known GPU; None when unknown (CPUs vary too much to guess)."""
    override = os.environ.get("TEXTGEN_PEAK_TFLOPS")
    if override:
        try:
            return float(override) * 1e12
        except ValueError:
            raise TextgenError(
                f"TEXTGEN_PEAK_TFLOPS={override!r}: give a number of TFLOP/s, e.g. 989"
            ) from None
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for part, flops in PEAK_FLOPS.items() if part in name), None)
