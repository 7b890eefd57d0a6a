"""The recipe lab: fixed-compute experiments over the corpus suite, appended to the lab
notebook (benchmarks/notebook/) as each one finishes, so work carries across sessions.

    python benchmarks/lab.py calibrate                    # on a quiet machine: the budgets
    python benchmarks/lab.py run --corpora builtin kjv-prose --variants nanogpt classic \\
        default --budgets 1m 5m --seeds 0 --jobs 2
    python benchmarks/lab.py table --budgets 1m 5m        # the notebook's runs, summarised

A run is defined by its recipe and a token budget, not by wall-clock time, so its result
does not depend on how busy the machine is and runs can go two at a time, one thread
each, in the background. "The 5-minute budget" of a shape is the training tokens that
shape trains in 5 minutes on a quiet 2-core machine, from a throughput table measured
once (`calibrate`, `benchmarks/notebook/throughput.json`):

- textgen recipes: each shape's training tokens/s (2 threads, the run's batch, on random
  tokens), times the share of a real `textgen train --time` run spent in training steps
  (evaluations and checkpoints take the rest; measured by one real run). The size dial
  (`--size auto`) chooses the depth from the same table, so the choice is the one a quiet
  machine would make.
- real nanoGPT (`nanogpt`, needs `--nanogpt DIR`): its iterations/s as it runs, its own
  evaluations included.
- the in-repo classic recipe (`classic`): its tokens/s at its shape.

Variants: `nanogpt`, `classic`, or any textgen variant of train_quality.py's VARIANTS
(`default`, `vocab-1024`, `wd-1.0+dropout-0.1`, ...). The held-out text is each corpus's
last 10 %, never trained on, scored by a full pass in bits per byte.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Where runs are recorded: this folder's notebook, or another checkout's (runs started
# from a frozen copy of the code still land in the working notebook)
NOTEBOOK = Path(os.environ.get("TEXTGEN_LAB_NOTEBOOK", HERE / "notebook"))
RUNS = NOTEBOOK / "runs.jsonl"
THROUGHPUT = NOTEBOOK / "throughput.json"
CACHE = Path(os.path.expanduser("~/.cache/textgen-bench"))
BUDGETS = {"1m": 60.0, "2m": 120.0, "5m": 300.0, "10m": 600.0}
CALIBRATION_DEPTHS = range(2, 7)
CALIBRATION_VOCABS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",  # the tokenizer's Rust threads
    "TOKENIZERS_PARALLELISM": "false",
}


# -- the throughput table -----------------------------------------------------------------


def shape_key(config, train) -> str:
    """What sets a textgen step's speed, less the vocabulary (interpolated)."""
    parts = [
        f"L{config.n_layer}",
        f"C{config.n_embd}",
        f"H{config.n_head}",
        f"T{config.context_window}",
        f"B{train.batch_size}",
        f"mlp{config.mlp_ratio}",
        config.position,
        config.norm,
        config.activation,
        "tied" if config.tie_embeddings else "untied",
        "dropout" if config.dropout > 0 else "no-dropout",
        "qknorm" if config.qk_norm else "",
        "softcap" if config.logit_softcap else "",
        train.optimizer,
        "bf16" if train.cpu_bf16 else "",
    ]
    return "-".join(p for p in parts if p)


class Table:
    """The calibrated speeds: {shape key: {vocab: tokens/s}}, the training share of a real
    run, nanoGPT's and the classic recipe's rates."""

    def __init__(self, data: dict) -> None:
        self.data = data

    @classmethod
    def load(cls) -> Table:
        if not THROUGHPUT.exists():
            sys.exit(
                f"no {THROUGHPUT}: run `python benchmarks/lab.py calibrate` on a quiet machine"
            )
        return cls(json.loads(THROUGHPUT.read_text()))

    def rate(self, config, train) -> float:
        """Training tokens/s of this shape on the quiet machine (interpolated in the
        vocabulary between calibrated sizes)."""
        key = shape_key(config, train)
        rates = self.data["textgen"].get(key)
        if not rates:
            sys.exit(f"shape {key} is not calibrated: run lab.py calibrate --variants ...")
        points = sorted((int(v), r) for v, r in rates.items())
        vocab = config.vocab_size
        for (v0, r0), (v1, r1) in zip(points, points[1:], strict=False):
            if v0 <= vocab <= v1:  # time per token is close to linear in the vocabulary
                share = (vocab - v0) / (v1 - v0)
                return 1 / ((1 - share) / r0 + share / r1)
        return points[0][1] if vocab < points[0][0] else points[-1][1]

    def training_tokens(self, config, train, seconds: float) -> float:
        return self.rate(config, train) * seconds * self.data["training_share"]


def calibrate(args: argparse.Namespace) -> None:
    import torch
    from train_quality import run_classic_rate, variant

    from textgen.model.device import keep_freed_memory
    from textgen.settings import ModelConfig, TrainConfig
    from textgen.training.recipe import DROPOUT, depth_shape
    from textgen.training.sizing import SpeedProbe

    keep_freed_memory()
    torch.set_num_threads(args.threads)
    data = json.loads(THROUGHPUT.read_text()) if THROUGHPUT.exists() else {}
    # a re-check (--out FILE) compares with the table and writes beside it, never over it:
    # every budget in the notebook follows from the table
    out = args.out or THROUGHPUT
    full = args.full or "training_share" not in data
    stamp = {
        "threads": args.threads,
        "measured": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": _commit(),
    }
    if full:
        data.update(stamp)
    data.setdefault("textgen", {})
    dropout = DROPOUT  # every suite corpus is read more than once
    cells = []  # (key, vocab, config, train)
    for name in args.variants:
        arch, changes, _ = variant(name)
        train = replace(TrainConfig(), **changes)
        depths = [None] if "n_layer" in arch else CALIBRATION_DEPTHS
        for depth in depths:
            shape = {"context_window": 128, "dropout": dropout, **arch}
            if depth is not None:
                shape.update(depth_shape(depth).given())
            key = shape_key(ModelConfig(vocab_size=512, **shape), train)
            for vocab in CALIBRATION_VOCABS:
                cells.append((key, str(vocab), ModelConfig(vocab_size=vocab, **shape), train))
    # every cell once a round, the rounds one after another: a slow minute of the machine
    # lands in one round of every cell, and the median of the rounds drops it
    measured: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for key, vocab, config, train in cells:
            probe = SpeedProbe(config, train, torch.device("cpu"), batch=train.batch_size)
            probe.tokens_per_second(0.3)
            rate = probe.tokens_per_second(args.seconds, min_steps=3)
            measured.setdefault((key, vocab), []).append(rate)
        print(f"  round {round_ + 1} of {args.rounds} measured", flush=True)
    for key in dict.fromkeys(k for k, *_ in cells):
        old = data["textgen"].get(key, {})
        rates = {v: statistics.median(r) for (k, v), r in measured.items() if k == key}
        data["textgen"][key] = rates
        if not full:  # a shape added to an earlier table: when and where it was measured
            data.setdefault("added", {})[key] = stamp | {"rounds": args.rounds}
        print(
            f"  {key}: "
            + ", ".join(
                f"{v} {r:,.0f}" + (f" ({r / old[v]:.2f}x the table's)" if v in old else "")
                for v, r in rates.items()
            ),
            flush=True,
        )
    if full:
        # the budgets of every run in the notebook follow from these: measured once, kept
        # when shapes are added later (a new variant's shapes on the same machine)
        data["classic"] = run_classic_rate(args.seconds)
        print(f"  classic: {data['classic']:,.0f} tokens/s", flush=True)
        out.write_text(json.dumps(data, indent=1) + "\n")
        data["training_share"] = _training_share(Table(data))
        print(f"  share of a real 60 s run spent training: {data['training_share']:.3f}")
    if args.nanogpt:
        import nanogpt
        from corpus_suite import corpus_text
        from train_quality import split_text

        repo = nanogpt.checkout(args.nanogpt, CACHE)
        train_text, held_out = split_text(corpus_text("builtin", CACHE))
        with tempfile.TemporaryDirectory() as tmp:
            data["nanogpt"] = nanogpt.iterations_per_second(repo, Path(tmp), train_text, held_out)
        print(f"  nanoGPT: {data['nanogpt']:.2f} iterations/s", flush=True)
    out.write_text(json.dumps(data, indent=1) + "\n")


def _training_share(table: Table) -> float:
    """A real `textgen train --time 60s` on the built-in corpus: its training tokens over
    what its shape trains in as long at the table's rate."""
    from textgen.settings import TrainConfig
    from textgen.store import folder as model_folder
    from textgen.text.corpus import open_corpus
    from textgen.training.run import train

    with tempfile.TemporaryDirectory() as tmp, open_corpus([]) as corpus:
        result = train(Path(tmp) / "m", corpus, TrainConfig(time_budget=60.0), {})
        lm = model_folder.load(Path(tmp) / "m")
    return result.tokens_seen / (table.rate(lm.model_config, TrainConfig()) * result.elapsed)


# -- one run ------------------------------------------------------------------------------


def run_one(job: dict) -> dict:
    """One experiment, in a worker process of one thread."""
    import torch

    from textgen.model.device import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()
    from corpus_suite import corpus_text
    from train_quality import split_text

    table = Table.load()
    seconds = BUDGETS[job["budget"]]
    train_text, held_out = split_text(corpus_text(job["corpus"], CACHE))
    if job["variant"] == "nanogpt":
        import nanogpt

        iterations = round(table.data["nanogpt"] * seconds)
        with tempfile.TemporaryDirectory() as tmp:
            repo = nanogpt.checkout(Path(job["nanogpt"]), CACHE)
            return nanogpt.run(repo, Path(tmp), train_text, held_out, iterations)
    if job["variant"] == "classic":
        from train_quality import run_classic

        steps = round(table.data["classic"] * seconds / (12 * 64))
        return run_classic(train_text, held_out, None, job["seed"], steps=steps)
    return _run_textgen(job["variant"], train_text, held_out, seconds, job["seed"], table)


def _run_textgen(
    name: str, train_text: str, held_out: str, seconds: float, seed: int, table: Table
) -> dict:
    """The textgen variant sized and budgeted as a quiet machine would run it, trained for
    that many steps."""
    import time

    import torch
    from train_quality import score, variant

    from textgen.model.transformer import Transformer  # noqa: F401  (torch first)
    from textgen.settings import ModelShape, TrainConfig
    from textgen.text.corpus import open_corpus
    from textgen.training import recipe, sizing
    from textgen.training.batches import split
    from textgen.training.preparation import encode, train_tokenizer
    from textgen.training.run import train

    arch_changes, train_changes, vocab = variant(name)
    architecture = {"context_window": 128, **arch_changes}
    config = TrainConfig(time_budget=seconds, seed=seed, **train_changes)
    with tempfile.TemporaryDirectory() as tmp:
        path, folder = Path(tmp) / "train.txt", Path(tmp) / "model"
        path.write_text(train_text, encoding="utf-8")
        started = time.perf_counter()
        with open_corpus([str(path)]) as corpus:
            tokenizer = train_tokenizer(folder, corpus, vocab)
            data = split(encode(corpus, tokenizer, lambda e: None), config, 128, corpus)
            cpu = torch.device("cpu")

            def quiet_speed(model_config, train_config, device) -> float:
                return table.rate(model_config, train_config) * table.data["training_share"]

            # The shape and settings as `textgen train` completes them (run.py, _planned),
            # at the table's speeds: the size, then the regularisation from the epochs of
            # the steps a quiet machine would train; once more if the dropout chosen
            # changes the shape's speed
            shape = ModelShape(**architecture)
            if shape.n_layer is None:
                probe = ModelShape(dropout=recipe.DROPOUT).but(shape)
                choice = sizing.choose(
                    probe, tokenizer.vocab_size, len(data.train), config, cpu, speed=quiet_speed
                )
                shape = shape.but(recipe.depth_shape(choice.depth))
            final = ModelShape(dropout=recipe.DROPOUT).but(shape)  # a guess
            for _ in range(2):
                model_config = final.config(tokenizer.vocab_size)
                step_tokens = config.batch_size * model_config.context_window
                tokens = table.training_tokens(model_config, config, seconds)
                steps = max(1, round(tokens / step_tokens))
                epochs = recipe.expected_epochs(steps * step_tokens, len(data.train))
                final, settled = recipe.regularised(shape, config, epochs)
            model_config = final.config(tokenizer.vocab_size)
            result = train(folder, corpus, replace(settled, steps=steps, time_budget=None), final)
        wall = time.perf_counter() - started
        scored = score(folder, held_out)
    return {
        "params": result.parameters,
        "steps": result.steps,
        "tokens": result.tokens_seen,
        "shape": f"{model_config.n_layer}x{model_config.n_embd}",
        "vocab": tokenizer.vocab_size,
        "val_tokens": len(data.val),
        "epochs": round(epochs, 2),
        "dropout": model_config.dropout,
        "bpe_dropout": settled.bpe_dropout,
        "seconds": wall,
        **scored,
    }


# -- many runs ----------------------------------------------------------------------------


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "textgen"], cwd=HERE.parent, capture_output=True, text=True
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def notebook_runs() -> list[dict]:
    if not RUNS.exists():
        return []
    return [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]


def _key(record: dict) -> tuple:
    return (record["variant"], record["corpus"], record["budget"], record["seed"])


def run_many(args: argparse.Namespace) -> None:
    Table.load()  # before any work: the budgets must be calibrated
    done = {_key(r) for r in notebook_runs()}
    jobs = []
    for budget in args.budgets:
        for corpus in args.corpora:
            for variant in args.variants:
                seeds = [0] if variant == "nanogpt" else args.seeds
                for seed in seeds:
                    job = {"variant": variant, "corpus": corpus, "budget": budget, "seed": seed}
                    if args.again or _key(job) not in done:
                        jobs.append({**job, "nanogpt": str(args.nanogpt or "")})
    if any(j["variant"] == "nanogpt" for j in jobs) and not args.nanogpt:
        sys.exit("the nanogpt variant needs --nanogpt DIR (a nanoGPT checkout or git folder)")
    from corpus_suite import corpus_text

    for corpus in args.corpora:  # built once, here, not by two workers at a time
        corpus_text(corpus, CACHE)
    print(f"{len(jobs)} runs, {args.jobs} at a time, one thread each", flush=True)
    env = {**os.environ, **ONE_THREAD}
    commit = _commit()

    def launch(job: dict) -> dict:
        started = datetime.datetime.now().isoformat(timespec="seconds")
        out = subprocess.run(
            [sys.executable, __file__, "worker", json.dumps(job)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            return {**job, "error": out.stderr.strip().splitlines()[-1:] or ["?"]}
        return {
            **job,
            "started": started,
            "commit": commit,
            "threads": 1,
            **json.loads(out.stdout.strip().splitlines()[-1]),
        }

    NOTEBOOK.mkdir(exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for record in pool.map(launch, jobs) if args.ordered else _as_done(pool, launch, jobs):
            record.pop("nanogpt", None)
            if "error" in record:
                print(f"  FAILED {_key(record)}: {record['error']}", flush=True)
                continue
            with open(RUNS, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(
                f"  {record['budget']:>3} {record['corpus']:<12} {record['variant']:<28} "
                f"seed {record['seed']}  bpb {record['bpb']:.3f}  "
                f"({record['steps']} steps, {record['seconds']:.0f}s)",
                flush=True,
            )


def _as_done(pool, launch, jobs):
    futures = [pool.submit(launch, job) for job in jobs]
    for future in concurrent.futures.as_completed(futures):
        yield future.result()


def table(args: argparse.Namespace) -> None:
    """Per budget: a row per corpus, a column per variant (median bpb over seeds), each
    against real nanoGPT where it ran, and the geometric mean of the ratios."""
    runs = notebook_runs()
    cells: dict[tuple, list[float]] = {}
    for r in runs:
        cells.setdefault((r["budget"], r["corpus"], r["variant"]), []).append(r["bpb"])
    variants = args.variants or sorted({r["variant"] for r in runs})
    for budget in args.budgets:
        corpora = [c for c in args.corpora if any((budget, c, v) in cells for v in variants)]
        if not corpora:
            continue
        base = "nanogpt" if any((budget, c, "nanogpt") in cells for c in corpora) else None
        print(f"\n{budget}: held-out bits per byte (median of seeds){' / nanogpt' if base else ''}")
        print(f"| corpus | {' | '.join(variants)} |")
        print("|---" * (len(variants) + 1) + "|")
        ratios: dict[str, list[float]] = {}
        for corpus in corpora:
            row = []
            anchor = (
                statistics.median(cells[(budget, corpus, base)])
                if base and (budget, corpus, base) in cells
                else None
            )
            for v in variants:
                values = cells.get((budget, corpus, v))
                if not values:
                    row.append("")
                    continue
                bpb = statistics.median(values)
                text = f"{bpb:.3f}" + (f" (n={len(values)})" if len(values) > 1 else "")
                if anchor and v != base:
                    ratios.setdefault(v, []).append(bpb / anchor)
                    text += f" {bpb / anchor:.2f}x"
                row.append(text)
            print(f"| {corpus} | {' | '.join(row)} |")
        if ratios:
            geo = [
                f"{math.exp(statistics.fmean(math.log(x) for x in ratios[v])):.2f}x"
                f" ({len(ratios[v])})"
                if v in ratios
                else ""
                for v in variants
            ]
            print(f"| geometric mean | {' | '.join(geo)} |")


def main() -> None:
    from corpus_suite import CORPORA

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cal = commands.add_parser("calibrate", help="measure the throughput table (quiet machine)")
    cal.add_argument("--variants", nargs="+", default=["default"])
    cal.add_argument("--seconds", type=float, default=1.5)
    cal.add_argument("--rounds", type=int, default=1, help="median of this many per cell")
    cal.add_argument("--threads", type=int, default=2)
    cal.add_argument("--nanogpt", type=Path)
    cal.add_argument(
        "--out",
        type=Path,
        help="write the measurements here (the table with the cells measured replaced), "
        "leaving the notebook's table as it is: a re-check on another day or machine",
    )
    cal.add_argument(
        "--full",
        action="store_true",
        help="measure the classic rate and the training share again too (changes every budget)",
    )
    run = commands.add_parser("run", help="run experiments, appending to the notebook")
    run.add_argument("--corpora", nargs="+", default=CORPORA)
    run.add_argument("--variants", nargs="+", default=["nanogpt", "classic", "default"])
    run.add_argument("--budgets", nargs="+", default=["1m", "5m"], choices=BUDGETS)
    run.add_argument("--seeds", nargs="+", type=int, default=[0])
    run.add_argument("--jobs", type=int, default=2)
    run.add_argument("--nanogpt", type=Path)
    run.add_argument("--again", action="store_true", help="run even if the notebook has it")
    run.add_argument("--ordered", action="store_true", help=argparse.SUPPRESS)
    tab = commands.add_parser("table", help="summarise the notebook")
    tab.add_argument("--corpora", nargs="+", default=CORPORA)
    tab.add_argument("--variants", nargs="+")
    tab.add_argument("--budgets", nargs="+", default=list(BUDGETS))
    worker = commands.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("job")
    args = parser.parse_args()
    if args.command == "calibrate":
        calibrate(args)
    elif args.command == "run":
        run_many(args)
    elif args.command == "table":
        table(args)
    else:
        print(json.dumps(run_one(json.loads(args.job))))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
