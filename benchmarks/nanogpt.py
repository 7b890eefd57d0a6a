"""Real nanoGPT (karpathy/nanoGPT, its own `train.py` and `model.py`, unchanged) on a
suite corpus, scored the way textgen is: a full pass over the held-out text in bits per
byte.

The recipe is the CPU one nanoGPT's README gives for Shakespeare (characters, 4 layers x
4 heads x 128 wide, block 64, batch 12, no dropout, lr 1e-3 with 100 warm-up iterations
and cosine decay to 1e-4, `eval_iters` 20). What a run may change is its length:
`max_iters` (= `lr_decay_iters`) comes from nanoGPT's measured iterations per second and
the budget, and `eval_interval` is set near its 250 so that the last evaluation falls on
the last iteration (nanoGPT checkpoints only at evaluations; `always_save_checkpoint` is
on, so the final weights are the ones scored, never ones picked on the held-out text).

The data goes where nanoGPT's own `prepare.py` would put it: `train.bin`/`val.bin` as
uint16 character ids over the whole corpus's characters, `meta.pkl` with the mapping;
`val.bin` is the held-out text (nanoGPT's 90/10 split), used by nanoGPT only for the
loss it prints.
"""

from __future__ import annotations

import math
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RECIPE = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--dtype=float32",  # nanoGPT computes in float32 on CPU; float16 would ask for a GradScaler
    "--eval_iters=20",
    "--log_interval=50",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--dropout=0.0",
    "--always_save_checkpoint=True",
]
EVAL_INTERVAL = 250  # nanoGPT's shakespeare_char setting


def checkout(source: Path, cache: Path) -> Path:
    """A working copy of nanoGPT: `source` is a checkout, or a bare git folder whose HEAD
    is exported once into the cache."""
    if (source / "train.py").exists():
        return source
    target = cache / "nanoGPT"
    if not (target / "train.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", f"--git-dir={source}", "archive", "HEAD"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def prepare(repo: Path, work: Path, train_text: str, held_out: str) -> None:
    """A nanoGPT working folder: its code, and the data as its prepare.py writes it."""
    for name in ("train.py", "model.py", "configurator.py"):
        shutil.copy(repo / name, work / name)
    shutil.copytree(repo / "config", work / "config", dirs_exist_ok=True)
    data = work / "data" / "shakespeare_char"
    data.mkdir(parents=True, exist_ok=True)
    chars = sorted(set(train_text + held_out))
    if len(chars) > 65535:
        raise SystemExit("nanoGPT stores ids as uint16: this corpus has too many characters")
    stoi = {c: i for i, c in enumerate(chars)}
    for name, text in (("train.bin", train_text), ("val.bin", held_out)):
        np.array([stoi[c] for c in text], dtype=np.uint16).tofile(data / name)
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)


def schedule(iterations: int) -> list[str]:
    """max_iters, lr_decay_iters and an eval_interval near 250 that divides max_iters."""
    iterations = max(iterations, 1)
    evals = max(1, round(iterations / EVAL_INTERVAL))
    interval = max(1, iterations // evals)
    iterations = interval * evals
    return [
        f"--max_iters={iterations}",
        f"--lr_decay_iters={iterations}",
        f"--eval_interval={interval}",
    ]


def train(work: Path, iterations: int, log: Path) -> float:
    """Run nanoGPT's train.py in `work` for `iterations`; the wall seconds it took.
    nanoGPT seeds itself (1337 + its DDP rank): every run of it is its one seed."""
    started = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(
            [sys.executable, "train.py", *RECIPE, *schedule(iterations)],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return time.perf_counter() - started


def iterations_per_second(repo: Path, work: Path, train_text: str, held_out: str) -> float:
    """nanoGPT's speed as it runs (evaluations and checkpoints included): two runs of
    different lengths, so start-up cancels out."""
    prepare(repo, work, train_text, held_out)
    short = train(work, 250, work / "short.log")
    long = train(work, 1500, work / "long.log")
    return 1250 / (long - short)


@torch.inference_mode()
def score(work: Path, train_text: str, held_out: str) -> dict:
    """The checkpoint's bits per byte on the held-out text: consecutive windows of the
    block size, each character predicted from those before it in its window; the first
    is predicted from the training text's last character."""
    sys.path.insert(0, str(work))
    try:
        from model import GPT, GPTConfig  # nanoGPT's own

        checkpoint = torch.load(work / "out-shakespeare-char" / "ckpt.pt", weights_only=False)
        model = GPT(GPTConfig(**checkpoint["model_args"]))
        model.load_state_dict(checkpoint["model"])
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("model", None)
    model.eval()
    with open(work / "data" / "shakespeare_char" / "meta.pkl", "rb") as f:
        stoi = pickle.load(f)["stoi"]
    ids = torch.tensor([stoi[c] for c in train_text[-1] + held_out], dtype=torch.long)
    block = checkpoint["model_args"]["block_size"]
    total, count = 0.0, 0
    starts = list(range(0, len(ids) - 1, block))
    for i in range(0, len(starts), 32):
        x = torch.zeros(len(starts[i : i + 32]), block, dtype=torch.long)
        y = torch.full_like(x, -1)  # nanoGPT's ignore_index
        for row, s in enumerate(starts[i : i + 32]):
            piece = ids[s : s + block + 1]
            x[row, : len(piece) - 1] = piece[:-1]
            y[row, : len(piece) - 1] = piece[1:]
        _, loss = model(x, y)
        valid = int((y != -1).sum())
        total += float(loss) * valid
        count += valid
    log = (work / "run.log").read_text()
    steps = [int(m) for m in re.findall(r"^iter (\d+):", log, re.M)]
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "steps": checkpoint["iter_num"],
        "tokens": checkpoint["iter_num"] * 12 * block,
        "val_loss": total / count,
        "bpb": total / math.log(2) / len(held_out.encode("utf-8")),
        "last_logged_iter": max(steps, default=0),
    }


def run(repo: Path, work: Path, train_text: str, held_out: str, iterations: int) -> dict:
    """One nanoGPT run of `iterations`, scored."""
    prepare(repo, work, train_text, held_out)
    seconds = train(work, iterations, work / "run.log")
    return {**score(work, train_text, held_out), "seconds": seconds}
