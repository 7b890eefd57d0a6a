"""Data-parallel training across processes, on PyTorch's own engine (`torch.distributed`).

`torchrun --nproc-per-node N -m textgen train ...` starts N copies of textgen with RANK,
WORLD_SIZE and LOCAL_RANK in their environment. Each process holds the whole model, trains
on its own share of every batch, and the gradients are averaged across processes before
each step (gloo on CPU, NCCL on GPUs). Process 0 does everything that touches files or the
terminal: training the tokenizer, encoding the corpus, checkpoints, metrics, progress.

Without torchrun the world is one process and nothing here calls torch.distributed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from textgen.errors import TextgenError
from textgen.records import World

T = TypeVar("T")


class FollowerError(TextgenError):
    """An error that process 0 met and has already reported; the others exit quietly."""

    quiet = True


_world = World()


def world() -> World:
    return _world


def setup(device_type: str) -> World:
    """Join the process group torchrun describes (once); a single process otherwise."""
    global _world
    launched = World.from_environment()
    if not launched.distributed or _world.distributed:
        return _world
    if device_type == "cuda":
        torch.cuda.set_device(launched.local_rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as exc:
        raise TextgenError(f"could not join the torchrun process group ({exc})") from None
    _world = launched
    return _world


def shutdown() -> None:
    """Leave the process group, all processes together: one that tore its connections down
    while another was still using them could abort the other."""
    global _world
    if _world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _world = World()


def on_main(work: Callable[[], T]) -> T:
    """Run `work` in process 0 only and hand its result to every process. If it fails with
    a TextgenError, every process raises it (the others as FollowerError, kept quiet)."""
    if not _world.distributed:
        return work()
    outcome: list = [None]
    if _world.is_main:
        try:
            outcome[0] = ("ok", work())
        except TextgenError as exc:
            outcome[0] = ("error", str(exc))
        except BaseException:
            outcome[0] = ("error", "process 0 failed (see its traceback)")
            dist.broadcast_object_list(outcome, src=0)
            raise
    dist.broadcast_object_list(outcome, src=0)
    status, value = outcome[0]
    if status == "error":
        raise (TextgenError if _world.is_main else FollowerError)(value)
    return value


def agree_after_step(
    loss: torch.Tensor, elapsed: float, stop: int | None
) -> tuple[float, float, int | None]:
    """What every process must agree on after a step: the loss averaged over processes,
    process 0's clock (the same learning rate and the same last step for all), and whether
    to stop now (a signal any process received: the first one's number)."""
    if not _world.distributed:
        return loss.item(), elapsed, stop
    values = torch.tensor(
        [loss.item(), elapsed if _world.is_main else 0.0, stop or 0],
        dtype=torch.float64,
        device=loss.device,
    )
    dist.all_reduce(values)
    signalled = int(values[2].item())  # torchrun hands a signal to every process alike
    return values[0].item() / _world.size, values[1].item(), stop or signalled or None
