"""metrics.jsonl: one line per evaluation of a training run, appended as it goes; and
samples.jsonl: one line per sample the model wrote as it trained.

Read back in step order, one record per step (the latest line for a step wins), and
never an error: lines cut short by a crash, or without a step and finite losses (or
without text, for a sample), are skipped, so these files can never break a command.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from textgen.files import finite, write_text
from textgen.store.folder import METRICS, SAMPLES


def append_metrics(folder: Path, record: dict[str, Any]) -> None:
    _append(folder / METRICS, record)


def append_sample(folder: Path, record: dict[str, Any]) -> None:
    _append(folder / SAMPLES, record)


def _append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(finite(record)) + "\n")


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The evaluations in metrics.jsonl, in step order, one per step (the latest line for a
    step wins: a resumed run repeats steps after its checkpoint). Lines cut short by a crash
    or without a step and finite losses are skipped: a metrics file never breaks a command."""
    return _read(folder / METRICS, _valid_metrics)


def read_samples(folder: Path) -> list[dict[str, Any]]:
    """The samples in samples.jsonl (step, tokens, val_bpb, prompt, text), in step order,
    one per step, as `read_metrics` reads its file."""
    return _read(folder / SAMPLES, _valid_sample)


def _read(path: Path, valid: Any) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # cut short, or nested past reason
            continue
        if valid(record):
            by_step[record["step"]] = record
    return [by_step[step] for step in sorted(by_step)]


def _valid_sample(record: Any) -> bool:
    return (
        _valid_metrics(record)
        and isinstance(record.get("text"), str)
        and isinstance(record.get("prompt"), str)
    )


def _valid_metrics(record: Any) -> bool:
    if not isinstance(record, dict) or isinstance(record.get("step"), bool):
        return False
    if not isinstance(record.get("step"), int) or record["step"] < 0:
        return False
    for key in ("train_loss", "val_loss", "val_bpb", "time"):
        value = record.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return False
    return True


def keep_metrics_until(folder: Path, step: int) -> None:
    """Drop the evaluations and samples after `step` (a resumed run repeats those steps
    from its checkpoint; a run killed after them left their lines behind)."""
    for path in (folder / METRICS, folder / SAMPLES):
        if not path.exists():
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        kept = [line for line in lines if not _after(line, step)]
        if len(kept) < len(lines):
            write_text(path, "".join(line + "\n" for line in kept))


def _after(line: str, step: int) -> bool:
    try:
        record = json.loads(line)
        return (
            isinstance(record, dict)
            and isinstance(record.get("step"), int)
            and record["step"] > step
        )
    except (json.JSONDecodeError, RecursionError):
        return True  # a line cut short: the crash came after the checkpoint
