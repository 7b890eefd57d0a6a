"""Quality per CPU-minute: textgen's default recipe against the classic nanoGPT recipe.

    python benchmarks/train_quality.py                       # 5 minutes each, built-in corpus
    python benchmarks/train_quality.py --budgets 1m 2m 5m 10m --seeds 0 1 2
    python benchmarks/train_quality.py --corpus my.txt --variants classic default relu2
    python benchmarks/train_quality.py --budgets --throughput-seconds 60   # throughput only

Every variant trains for the same wall-clock budget on the same text and is scored on
the same held-out text (the last 10 % of the corpus, never trained on) by a full pass:
validation bits per byte, which does not depend on the tokenizer. Tokenizer training is
excluded from the budget and reported separately. Variants:

- classic: nanoGPT's CPU recipe: characters, learned positions, LayerNorm, GELU, tied
  embeddings, AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1, clip 1.0), 100 warmup
  steps then cosine decay (to lr/10, over the budget), 4 layers x 4 heads x 128 wide,
  context 64, batch 12, no dropout.
- default: `textgen train --time T` as it runs, with its defaults.
- any name in VARIANTS below: the default recipe with one change, to measure it alone.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from textgen.model.device import keep_freed_memory
from textgen.model.transformer import Transformer
from textgen.records import RunStarted
from textgen.settings import ModelConfig, ModelShape, TrainConfig
from textgen.store import folder as model_folder
from textgen.text.corpus import open_corpus
from textgen.training.evaluate import evaluate, token_byte_lengths
from textgen.training.optim import make_optimizer
from textgen.training.recipe import DROPOUT, RECIPES, SIZE_PRESETS, depth_shape
from textgen.training.run import train
from textgen.training.sizing import SpeedProbe
from textgen.units import parse_duration

HELD_OUT = 0.1

# One change each from the default recipe: (architecture changes, TrainConfig changes, vocab)
VARIANTS: dict[str, tuple[dict, dict, int | None]] = {
    "default": ({}, {}, None),
    "vocab-1024": ({}, {}, 1024),
    "vocab-4096": ({}, {}, 4096),
    "learned-pos": ({"position": "learned"}, {}, None),
    "layernorm": ({"norm": "layernorm"}, {}, None),
    "relu2": ({"activation": "relu2"}, {}, None),
    "untied": ({"tie_embeddings": False}, {}, None),
    "tiny": (
        dict(zip(("n_layer", "n_embd", "n_head"), SIZE_PRESETS["tiny"], strict=True)),
        {},
        None,
    ),
    "medium": (
        dict(zip(("n_layer", "n_embd", "n_head"), SIZE_PRESETS["medium"], strict=True)),
        {},
        None,
    ),
    "layers-6": ({"n_layer": 6}, {}, None),
    "width-192": ({"n_embd": 192, "n_head": 3}, {}, None),
    "width-96": ({"n_embd": 96, "n_head": 3}, {}, None),
    "lr-1e-3": ({}, {"learning_rate": 1e-3}, None),
    "lr-4e-3": ({}, {"learning_rate": 4e-3}, None),
    "dropout-0.1": ({"dropout": 0.1}, {}, None),
    "dropout-0.2": ({"dropout": 0.2}, {}, None),
    "dropout-0.3": ({"dropout": 0.3}, {}, None),
    "vocab-512": ({}, {}, 512),
    "muon": ({}, {"optimizer": "muon"}, None),
    "adamw": ({}, {"optimizer": "adamw"}, None),
    "gelu": ({"activation": "gelu"}, {}, None),
    "no-dropout": ({"dropout": 0.0}, {}, None),
    "cpu-bf16": ({}, {"cpu_bf16": True}, None),
    "qk-norm": ({"qk_norm": True}, {}, None),
    "zero-init": ({"zero_init_proj": True}, {}, None),
    "softcap-15": ({"logit_softcap": 15.0}, {}, None),
    "batch-16": ({}, {"batch_size": 16}, None),
    "batch-64": ({}, {"batch_size": 64}, None),
    "context-64": ({"context_window": 64}, {}, None),
    "context-256": ({"context_window": 256}, {}, None),
    "no-bpe-dropout": ({}, {"bpe_dropout": 0.0}, None),
    "bpe-dropout-0.1": ({}, {"bpe_dropout": 0.1}, None),
    "bpe-dropout-0.2": ({}, {"bpe_dropout": 0.2}, None),
    "bpe-dropout-0.05": ({}, {"bpe_dropout": 0.05}, None),
    "val-0.01": ({}, {"val_fraction": 0.01}, None),
    "val-0.001": ({}, {"val_fraction": 0.001}, None),
    "mlr-0.01": ({}, {"muon_learning_rate": 0.01}, None),
    "mlr-0.03": ({}, {"muon_learning_rate": 0.03}, None),
    "cooldown-0.6": ({}, {"cooldown_fraction": 0.6}, None),
    "cooldown-0.25": ({}, {"cooldown_fraction": 0.25}, None),
    "average-0.05": ({}, {"average_width": 0.05}, None),
    "average-0.1": ({}, {"average_width": 0.1}, None),
    "average-0.15": ({}, {"average_width": 0.15}, None),
    "val-spread": ({}, {"held_out": "spread"}, None),
    "dropout-0.15": ({"dropout": 0.15}, {}, None),
    "bpe-dropout-0.15": ({}, {"bpe_dropout": 0.15}, None),
    "wd-0.1": ({}, {"weight_decay": 0.1}, None),  # the embedding's, whatever the epochs
    "wd-0.3": ({}, {"weight_decay": 0.3}, None),
    "wd-1.0": ({}, {"weight_decay": 1.0}, None),
    "wd-3.0": ({}, {"weight_decay": 3.0}, None),
    **{f"mwd-{d}": ({}, {"muon_weight_decay": d}, None) for d in (0, 0.03, 0.1, 0.3, 1.0, 3.0)},
    "vocab-256": ({}, {}, 256),
    "vocab-2048": ({}, {}, 2048),
    "vocab-768": ({}, {}, 768),
    "vocab-1536": ({}, {}, 1536),
    "warmup-0": ({}, {"warmup_steps": 0}, None),
    "warmup-200": ({}, {"warmup_steps": 200}, None),
    "sample-epochs": ({}, {"sampling": "epochs"}, None),
    "sample-random": ({}, {"sampling": "random"}, None),  # the default until session 7
}
VARIANTS.update(
    {f"depth-{d}": (depth_shape(d).given(), {}, None) for d in range(2, 13)}
)  # the dial


def variant(name: str) -> tuple[dict, dict, int | None]:
    """A named variant, or several joined by '+' (vocab-512+dropout-0.2+muon)."""
    architecture, training, vocab = {}, {}, None
    for part in name.split("+"):
        arch, train_changes, part_vocab = VARIANTS[part]
        architecture.update(arch)
        training.update(train_changes)
        vocab = part_vocab or vocab
    return architecture, training, vocab


def split_text(text: str) -> tuple[str, str]:
    cut = int(len(text) * (1 - HELD_OUT))
    return text[:cut], text[cut:]


def run_classic(
    train_text: str, held_out: str, budget: float | None, seed: int, steps: int | None = None
) -> dict:
    """nanoGPT's CPU recipe, character-level, for `budget` seconds of training (or, with
    `budget` None, for `steps` steps: fixed compute)."""
    torch.manual_seed(seed)
    chars = sorted(set(train_text))
    index = {c: i + 1 for i, c in enumerate(chars)}  # 0: a character never seen in training
    encode = lambda s: np.array([index.get(c, 0) for c in s], dtype=np.int64)  # noqa: E731
    train_ids, val_ids = encode(train_text), encode(held_out)
    byte_lengths = torch.tensor([1] + [len(c.encode()) for c in chars])
    config = RECIPES["classic"].shape.config(len(chars) + 1)  # train --recipe classic's
    model = Transformer(config)
    settings = TrainConfig(
        learning_rate=1e-3, weight_decay=0.1, grad_clip=1.0, batch_size=12, optimizer="adamw"
    )
    optimizer = make_optimizer(model, settings, torch.device("cpu"))
    for group in optimizer.param_groups:
        group["betas"] = (0.9, 0.99)
    generator = torch.Generator().manual_seed(seed)
    total, steps, start = steps, 0, time.perf_counter()

    def going() -> bool:
        return steps < total if budget is None else time.perf_counter() - start < budget

    while going():
        elapsed = time.perf_counter() - start
        progress = steps / total if budget is None else elapsed / budget
        if steps < 100:
            lr = 1e-3 * (steps + 1) / 100
        else:  # cosine from lr to lr/10 over the budget
            lr = 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi * progress))
        optimizer.set_lr_multiplier(lr / 1e-3)
        starts = torch.randint(0, len(train_ids) - 65, (12,), generator=generator)
        rows = torch.from_numpy(np.stack([train_ids[s : s + 65] for s in starts.tolist()]))
        _, loss = model(rows[:, :-1], rows[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
    elapsed = time.perf_counter() - start
    result = evaluate(model, val_ids, byte_lengths).result
    return {
        "params": model.num_parameters(),
        "steps": steps,
        "tokens": steps * 12 * 64,
        "seconds": elapsed,
        "val_loss": result.loss,
        "bpb": result.bits_per_byte,
        "setup": 0.0,
    }


def run_textgen(name: str, train_text: str, held_out: str, budget: float, seed: int) -> dict:
    """`textgen train --time budget` with the default settings, changed as the variant says
    (the model's size is chosen for the budget, as `--size auto` does, unless the variant
    sets it)."""
    arch_changes, train_changes, vocab = variant(name)
    architecture = dict(context_window=128, **arch_changes)
    config = TrainConfig(time_budget=budget, seed=seed, val_fraction=0.01, **train_changes)
    events = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        path.write_text(train_text, encoding="utf-8")
        started = time.perf_counter()
        with open_corpus([str(path)]) as corpus:
            result = train(
                Path(tmp) / "model",
                corpus,
                config,
                ModelShape(**architecture),
                vocab_size=vocab,
                callback=events.append,
            )
        total = time.perf_counter() - started
        scored = score(Path(tmp) / "model", held_out)
    assert any(isinstance(e, RunStarted) for e in events)
    return {
        "params": result.parameters,
        "steps": result.steps,
        "tokens": result.tokens_seen,
        "seconds": result.elapsed,
        **scored,
        "setup": total - result.elapsed,
    }


def score(folder: Path, held_out: str) -> dict:
    """The saved model's loss and bits per byte on the held-out text, by a full pass."""
    lm = model_folder.load(folder)
    ids = np.array([lm.tokenizer.eot_id, *lm.tokenizer.encode(held_out)], dtype=np.int64)
    scored = evaluate(lm.model, ids, token_byte_lengths(lm.tokenizer.token_bytes)).result
    return {"val_loss": scored.loss, "bpb": scored.bits_per_byte}


def run_classic_rate(seconds: float) -> float:
    """The classic recipe's training tokens/s at its shape (4 x 4 x 128, context 64,
    batch 12, a character vocabulary of 100), on random tokens."""
    config = ModelConfig(
        vocab_size=100, context_window=64, n_layer=4, n_head=4, n_embd=128, **CLASSIC_SHAPE
    )
    settings = TrainConfig(batch_size=12, optimizer="adamw")
    probe = SpeedProbe(config, settings, torch.device("cpu"), batch=12)
    probe.tokens_per_second(0.3)
    return probe.tokens_per_second(seconds, min_steps=3)


def run_seeds(
    variant: str, train_text: str, held_out: str, budget: float, seeds: list[int]
) -> list[dict]:
    """One run of `variant` (classic, or a textgen variant) per seed."""
    return [
        run_classic(train_text, held_out, budget, seed)
        if variant == "classic"
        else run_textgen(variant, train_text, held_out, budget, seed)
        for seed in seeds
    ]


class Throughput:
    """Training tokens/s of one recipe at a fixed size (4 x 128, vocabulary 2048, context
    128, batch 32) on random tokens. `measure(seconds)` adds one timed stretch, after 5
    warm-up steps the first time; recipes measured in turns see the same machine."""

    def __init__(
        self,
        recipe: dict,
        train_changes: dict,
        vocab: int = 2048,
        context: int = 128,
        batch: int = 32,
    ) -> None:
        torch.manual_seed(0)
        config = ModelConfig(
            vocab_size=vocab, context_window=context, n_layer=4, n_embd=128, n_head=4, **recipe
        )
        settings = replace(TrainConfig(), **train_changes)
        self.probe = SpeedProbe(config, settings, torch.device("cpu"), batch=batch)
        self.rates: list[float] = []
        for _ in range(4):  # and the probe's first
            self.probe.step()

    def measure(self, seconds: float) -> None:
        self.rates.append(self.probe.tokens_per_second(seconds))


CLASSIC_SHAPE = dict(position="learned", norm="layernorm", activation="gelu")
ROUNDS = 5  # each recipe's time is split into this many turns, taken in rotation


def throughput_table(seconds: float, variants: list[str], dropout: float) -> None:
    print(
        f"\ntraining throughput at equal size (4x128, vocab 2048, context 128, batch 32), "
        f"{seconds:g} s each in {ROUNDS} turns, median"
    )
    recipes = {"classic": Throughput(CLASSIC_SHAPE, {"optimizer": "adamw"})}
    for name in variants:
        if name == "classic":
            continue
        arch, changes, _ = variant(name)
        arch = {
            k: v
            for k, v in arch.items()
            if k not in ("n_layer", "n_embd", "n_head", "context_window")
        }
        arch.setdefault("dropout", dropout)  # as the CLI would on this corpus
        recipes[name] = Throughput(arch, changes)
    for _ in range(ROUNDS):
        for recipe in recipes.values():
            recipe.measure(seconds / ROUNDS)
    base = statistics.median(recipes["classic"].rates)
    for name, recipe in recipes.items():
        rate = statistics.median(recipe.rates)
        spread = f"{min(recipe.rates):.0f}-{max(recipe.rates):.0f}"
        print(f"  {name:<28}{rate:>8.0f} tok/s  ({spread})  {rate / base:.2f}x")


def nanogpt_table(seconds: float, repo: Path, train_text: str, held_out: str) -> None:
    """Training throughput at real nanoGPT's CPU shape (4x4x128, block 64, batch 12, no
    dropout, characters), its own train.py beside textgen's recipes at the same shape."""
    import nanogpt

    vocab = len(set(train_text + held_out))  # nanoGPT's characters
    print(
        f"\ntraining throughput at nanoGPT's CPU shape (4x128, block 64, batch 12, no dropout, "
        f"{vocab} characters; textgen's at a vocabulary of {vocab}); textgen: {seconds:g} s "
        f"each in {ROUNDS} turns, median of its steps; nanoGPT: its train.py as it runs, "
        "250 against 1,500 iterations (its evaluations included, start-up cancelled)"
    )
    shape = {"vocab": vocab, "context": 64, "batch": 12}
    recipes = {
        "classic (in-repo)": Throughput(
            {**CLASSIC_SHAPE, "dropout": 0.0}, {"optimizer": "adamw"}, **shape
        ),
        "default": Throughput({"dropout": 0.0}, {}, **shape),
    }
    for _ in range(ROUNDS):
        for recipe in recipes.values():
            recipe.measure(seconds / ROUNDS)
    with tempfile.TemporaryDirectory() as tmp:
        checkout = nanogpt.checkout(repo, Path(tmp) / "cache")
        real = nanogpt.iterations_per_second(checkout, Path(tmp), train_text, held_out) * 12 * 64
    print(f"  {'real nanoGPT (train.py)':<28}{real:>8.0f} tok/s  1.00x")
    for name, recipe in recipes.items():
        rate = statistics.median(recipe.rates)
        spread = f"{min(recipe.rates):.0f}-{max(recipe.rates):.0f}"
        print(f"  {name:<28}{rate:>8.0f} tok/s  ({spread})  {rate / real:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="a text file (default: the built-in corpus)")
    parser.add_argument(
        "--budgets", nargs="*", default=["5m"], help="none: the throughput table alone"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", default=["classic", "default"])
    parser.add_argument(
        "--throughput-seconds",
        type=float,
        default=20.0,
        help="time per recipe in the equal-size throughput table (0: skip)",
    )
    parser.add_argument(
        "--nanogpt",
        type=Path,
        metavar="DIR",
        help="a checkout (or bare git folder) of karpathy/nanoGPT: its train.py's throughput "
        "beside textgen's at its CPU shape",
    )
    parser.add_argument(
        "--glibc-malloc",
        action="store_true",
        help="leave glibc's malloc at its defaults, as plain PyTorch runs, rather than "
        "textgen train's settings (throughput table only: use with --budgets and nothing)",
    )
    args = parser.parse_args()
    if args.glibc_malloc and args.budgets:
        sys.exit("--glibc-malloc measures the throughput table alone: add --budgets with no value")
    if not args.glibc_malloc:
        keep_freed_memory()  # as textgen train does, for every recipe alike
    unknown = [
        part
        for v in args.variants
        if v != "classic"
        for part in v.split("+")
        if part not in VARIANTS
    ]
    if unknown:
        sys.exit(f"unknown variants {unknown}; known: classic, {', '.join(VARIANTS)}")
    if args.corpus:
        text = Path(args.corpus).read_text(encoding="utf-8", errors="replace")
    else:
        with open_corpus([]) as corpus:
            text = "".join(corpus.texts())
    train_text, held_out = split_text(text)
    print(
        f"corpus: {len(text.encode()):,} bytes; held out: {len(held_out.encode()):,} bytes; "
        f"{torch.get_num_threads()} threads; seeds {args.seeds}; medians over seeds"
    )
    header = (
        f"{'budget':>6}  {'variant':<12}{'params':>8}{'tok/s':>8}{'steps':>7}"
        f"{'tokens':>9}{'val loss':>9}{'val bpb':>9}{'vs classic':>11}{'setup':>7}"
    )
    if args.budgets:
        print(header)
    for budget_text in args.budgets:
        budget = parse_duration(budget_text)
        classic_bpb = None
        for variant in args.variants:
            runs = run_seeds(variant, train_text, held_out, budget, args.seeds)
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            if variant == "classic":
                classic_bpb = med["bpb"]
            ratio = f"{med['bpb'] / classic_bpb:.2f}x" if classic_bpb else "-"
            print(
                f"{budget_text:>6}  {variant:<30}{med['params'] / 1e6:>7.2f}M"
                f"{med['tokens'] / med['seconds']:>8.0f}{med['steps']:>7.0f}"
                f"{med['tokens'] / 1e6:>8.2f}M{med['val_loss']:>9.3f}{med['bpb']:>9.3f}"
                f"{ratio:>11}{med['setup']:>6.1f}s",
                flush=True,
            )
    if args.throughput_seconds > 0:
        throughput_table(args.throughput_seconds, args.variants, DROPOUT)
        if args.nanogpt:
            nanogpt_table(args.throughput_seconds, args.nanogpt, train_text, held_out)


if __name__ == "__main__":
    main()
