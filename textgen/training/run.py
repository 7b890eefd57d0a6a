"""Training runs, from the library: `train` a new model on a corpus, or `resume` one.

Both prepare the same way (the device, the process group under torchrun, the tokenizer,
the encoded corpus, the held-out split) and hand the model to a `Trainer`, whose results
a `Checkpointer` writes into the model folder. What the caller leaves open (the model's
size, dropout, BPE-dropout, the vocabulary) the recipe chooses from the corpus and the
budget (`textgen.training.recipe`, `textgen.training.sizing`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from textgen.errors import SettingError, TextgenError
from textgen.files import remove_temporaries
from textgen.model import folder as model_folder
from textgen.model.device import choose_device, prepare_device
from textgen.model.transformer import Transformer
from textgen.records import Callback, Notice, TrainResult, World
from textgen.settings import ModelConfig, TrainConfig
from textgen.text.corpus import Corpus
from textgen.text.segmentations import segmentations
from textgen.text.tokenizer import Tokenizer
from textgen.text.tokens import TokenFile
from textgen.training import distributed, recipe, sizing
from textgen.training.batches import Split, micro_batches, split
from textgen.training.checkpoint import Checkpointer
from textgen.training.preparation import encode, prepare_tokenizer
from textgen.training.trainer import Trainer


def _quiet(event: object) -> None:
    pass


def train(
    folder: Path,
    corpus: Corpus,
    config: TrainConfig,
    architecture: dict[str, Any],
    vocab_size: int | None = None,
    overwrite: bool = False,
    callback: Callback = _quiet,
) -> TrainResult:
    """Train a new model in `folder` on `corpus`.

    `architecture` holds ModelConfig fields except the vocabulary size, which comes from
    the tokenizer (the folder's, if it has one, else trained here). Left out, the recipe
    chooses: the shape (without `n_layer`, sized for the budget and the corpus), dropout;
    and with `config.bpe_dropout` None, BPE-dropout. A folder that already holds a
    trained model is only replaced with `overwrite`.
    """
    device, world, callback = _start(config, callback)
    architecture, config = recipe.for_corpus(architecture, config, corpus.total_bytes)

    def prepare() -> TokenFile:  # in process 0 only
        if model_folder.has_weights(folder) and not overwrite:
            raise TextgenError(
                f"{folder} already holds a trained model; add --resume to continue training "
                "it or --overwrite to replace it"
            )
        tokenizer = prepare_tokenizer(folder, corpus, vocab_size, overwrite, callback)
        folder.mkdir(parents=True, exist_ok=True)
        remove_temporaries(folder)
        if overwrite:
            for name in (model_folder.METRICS, model_folder.TRAIN_STATE, model_folder.WEIGHTS):
                (folder / name).unlink(missing_ok=True)
        model_folder.save_tokenizer(folder, tokenizer)
        return encode(corpus, tokenizer, callback)

    token_file = distributed.on_main(prepare)
    tokenizer = model_folder.load_tokenizer(folder)
    context = architecture.get("context_window", ModelConfig.context_window)
    data = split(token_file, config, context)
    if "n_layer" not in architecture:  # size auto
        choice = distributed.on_main(
            lambda: sizing.choose(
                architecture, tokenizer.vocab_size, len(data.train), config, device, world.size
            )
        )
        callback(Notice(choice.describe()))
        architecture = {**architecture, **recipe.depth_shape(choice.depth)}
    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = Transformer(ModelConfig(vocab_size=tokenizer.vocab_size, **architecture)).to(device)
    return _run(folder, model, tokenizer, config, token_file, data, corpus, callback)


def resume(
    folder: Path,
    corpus: Corpus,
    more_steps: int | None = None,
    more_time: float | None = None,
    changes: dict[str, Any] | None = None,
    callback: Callback = _quiet,
) -> TrainResult:
    """Continue training the model in `folder` exactly where its last checkpoint left it:
    weights, optimizer, learning-rate schedule, data order and elapsed time.

    With neither `more_steps` nor `more_time`, the run finishes its original budget; with
    them, the budget grows by that much (the learning rate warms back up and decays again
    towards the new end). `changes` replaces other saved settings (device, intervals).
    """
    if not (folder / model_folder.TRAIN_STATE).exists():
        raise TextgenError(
            f"{folder}: nothing to resume (no {model_folder.TRAIN_STATE}); "
            "train it without --resume"
        )
    meta = model_folder.read_config(folder)
    state = model_folder.load_train_state(folder)
    config = _resumed_config(folder, state, more_steps, more_time, changes or {})
    device, world, callback = _start(config, callback)
    tokenizer = model_folder.load_tokenizer(folder)
    model = Transformer(meta["model_config"])
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise TextgenError(
            f"{folder / model_folder.TRAIN_STATE}: weights do not fit config.json ({exc})"
        ) from None
    model.to(device)

    def prepare() -> TokenFile:  # in process 0 only
        remove_temporaries(folder)
        callback(Notice(f"resuming {folder} from step {state['step']:,}"))
        return encode(corpus, tokenizer, callback)

    token_file = distributed.on_main(prepare)
    data = split(token_file, config, model.config.context_window)
    if len(data.train) + len(data.val) != state.get("corpus_tokens"):
        callback(Notice("the corpus differs from the last run's: continuing on it", True))
    return _run(folder, model, tokenizer, config, token_file, data, corpus, callback, state)


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


def _resumed_config(
    folder: Path,
    state: dict[str, Any],
    more_steps: int | None,
    more_time: float | None,
    changes: dict[str, Any],
) -> TrainConfig:
    """The saved training settings, with a larger budget and the changes asked for."""
    try:
        config = TrainConfig.from_dict(state["train_config"])
    except (KeyError, TypeError, SettingError) as exc:
        raise TextgenError(
            f"{folder / model_folder.TRAIN_STATE}: bad training settings: {exc}"
        ) from None
    updates = dict(changes)
    if more_steps is not None:
        updates["steps"] = state["step"] + more_steps
    if more_time is not None:
        updates["time_budget"] = state["elapsed"] + more_time
    return replace(config, **updates)


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
) -> TrainResult:
    """Train `model` from its state (a fresh one, or a checkpoint's) to the budget's end."""
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
    checkpoints = Checkpointer(folder, tokenizer, config, run_summary, world)
    trainer = Trainer(
        model,
        config,
        data,
        stream.array() if stream is not None else data.train,
        tokenizer.token_bytes,
        callback,
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
    return trainer.run(checkpoints)
