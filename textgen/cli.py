"""The command line: each command turns its options into one library call and hands the
result to `textgen.render`.

stdout carries only the product (generated text); everything else goes to stderr.
Exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted. torch is imported
inside the commands that need it, so `textgen --help` and option errors stay instant.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import replace
from typing import Annotated, Any

import typer

from textgen import cli_inspect, render
from textgen.cli_common import (
    DeviceOption,
    JsonOption,
    ModelOption,
    console,
    parsed,
    read_text_argument,
    resolve,
)
from textgen.config import (
    DTYPES,
    MIN_VOCAB_SIZE,
    SIZE_PRESETS,
    ModelConfig,
    SampleConfig,
    TrainConfig,
    check_vocab_size,
    default_bpe_dropout,
    default_dropout,
    depth_shape,
    parse_count,
    parse_duration,
)
from textgen.errors import TextgenError

# typer raises click's exceptions (a vendored copy in recent typer): find the base class of
# usage errors through the one typer exports.
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

app = typer.Typer(
    name="textgen",
    help="Train a small transformer on your own text and watch it write.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
tokenizer_app = typer.Typer(help="Train a tokenizer on its own.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")

# -- train ---------------------------------------------------------------------------------


@app.command()
def train(
    corpus: Annotated[
        list[str] | None,
        typer.Argument(
            help="Text files, folders, glob patterns, or - for stdin. "
            "None: the built-in corpus (Python's documentation).",
            show_default=False,
        ),
    ] = None,
    model: ModelOption = "default",
    size: Annotated[
        str,
        typer.Option(
            help="auto: sized to the budget and the corpus; or a preset: "
            f"{', '.join(SIZE_PRESETS)}."
        ),
    ] = "auto",
    layers: Annotated[
        int | None,
        typer.Option(help="Override the preset's layers (with auto: the depth, 32 wide each)."),
    ] = None,
    width: Annotated[int | None, typer.Option(help="Override the preset's width.")] = None,
    heads: Annotated[int | None, typer.Option(help="Override the preset's heads.")] = None,
    context: Annotated[int, typer.Option(help="Context window, in tokens.")] = 128,
    dropout: Annotated[
        float | None,
        typer.Option(help="Dropout while training. Default: 0.2 for corpora under 50 MB, else 0."),
    ] = None,
    bpe_dropout: Annotated[
        float | None,
        typer.Option(
            help="Train on the text segmented anew, skipping each BPE merge with this "
            "probability. Default: 0.1 for corpora under 50 MB, else 0."
        ),
    ] = None,
    vocab_size: Annotated[
        str | None,
        typer.Option(help="Tokenizer vocabulary, e.g. 2048 or 4k. Default: sized to the corpus."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    time: Annotated[
        str | None,
        typer.Option(
            "--time", help="Wall-clock budget, e.g. 90s, 5m, 2h. Default 5m without --steps."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Sequences per step, over all processes. [default: 16]"),
    ] = None,
    micro_batch_size: Annotated[
        int | None,
        typer.Option(
            help="Sequences per forward pass in each process; steps then accumulate "
            "gradients over several. Default: the whole share of the batch at once."
        ),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate. [default: 0.002]")] = None,
    eval_interval: Annotated[
        int | None, typer.Option(help="Steps between validation passes. [default: 100]")
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
        typer.Option(help="Share of the corpus held out, at most 262k tokens. [default: 0.1]"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. [default: 1337]")] = None,
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
    overwrite: Annotated[bool, typer.Option(help="Replace the model in the folder.")] = False,
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
    if size != "auto" and size not in SIZE_PRESETS:
        raise typer.BadParameter(
            f"choose auto or one of {', '.join(SIZE_PRESETS)}", param_hint="--size"
        )
    if resume and overwrite:
        raise typer.BadParameter("cannot be combined with --overwrite", param_hint="--resume")
    architecture: dict[str, Any] = {"context_window": context}
    given_shape = {"n_layer": layers, "n_embd": width, "n_head": heads}
    if size != "auto" or any(v is not None for v in given_shape.values()):  # by hand
        if size == "auto":  # --layers is the depth on the dial
            architecture.update(depth_shape(layers if layers is not None else 4))
        else:
            architecture.update(zip(given_shape, SIZE_PRESETS[size], strict=True))
        architecture.update({k: v for k, v in given_shape.items() if v is not None})
    if dropout is not None:
        architecture["dropout"] = dropout
    ModelConfig(vocab_size=MIN_VOCAB_SIZE, **architecture)  # check the shape before any work
    time_budget = parsed("--time", parse_duration, time) if time else None
    given = {
        "batch_size": batch_size,
        "micro_batch_size": micro_batch_size,
        "compile": compile,
        "bpe_dropout": bpe_dropout,
        "learning_rate": lr,
        "eval_interval": eval_interval,
        "val_fraction": val_fraction,
        "seed": seed,
        "device": device,
        **_save_every(save_every),
    }
    given = {k: v for k, v in given.items() if v is not None}
    vocab = (
        check_vocab_size(parsed("--vocab-size", parse_count, vocab_size)) if vocab_size else None
    )
    folder = resolve(model)
    if not resume:  # check the settings before any work
        budget = {"steps": steps, "time_budget": time_budget or (None if steps else 300.0)}
        config = TrainConfig(**budget, **given)
    else:
        TrainConfig(steps=1, **given)

    main_process = process_rank() in (None, 0)
    if process_rank() is not None and "-" in (corpus or []):
        raise typer.BadParameter(
            "under torchrun every process reads the corpus: give files, not -",
            param_hint="CORPUS",
        )

    from textgen import distributed
    from textgen import train as training
    from textgen.corpus import BUILTIN_NAME, open_corpus
    from textgen.modeldir import read_metrics

    if not corpus and main_process:
        render.notice(console, f"no corpus given: using the {BUILTIN_NAME}")
    try:
        with open_corpus(corpus or []) as source, render.TrainView(console) as view:
            architecture.setdefault("dropout", default_dropout(source.total_bytes))
            if not resume and bpe_dropout is None:
                config = replace(config, bpe_dropout=default_bpe_dropout(source.total_bytes))
            if resume:
                result = training.resume(folder, source, steps, time_budget, given, callback=view)
            else:
                result = training.train(
                    folder, source, config, architecture, vocab, overwrite, view
                )
    finally:
        distributed.shutdown()
    if main_process:
        view.summary(result, model, read_metrics(folder))
    if result.interrupted:
        raise typer.Exit(130)


def process_rank() -> int | None:
    """This process's rank when torchrun started several; None otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ.get("RANK", "0"))
    return None


def _save_every(text: str | None) -> dict:
    """'200' -> every 200 steps; '10m' -> every 10 minutes."""
    if text is None:
        return {}
    if text.strip().isdigit():
        return {"save_every_steps": int(text)}
    return {"save_every_seconds": parsed("--save-every", parse_duration, text)}


@tokenizer_app.command("train")
def tokenizer_train(
    corpus: Annotated[
        list[str] | None,
        typer.Argument(help="Text files, folders, globs, or -. None: the built-in corpus."),
    ] = None,
    vocab_size: Annotated[
        str | None, typer.Option(help="Vocabulary size, e.g. 2048 or 4k. Default: sized to corpus.")
    ] = None,
    model: ModelOption = "default",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing tokenizer.")] = False,
) -> None:
    """Train only the tokenizer; `textgen train --model NAME` then uses it."""
    from textgen import modeldir
    from textgen.config import default_vocab_size
    from textgen.corpus import open_corpus
    from textgen.tokenizer import Tokenizer

    vocab = (
        check_vocab_size(parsed("--vocab-size", parse_count, vocab_size)) if vocab_size else None
    )
    folder = resolve(model)
    target = folder / modeldir.TOKENIZER
    if target.exists() and not overwrite:
        raise TextgenError(f"{target} already exists; add --overwrite to replace it")
    if modeldir.has_weights(folder):
        raise TextgenError(
            f"{folder} holds a trained model that needs its tokenizer; use another --model"
        )
    with open_corpus(corpus or []) as source, render.TrainView(console) as view:
        size = vocab or default_vocab_size(source.total_bytes)
        render.notice(console, f"corpus: {source.description}")
        tokenizer = Tokenizer.train_on(source, size, view)
        for warning in dict.fromkeys(source.warnings):
            render.notice(console, warning, warning=True)
    modeldir.save_tokenizer(folder, tokenizer)
    render.notice(console, f"saved {target} ({tokenizer.vocab_size} tokens)")


# -- generate ------------------------------------------------------------------------------


def _unescape(text: str) -> str:
    r"""--stop '\n\n' means two newlines: read \n, \t and \\ as a shell user means them."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


@app.command()
def generate(
    prompt: Annotated[
        str | None,
        typer.Argument(help="Text to continue; - or a pipe reads stdin.", show_default=False),
    ] = None,
    model: ModelOption = "default",
    temperature: Annotated[
        float,
        typer.Option("--temperature", "-t", help="0 (greedy) to 2 (the cap); higher is wilder."),
    ] = 0.8,
    top_k: Annotated[int | None, typer.Option(help="Sample from the k most likely only.")] = None,
    top_p: Annotated[
        float | None, typer.Option(help="Sample from the smallest set reaching probability p.")
    ] = None,
    min_p: Annotated[
        float | None, typer.Option(help="Drop tokens below min-p × the top probability.")
    ] = None,
    repetition_penalty: Annotated[
        float, typer.Option(help="Above 1 discourages repeating tokens.")
    ] = 1.0,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", "-n", help="Tokens to generate per sample.")
    ] = 200,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text.")] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option(help="Stop before this string (repeatable); \\n and \\t are understood."),
    ] = None,
    num_samples: Annotated[int, typer.Option(help="Independent samples, drawn as one batch.")] = 1,
    show_top: Annotated[
        int,
        typer.Option(
            help="Show the K most likely tokens of each step: live in a terminal, "
            "and as a table after the text."
        ),
    ] = 0,
    color_probs: Annotated[
        bool,
        typer.Option(
            "--color-probs/--no-color-probs",
            help="In a terminal, colour each token by its probability.",
        ),
    ] = True,
    json_output: JsonOption = False,
    device: DeviceOption = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            help="Weights' precision: auto (float32 for small models on CPU, bfloat16 for "
            "large ones and on GPUs), float32, bfloat16 or float16."
        ),
    ] = "auto",
) -> None:
    """Continue PROMPT with text sampled from the model, streamed to stdout.

    With --json, stdout gets one JSON object per sample, one per line (JSON Lines), once
    generation ends: the text, the settings, token counts and, for every generated token,
    its id, text, log-probability and the top alternatives (--show-top, default 5).
    """
    settings = SampleConfig(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        max_new_tokens=max_new_tokens,
        seed=seed,
        stop=tuple(_unescape(s) for s in stop or ()),
        num_samples=num_samples,
    )
    if show_top < 0:
        raise typer.BadParameter("must be 0 (off) or more", param_hint="--show-top")
    text = read_text_argument(prompt)
    folder = resolve(model)

    from textgen import modeldir
    from textgen.complete import Completion
    from textgen.device import choose_device

    if dtype not in DTYPES:
        raise typer.BadParameter(f"use one of {', '.join(DTYPES)}", param_hint="--dtype")
    lm = modeldir.load(folder, choose_device(device), dtype)
    top = show_top or (5 if json_output else 0)
    completion = Completion(lm, text, settings, show_top=top)
    if completion.truncated:
        size = (
            f"{completion.prompt_tokens} tokens"
            if completion.prompt_tokens is not None
            else f"{len(text):,} characters"
        )
        render.notice(
            console,
            f"the prompt is {size}; kept its last {len(completion.prompt_ids)} tokens "
            "(the context window)",
            warning=True,
        )
    elif not text:
        render.notice(console, "no prompt: writing from the start of a text")
    elif not text.strip():
        render.notice(console, "the prompt is only whitespace: continuing it")
    try:
        if json_output:
            for _ in completion:
                pass
            for i in range(settings.num_samples):
                sys.stdout.write(json.dumps(completion.to_json(i, text), ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
        with render.GenerateView(
            console, text, settings, show_top, lm.tokenizer.render, color_probs
        ) as view:
            for record in completion:
                view.add(record)
            view.finish(completion)
    except BrokenPipeError:  # the reader has all it wants (`| head`): stop quietly
        _quiet_broken_pipe()


app.command()(cli_inspect.tokenize)
app.command()(cli_inspect.score)
app.command()(cli_inspect.attention)
app.command("eval")(cli_inspect.evaluate)
app.command()(cli_inspect.info)
app.command()(cli_inspect.models)


# -- entry point ---------------------------------------------------------------------------


def _quiet_broken_pipe() -> None:
    """stdout's reader went away (`| head`): stop writing, without a traceback at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> None:
    try:
        code = app(args=argv, prog_name="textgen", standalone_mode=False)
        code = code if isinstance(code, int) else 0
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
            print(exc.ctx.get_help(), file=sys.stderr)
            code = 0
        else:
            hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
            render.error(console, exc.format_message() + hint)
            code = 2
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        render.error(console, "interrupted")
        code = 130
    except TextgenError as exc:
        rank = process_rank()
        if not getattr(exc, "quiet", False):  # process 0 already reported it
            render.error(console, str(exc) if not rank else f"process {rank}: {exc}")
        code = exc.exit_code
    except BrokenPipeError:
        _quiet_broken_pipe()
        code = 0
    except Exception as exc:  # a bug: one line for users, the traceback on request
        if os.environ.get("TEXTGEN_DEBUG"):
            raise
        render.error(
            console,
            f"internal error: {type(exc).__name__}: {exc} (set TEXTGEN_DEBUG=1 to see where)",
        )
        code = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    sys.exit(code)
