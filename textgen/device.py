"""Where the model runs: the best available device, and the matching autocast."""

from __future__ import annotations

import contextlib

import torch

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


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA GPUs that support it; full precision elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
