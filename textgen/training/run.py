"""Training runs, from the library: `train` a new model on a corpus, or `resume` one.

Both prepare the same way (the device, the process group under torchrun, the tokenizer,
the encoded corpus, the held-out split) and hand the model to a `Trainer`, whose results
a `Checkpointer` writes into the model folder. What the caller leaves open (the model's
size, dropout, BPE-dropout, the vocabulary) the recipe chooses from the corpus and the
budget (`textgen.training.recipe`, `textgen.training.sizing`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from textgen.errors import SettingError, TextgenError
from textgen.files import FolderLock, check_writable, remove_temporaries
from textgen.model.device import choose_device, prepare_device
from textgen.model.loaded import LoadedModel
from textgen.model.memory import batch_bytes, check_fits, training_step_bytes
from textgen.model.transformer import Transformer
from textgen.records import Callback, Notice, TrainResult, World
from textgen.settings import MIN_VOCAB_SIZE, ModelConfig, ModelShape, TrainConfig
from textgen.store import folder as model_folder
from textgen.store import metrics
from textgen.store.layout import MODEL_FILES
from textgen.store.writer import FolderContents, Staging
from textgen.text.corpus import Corpus, reopen
from textgen.text.segmentations import segmentations
from textgen.text.tokenizer import Tokenizer
from textgen.text.tokens import TokenFile
from textgen.training import distributed, recipe, sizing
from textgen.training.batches import Split, micro_batches, split
from textgen.training.checkpoint import Checkpointer
from textgen.training.optim import fraction_done
from textgen.training.preparation import choose_tokenizer, encode
from textgen.training.samples import Sampler
from textgen.training.trainer import Trainer
from textgen.units import format_duration


def _quiet(event: object) -> None:
    pass


def train(
    folder: Path,
    corpus: Corpus,
    config: TrainConfig,
    shape: ModelShape | None = None,
    vocab_size: int | None = None,
    overwrite: bool = False,
    callback: Callback = _quiet,
    keep_tokenizer: bool = False,
    base: Path | None = None,
) -> TrainResult:
    """Train a new model in `folder` on `corpus`; with `base`, fine-tune that trained model
    (its weights, tokenizer and shape; a fresh optimizer and schedule; `base` untouched).

    `shape` gives the architecture but the vocabulary size, which comes from the
    tokenizer (the folder's, if it was trained on this corpus or `keep_tokenizer` says
    so, else trained here). Left open, the recipe chooses: the size (without `n_layer`,
    sized for the budget and the corpus), dropout; and with
    `config.bpe_dropout` None, BPE-dropout. A folder that already holds a trained model is
    only replaced with `overwrite`, and then only at the new model's first complete
    checkpoint (`textgen.store.writer`).
    """
    device, world, callback = _start(config, callback)
    shape = shape or ModelShape()
    start = _base(base, folder, shape) if base is not None else None
    if start is not None:
        shape = start.shape.but(shape)
    # before any work, as far as the shape is known: the smallest model of it
    fits(recipe.depth_shape(1).but(shape).config(MIN_VOCAB_SIZE), device, config)
    staging = Staging(folder)
    with _writing(folder, world):

        def prepare() -> tuple[TokenFile, Path]:  # in process 0 only
            contents = FolderContents.of(folder)
            contents.check(folder, overwrite)
            place = staging.create()
            if start is not None:
                tokenizer = start.lm.tokenizer
                callback(Notice(f"fine-tuning {base}: its weights, tokenizer and shape"))
            else:
                tokenizer = choose_tokenizer(
                    folder, contents, corpus, vocab_size, overwrite, keep_tokenizer, callback
                )
            model_folder.save_tokenizer(place, tokenizer)
            return encode(corpus, tokenizer, callback), place

        try:
            token_file, place = distributed.on_main(prepare)
            tokenizer = model_folder.load_tokenizer(place)
            data = split(token_file, config, shape.context, corpus)
            shape, config = _planned(shape, tokenizer, config, data, device, world, callback)
            if start is not None:
                model = start.model(shape, device)
            else:
                torch.manual_seed(config.seed)  # the same initial weights in every process
                model = Transformer(shape.config(tokenizer.vocab_size)).to(device)
            return _run(
                place, model, tokenizer, config, token_file, data, corpus, callback, staging=staging
            )
        finally:
            staging.discard()  # a run that never checkpointed leaves the folder as it was


@dataclass
class _Base:
    """A trained model a new one starts from (`train --from`)."""

    lm: LoadedModel
    shape: ModelShape  # its shape, less what the new corpus decides (dropout)

    def model(self, shape: ModelShape, device: torch.device) -> Transformer:
        """BASE's weights in a model of BASE's shape, with the new run's dropout."""
        model = Transformer(shape.config(self.lm.tokenizer.vocab_size), init_weights=False)
        model.load_state_dict(self.lm.model.state_dict())
        return model.to(device)


def fits(model_config: ModelConfig, device: torch.device, config: TrainConfig) -> None:
    """Refuse, naming the batch option, a step this device's memory cannot hold."""
    micro_batch, count = micro_batches(config, distributed.world().size)
    ids = batch_bytes(model_config, micro_batch * count)
    check_fits(ids, device, f"{{name}} {config.batch_size:,}: a step's batch", "batch_size")
    setting = "micro_batch_size" if config.micro_batch_size else "batch_size"
    check_fits(
        ids + training_step_bytes(model_config, micro_batch),
        device,
        f"{{name}} {getattr(config, setting):,}: a training step",
        setting,
    )


def _base(base: Path, folder: Path, shape: ModelShape) -> _Base:
    if base.resolve() == folder.resolve():
        raise SettingError("--from: fine-tune into another folder than BASE (BASE stays as it is)")
    lm = model_folder.load(base)
    own = replace(ModelShape.of(lm.model_config), dropout=None)
    changed = [k for k, v in shape.given().items() if getattr(own, k) not in (None, v)]
    if changed:
        raise SettingError(f"{changed[0]}: a model fine-tuned --from {base} keeps its {changed[0]}")
    return _Base(lm, own)


def _planned(
    shape: ModelShape,
    tokenizer: Tokenizer,
    config: TrainConfig,
    data: Split,
    device: torch.device,
    world: World,
    callback: Callback,
) -> tuple[ModelShape, TrainConfig]:
    """The shape and settings the recipe completes once the budget's tokens are known: the
    size, if it was left to the recipe (`--size auto`), then dropout, BPE-dropout and
    weight decay from how many times the run will read its training text."""
    probe = ModelShape(dropout=recipe.DROPOUT).but(shape)  # timed as it will likely train
    if shape.n_layer is None:
        choice = distributed.on_main(
            lambda: sizing.choose(
                probe, tokenizer.vocab_size, len(data.train), config, device, world.size
            )
        )
        callback(Notice(choice.describe()))
        shape, planned = shape.but(recipe.depth_shape(choice.depth)), choice.planned_tokens
    elif shape.dropout is None or config.bpe_dropout is None or config.weight_decay is None:
        model_config = probe.config(tokenizer.vocab_size)
        planned, _ = distributed.on_main(
            lambda: sizing.planned_tokens(model_config, config, device, world.size)
        )
    else:
        return shape, config  # nothing left open
    epochs = recipe.expected_epochs(planned, len(data.train))
    chosen, settled = recipe.regularised(shape, config, epochs)
    open_ones = [
        f"dropout {chosen.dropout:g}" if shape.dropout is None else "",
        f"BPE-dropout {settled.bpe_dropout:g}" if config.bpe_dropout is None else "",
        f"weight decay {settled.weight_decay:g}" if config.weight_decay is None else "",
    ]
    chosen_ones = [part for part in open_ones if part]
    if chosen_ones:
        listed = ", ".join(chosen_ones[:-1]) + " and " * (len(chosen_ones) > 1) + chosen_ones[-1]
        callback(Notice(f"{listed} for {epochs:.1f} epochs of its text"))
    return chosen, settled


def resume(
    folder: Path,
    corpus: Corpus | None = None,
    more_steps: int | None = None,
    more_time: float | None = None,
    changes: dict[str, Any] | None = None,
    callback: Callback = _quiet,
) -> TrainResult:
    """Continue training the model in `folder` exactly where its last checkpoint left it:
    weights, optimizer, learning-rate schedule, data order, every random state and elapsed
    time. `corpus` None: the run's own corpus, if it is still there unchanged.

    With neither `more_steps` nor `more_time`, the run finishes its original budget; with
    them, it trains that much more, whatever its budget was (the learning rate warms back
    up and decays again towards the new end). `changes` replaces other saved settings
    (device, intervals).
    """
    with _writing(folder, World.from_environment()):  # first: a run may be under way
        return _resume(folder, corpus, more_steps, more_time, changes or {}, callback)


def _resume(
    folder: Path,
    corpus: Corpus | None,
    more_steps: int | None,
    more_time: float | None,
    changes: dict[str, Any],
    callback: Callback,
) -> TrainResult:
    if not (folder / model_folder.TRAIN_STATE).exists():
        raise TextgenError(
            f"{folder}: nothing to resume (no {model_folder.TRAIN_STATE}); "
            "train it without --resume"
        )
    check_writable(folder, MODEL_FILES)  # its checkpoints go there: now, not at the first
    meta = model_folder.read_config(folder)
    state = model_folder.load_train_state(folder)
    config = _resumed_config(folder, state, more_steps, more_time, changes)
    device, world, callback = _start(config, callback)
    tokenizer = model_folder.load_tokenizer(folder)
    model = Transformer(meta["model_config"], init_weights=False)  # weights: the checkpoint's
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else "no weights"
        raise TextgenError(
            f"{folder / model_folder.TRAIN_STATE}: its weights do not fit config.json ({first})"
        ) from None
    model.to(device)
    with contextlib.ExitStack() as stack:
        if corpus is None:
            corpus = stack.enter_context(_recorded_corpus(folder, state))

        def prepare() -> TokenFile:  # in process 0 only
            remove_temporaries(folder)
            metrics.keep_metrics_until(folder, state["step"])
            callback(Notice(f"resuming {folder} from step {state['step']:,}"))
            recorded = state.get("corpus", {}).get("fingerprint", corpus.fingerprint)
            if recorded != corpus.fingerprint:
                callback(Notice("the corpus differs from the last run's: continuing on it", True))
            return encode(corpus, tokenizer, callback)

        token_file = distributed.on_main(prepare)
        data = split(token_file, config, model.config.context_window, corpus)
        return _run(folder, model, tokenizer, config, token_file, data, corpus, callback, state)


@contextlib.contextmanager
def _writing(folder: Path, world: World) -> Iterator[None]:
    """The folder's lock, held by the process that writes it (process 0) for the run."""
    with FolderLock(folder) if world.is_main else contextlib.nullcontext():
        yield


def _recorded_corpus(folder: Path, state: dict[str, Any]) -> Corpus:
    record = state.get("corpus")
    if not isinstance(record, dict):
        raise TextgenError(
            f"{folder}: its run did not record its corpus; give it again: "
            f"textgen train CORPUS --model {folder} --resume"
        )
    try:
        return reopen(record)
    except TextgenError as exc:
        raise TextgenError(f"{folder}: {exc}") from None


def _start(config: TrainConfig, callback: Callback) -> tuple[torch.device, World, Callback]:
    """The device, this process's place among the processes torchrun started, and the
    callback it reports to (process 0 reports for all). A batch that does not split
    over them is refused here, before any work."""
    device = choose_device(config.device)
    world = distributed.setup(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    prepare_device(device)
    micro_batches(config, world.size)
    return device, world, callback if world.is_main else _quiet


# Settings whose default changed, as runs saved before the change trained: Muon had no
# weight decay of its own; windows were drawn at random, with replacement.
TRAINED_BEFORE = {"muon_weight_decay": 0.0, "sampling": "random"}


def _resumed_config(
    folder: Path,
    state: dict[str, Any],
    more_steps: int | None,
    more_time: float | None,
    changes: dict[str, Any],
) -> TrainConfig:
    """The saved training settings, with the budget and the changes asked for."""
    try:
        saved = state["train_config"]
        # a run saved before a setting's default changed trained with the old one
        saved = {**TRAINED_BEFORE, **saved} if isinstance(saved, dict) else saved
        config = TrainConfig.from_dict(saved)
    except (KeyError, TypeError, SettingError) as exc:
        raise TextgenError(
            f"{folder / model_folder.TRAIN_STATE}: bad training settings: {exc}"
        ) from None
    if more_steps is not None or more_time is not None:  # that much more, in steps or time
        changes = {
            **changes,
            "steps": None if more_steps is None else state["step"] + more_steps,
            "time_budget": None if more_time is None else state["elapsed"] + more_time,
        }
    config = replace(config, **changes)
    if fraction_done(state["step"], state["elapsed"], config) >= 1:
        parts = [] if config.steps is None else [f"{config.steps:,} steps"]
        if config.time_budget is not None:
            parts.append(format_duration(config.time_budget))
        budget = " or ".join(parts)
        raise SettingError(
            f"{folder}: its run already finished its budget ({budget}); add --steps N or "
            "--time T to train it that much more"
        )
    return config


def _run(
    folder: Path,
    model: Transformer,
    tokenizer: Tokenizer,
    config: TrainConfig,
    token_file: TokenFile,
    data: Split,
    corpus: Corpus,
    callback: Callback,
    state: dict[str, Any] | None = None,
    staging: Staging | None = None,
) -> TrainResult:
    """Train `model` from its state (a fresh one, or a checkpoint's) to the budget's end,
    in `folder` (a new model's staging folder, put in place at its first checkpoint)."""
    world = distributed.world()
    stream = distributed.on_main(
        lambda: segmentations(
            token_file, data.train, tokenizer, config.bpe_dropout or 0.0, config.seed, callback
        )
    )
    run_summary = {
        "corpus": corpus.description,
        "corpus_bytes": corpus.total_bytes,
        "train_tokens": len(data.train),
        "val_tokens": len(data.val),
    }
    fits(model.config, next(model.parameters()).device, config)
    checkpoints = Checkpointer(
        folder, tokenizer, config, run_summary, world, corpus.record(), staging
    )
    trainer = Trainer(
        model,
        config,
        data,
        stream.array() if stream is not None else data.train,
        tokenizer.token_bytes,
        callback,
        Sampler.for_run(config, tokenizer, corpus.first_word()),
    )
    if state is not None:
        try:
            trainer.load_state_dict(state)
            checkpoints.restore(state)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise TextgenError(
                f"{folder / model_folder.TRAIN_STATE}: incomplete training state ({exc}); "
                "train again with --overwrite"
            ) from None
    return replace(trainer.run(checkpoints), first_word=corpus.first_word())
