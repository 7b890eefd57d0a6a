"""Where the model runs: the best available device, and the matching autocast."""

from __future__ import annotations

import contextlib

import torch

from textgen.config import DTYPES
from textgen.errors import TextgenError


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


# Above this many weight bytes (fp32) decoding streams the weights from memory for every
# token (they no longer fit in a CPU's last-level cache): halving them nearly doubles speed.
STREAMING_BYTES = 32 * 2**20


def inference_dtype(name: str, device: torch.device, parameters: int) -> torch.dtype:
    """'auto': bf16 on GPUs that support it, and on CPU for models too large to stay in
    cache (below that, float32 is as fast and exact); otherwise the named dtype."""
    if name != "auto":
        if name not in DTYPES:
            raise TextgenError(f"--dtype {name}: use one of {', '.join(DTYPES)}")
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and parameters * 4 > STREAMING_BYTES:
        return torch.bfloat16
    return torch.float32
