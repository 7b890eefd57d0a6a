"""`textgen train` and `textgen tokenizer train`: options in, one library call, the
training screen out."""

from __future__ import annotations

import contextlib
import shlex
from typing import Annotated

import typer

from textgen.cli.options import (
    CorpusArgument,
    FieldOption,
    ModelOption,
    TemplateOption,
    VocabSizeOption,
    console,
    corpus_reading,
    parse_vocab_size,
    parsed,
    resolve,
    unescape,
)
from textgen.errors import SettingError
from textgen.records import World
from textgen.settings import ModelShape, TrainConfig
from textgen.training.recipe import (
    BPE_DROPOUT,
    BPE_DROPOUT_EPOCHS,
    DROPOUT,
    DROPOUT_EPOCHS,
    RECIPES,
    SIZE_PRESETS,
    check_shape,
    model_shape,
)
from textgen.training.recipe import recipe as choose_recipe
from textgen.ui.console import notice
from textgen.units import parse_duration


def _default(name: str) -> str:
    """A TrainConfig default, for --help: read from the dataclass, so it cannot drift."""
    return str(TrainConfig.__dataclass_fields__[name].default)


def train(
    corpus: CorpusArgument = None,
    model: ModelOption = "default",
    size: Annotated[
        str,
        typer.Option(
            help="auto: sized to the budget and the corpus; or a preset: "
            f"{', '.join(SIZE_PRESETS)}."
        ),
    ] = "auto",
    recipe: Annotated[
        str,
        typer.Option(
            help="Where the settings start: "
            + "; ".join(f"{name}: {r.summary}" for name, r in RECIPES.items())
            + ". Any option given still counts."
        ),
    ] = "default",
    layers: Annotated[
        int | None,
        typer.Option(help="Override the preset's layers (with auto: the depth, 32 wide each)."),
    ] = None,
    width: Annotated[int | None, typer.Option(help="Override the preset's width.")] = None,
    heads: Annotated[int | None, typer.Option(help="Override the preset's heads.")] = None,
    context: Annotated[
        int | None,
        typer.Option(help="Context window, in tokens.  [default: 128, or BASE's with --from]"),
    ] = None,
    dropout: Annotated[
        float | None,
        typer.Option(
            help="Dropout while training. Default: from how many times the run reads its "
            f"text (its epochs, planned from the budget): {DROPOUT:g} from "
            f"{DROPOUT_EPOCHS:g} epochs on, else 0."
        ),
    ] = None,
    bpe_dropout: Annotated[
        float | None,
        typer.Option(
            help="Train on the text segmented anew, skipping each BPE merge with this "
            f"probability. Default: {BPE_DROPOUT:g} from {BPE_DROPOUT_EPOCHS:g} epochs "
            "of its text on, else 0."
        ),
    ] = None,
    vocab_size: VocabSizeOption = None,
    steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    time: Annotated[
        str | None,
        typer.Option(
            "--time", help="Wall-clock budget, e.g. 90s, 5m, 2h. Default 5m without --steps."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help=f"Sequences per step, over all processes.  [default: {_default('batch_size')}]"
        ),
    ] = None,
    micro_batch_size: Annotated[
        int | None,
        typer.Option(
            help="Sequences per forward pass in each process; steps then accumulate "
            "gradients over several. Default: the whole share of the batch at once."
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help=f"Peak learning rate.  [default: {_default('learning_rate')}]"),
    ] = None,
    eval_interval: Annotated[
        int | None,
        typer.Option(
            help=f"Steps between validation passes.  [default: {_default('eval_interval')}]"
        ),
    ] = None,
    sample_every: Annotated[
        int | None,
        typer.Option(
            help="Steps between the samples the model writes as it trains, from the same "
            "prompt and seed each time; 0: none.  [default: at each validation pass]",
            show_default=False,
        ),
    ] = None,
    sample_prompt: Annotated[
        str | None,
        typer.Option(
            help="The samples' prompt.  [default: the corpus's first word]",
            show_default=False,
        ),
    ] = None,
    sample_tokens: Annotated[
        int | None,
        typer.Option(
            help=f"Tokens a sample writes; 0: none.  [default: {_default('sample_tokens')}]",
            show_default=False,
        ),
    ] = None,
    save_every: Annotated[
        str | None,
        typer.Option(
            help="Checkpoint every N steps (200) or every duration (10m). "
            "Default: at each validation pass."
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Share of the corpus held out for validation (at most 262k tokens). "
            "Default: 1 %, at least 2k tokens (at most a tenth of a small corpus).",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help=f"Random seed.  [default: {_default('seed')}]")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the model in the folder where it stopped; --steps and "
            "--time then add to its budget."
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace the model in the folder (at the new model's first checkpoint)."),
    ] = False,
    base: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="BASE",
            help="Fine-tune: start from this trained model's weights and tokenizer (BASE is "
            "left as it is), with a fresh optimizer and schedule.",
            show_default=False,
        ),
    ] = None,
    field: FieldOption = None,
    template: TemplateOption = None,
    keep_tokenizer: Annotated[
        bool,
        typer.Option(
            help="Train with the folder's tokenizer even if it was trained on other text."
        ),
    ] = False,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the model for training. Default: on CUDA only.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a tokenizer and a transformer on CORPUS, saving them into the model folder.

    Several processes (CPUs or GPUs) train one model together when started by torchrun:
    torchrun --nproc-per-node 4 -m textgen train corpus.txt --model big
    """
    world = World.from_environment()
    shape_options = (size != "auto", layers, width, heads, context, vocab_size)
    _check_combination(corpus, world, resume, overwrite, base, shape_options)
    start = choose_recipe(recipe)
    if recipe != "default" and (resume or base):
        raise SettingError("--recipe starts a new model; a resumed or fine-tuned one keeps its own")
    shape = start.shape.but(model_shape(size, layers, width, heads)).but(
        ModelShape(context_window=context, dropout=dropout)
    )
    check_shape(shape)  # before any work
    time_budget = parsed("--time", parse_duration, time) if time else None
    given = _given(
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        compile=compile,
        bpe_dropout=bpe_dropout,
        learning_rate=lr,
        eval_interval=eval_interval,
        sample_every=sample_every,
        sample_prompt=None if sample_prompt is None else unescape(sample_prompt),
        sample_tokens=sample_tokens,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        **_save_every(save_every),
    )
    vocab_tokens, folder = parse_vocab_size(vocab_size) or start.vocab_size, resolve(model)
    budget = time_budget or (None if steps else 300.0)
    config = TrainConfig(steps=steps, time_budget=budget, **{**start.training, **given})

    from textgen.store.metrics import read_metrics
    from textgen.training.run import resume as resume_run
    from textgen.training.run import train as train_run

    def run(text, view):  # noqa: ANN001, ANN202 - the library call, with the corpus and screen
        if resume:  # without a corpus, the run's own
            return resume_run(folder, text, steps, time_budget, given, callback=view)
        origin = resolve(base) if base else None
        return train_run(
            folder, text, config, shape, vocab_tokens, overwrite, view, keep_tokenizer, origin
        )

    reading = corpus_reading(field, template)
    if resume and not corpus and (field or template is not None):
        raise SettingError(
            "--field and --template on --resume read a corpus given again: give it "
            "(textgen train FILE --resume --field ...); without one the run reads its own "
            "as it did"
        )
    result, view = _on_screen(run, corpus, resume, world, reading)
    if world.is_main:
        view.summary(result, model, read_metrics(result.folder), _resume_command(model, corpus))
    if result.stopped_by is not None:
        raise typer.Exit(128 + result.stopped_by)


def _on_screen(run, corpus: list[str] | None, resume: bool, world: World, reading):  # noqa: ANN001, ANN202
    """`run(corpus, view)` with the corpus open (none when a resumed run reads its own)
    and the training screen live; the processes of a torchrun shut down after it."""
    from textgen.text.corpus import BUILTIN_NAME, open_corpus
    from textgen.training import distributed
    from textgen.ui.training import TrainView

    if not corpus and world.is_main and not resume:
        notice(console, f"no corpus given: using the {BUILTIN_NAME}")
    source = (
        open_corpus(corpus, reading=reading)
        if corpus or not resume
        else contextlib.nullcontext(None)
    )
    try:
        with source as text, TrainView(console) as view:
            return run(text, view), view
    finally:
        distributed.shutdown()


def _check_combination(
    corpus: list[str] | None,
    world: World,
    resume: bool,
    overwrite: bool,
    base: str | None,
    shape_options: tuple[object, ...],
) -> None:
    """Options that cannot go together: a usage error before any work. `shape_options`:
    whether --size was given, then --layers, --width, --heads, --context, --vocab-size."""
    if world.distributed and "-" in (corpus or []):
        raise SettingError(
            "CORPUS: under torchrun every process reads the corpus: give files, not -"
        )
    if resume and overwrite:
        raise SettingError("--resume cannot be combined with --overwrite")
    if base is not None and resume:
        raise SettingError("--from starts a new model; --resume continues one: use one of them")
    names = ("--size", "--layers", "--width", "--heads", "--context", "--vocab-size")
    clash = [n for n, value in zip(names, shape_options, strict=True) if value not in (None, False)]
    if base is not None and clash:  # the model's shape and tokenizer are BASE's
        raise SettingError(
            f"{clash[0]}: a model fine-tuned --from BASE keeps BASE's shape and tokenizer"
        )


def _given(**settings: object) -> dict[str, object]:
    """The training settings given on the command line (the others stay the defaults,
    or a resumed run's own)."""
    return {name: value for name, value in settings.items() if value is not None}


def _resume_command(model: str, corpus: list[str] | None) -> str:
    """How to go on from an interrupted run: its corpus is recorded, unless it was a
    stream (stdin, a pipe), which has to be given again."""
    command = f"textgen train --model {shlex.quote(model)} --resume"
    if corpus and "-" in corpus:
        return f"... | {command.replace('--resume', '- --resume')}"
    return command


def _save_every(text: str | None) -> dict:
    """'200' -> every 200 steps; '10m' -> every 10 minutes."""
    if text is None:
        return {}
    if text.strip().isdigit():
        return {"save_every_steps": int(text)}
    return {"save_every_seconds": parsed("--save-every", parse_duration, text)}


def tokenizer_train(
    corpus: CorpusArgument = None,
    vocab_size: VocabSizeOption = None,
    model: ModelOption = "default",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing tokenizer.")] = False,
    field: FieldOption = None,
    template: TemplateOption = None,
) -> None:
    """Train only the tokenizer; `textgen train --model NAME` then uses it."""
    from textgen.text.corpus import open_corpus
    from textgen.training.preparation import train_tokenizer
    from textgen.ui.training import TrainView

    vocab_tokens, reading = parse_vocab_size(vocab_size), corpus_reading(field, template)
    with open_corpus(corpus or [], reading=reading) as source, TrainView(console) as view:
        train_tokenizer(resolve(model), source, vocab_tokens, overwrite, view)
