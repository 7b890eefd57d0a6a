"""The commands that look inside a trained model: tokenize, score, attention, eval, info
and models.

Each reads its input, makes one library call and hands the numbers to `textgen.views`.
In a terminal the view goes to stdout with colour; piped, stdout gets plain text (or
JSON with --json) and never an escape code.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Annotated

import typer

from textgen import render, views
from textgen.cli_common import (
    DeviceOption,
    JsonOption,
    ModelOption,
    console,
    read_text_argument,
    resolve,
)
from textgen.errors import TextgenError


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


def tokenize(
    text: Annotated[
        str | None, typer.Argument(help="Text to tokenize; - or a pipe reads stdin.")
    ] = None,
    model: ModelOption = "default",
    ids: Annotated[bool, typer.Option("--ids", help="Print only the token ids.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Show how the model's tokenizer splits TEXT: token boundaries, ids and compression."""
    from textgen import modeldir

    source = read_text_argument(text)
    tokenizer = modeldir.load_tokenizer(resolve(model))
    token_ids = tokenizer.encode(source)
    n_bytes, n_words = len(source.encode("utf-8")), len(re.findall(r"\S+", source))
    stats = {
        "tokens": len(token_ids),
        "bytes": n_bytes,
        "words": n_words,
        "bytes_per_token": n_bytes / len(token_ids) if token_ids else 0.0,
        "tokens_per_word": len(token_ids) / n_words if n_words else 0.0,
    }
    if ids:
        sys.stdout.write(" ".join(map(str, token_ids)) + "\n")
    elif json_output:
        tokens = [{"id": i, "text": tokenizer.token_text(i)} for i in token_ids]
        _print_json({**stats, "token_list": tokens})
    elif sys.stdout.isatty():
        out = render.make_console(stderr=False)
        out.print(render.tokens_view([tokenizer.render(i) for i in token_ids], stats))
        out.print(" ".join(str(i) for i in token_ids), style="dim", soft_wrap=True)
    else:
        sys.stdout.write("".join(f"{i}\t{tokenizer.render(i)}\n" for i in token_ids))
        render.notice(console, render.compression_line(stats))


def score(
    text: Annotated[
        str | None, typer.Argument(help="Text to score; - or a pipe reads stdin.")
    ] = None,
    model: ModelOption = "default",
    json_output: JsonOption = False,
    device: DeviceOption = "auto",
) -> None:
    """How surprised the model is by TEXT: each token coloured by its probability, with
    bits per byte and perplexity. --json gives the per-token figures."""
    from textgen import modeldir
    from textgen.device import choose_device
    from textgen.evaluate import score_text

    source = read_text_argument(text)
    lm = modeldir.load(resolve(model), choose_device(device))
    scored = score_text(lm, source)
    token_text = lm.tokenizer.token_text
    summary = scored.summary()
    if json_output:
        tokens = [
            {"id": i, "text": token_text(i), "logprob": -nll, "surprisal_bits": nll / math.log(2)}
            for i, nll in zip(scored.token_ids, scored.nlls, strict=True)
        ]
        _print_json({"model": str(lm.folder), "text": source, **summary, "tokens": tokens})
        return
    pairs = list(zip(scored.token_ids, scored.nlls, strict=True))
    if sys.stdout.isatty():
        pieces = [(token_text(i), math.exp(-nll)) for i, nll in pairs]
        out = render.make_console(stderr=False)
        out.print(views.surprisal_view(pieces, summary), soft_wrap=True)
    else:  # piped: one token per line: id, surprisal in bits, token
        render_token = lm.tokenizer.render
        sys.stdout.write(
            "".join(f"{i}\t{nll / math.log(2):.3f}\t{render_token(i)}\n" for i, nll in pairs)
        )
        render.notice(console, views.score_line(summary))


def attention(
    prompt: Annotated[str | None, typer.Argument(help="Text to look at; - reads stdin.")] = None,
    model: ModelOption = "default",
    layer: Annotated[int, typer.Option(help="Layer, from 0; negative counts from the end.")] = -1,
    head: Annotated[str, typer.Option(help="Head number, from 0, or 'all' for a grid.")] = "all",
    last: Annotated[
        int, typer.Option(help="Show the last N tokens (long prompts are cut, and said so).")
    ] = 24,
    json_output: JsonOption = False,
) -> None:
    """Draw where each token attends: the attention pattern of a layer's head(s) for PROMPT,
    queries down and keys across, future positions masked."""
    import torch

    from textgen import modeldir
    from textgen.generate import truncate_to_window

    source = read_text_argument(prompt)
    lm = modeldir.load(resolve(model))
    config = lm.model_config
    if not -config.n_layer <= layer < config.n_layer:
        raise typer.BadParameter(
            f"the model has layers 0 to {config.n_layer - 1}", param_hint="--layer"
        )
    heads = list(range(config.n_head))
    if head != "all":
        if not head.isdigit() or int(head) >= config.n_head:
            raise typer.BadParameter(
                f"use 'all' or a head from 0 to {config.n_head - 1}", param_hint="--head"
            )
        heads = [int(head)]
    if last < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--last")
    layer %= config.n_layer
    ids, _ = truncate_to_window(
        [lm.tokenizer.eot_id, *lm.tokenizer.encode(source)], config.context_window
    )
    patterns = lm.model.attention_patterns(torch.tensor([ids]))[layer]  # (H, T, T)
    labels = [lm.tokenizer.render(i) for i in ids]
    if json_output:
        _print_json(
            {
                "model": str(lm.folder),
                "layer": layer,
                "tokens": [{"id": i, "text": lm.tokenizer.token_text(i)} for i in ids],
                "heads": {str(h): patterns[h].tolist() for h in heads},
            }
        )
        return
    shown = min(last, len(ids))
    first = len(ids) - shown
    if first:
        render.notice(console, f"showing the last {shown} of {len(ids)} tokens (--last)")
    cut = patterns[:, first:, first:].tolist()
    out = render.make_console(stderr=False)
    if len(heads) == 1:
        h = heads[0]
        out.print(
            views.attention_heatmap(
                cut[h], labels[first:], first, f"layer {layer}, head {h}: rows attend to columns"
            )
        )
    else:
        out.print(views.attention_grid([cut[h] for h in heads], labels[first:], first, layer))


def evaluate(
    corpus: Annotated[
        list[str] | None,
        typer.Argument(help="Files, folders, globs or -. None: the built-in corpus."),
    ] = None,
    model: ModelOption = "default",
    json_output: JsonOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Validation loss, bits per byte and perplexity of the model on any text."""
    import tempfile
    from pathlib import Path

    from textgen import modeldir
    from textgen.corpus import encode_corpus, open_corpus
    from textgen.device import choose_device
    from textgen.evaluate import evaluate as run_eval
    from textgen.evaluate import token_byte_lengths

    lm = modeldir.load(resolve(model), choose_device(device))
    with open_corpus(corpus or []) as source, tempfile.TemporaryDirectory() as tmp:
        tokens = encode_corpus(source, lm.tokenizer, Path(tmp) / "tokens.bin").array()
        for warning in dict.fromkeys(source.warnings):
            render.notice(console, warning, warning=True)
        with render.TokenProgress(console, len(tokens) - 1, "scoring") as progress:
            result = run_eval(
                lm.model,
                tokens,
                token_byte_lengths(lm.tokenizer.token_bytes),
                on_batch=progress.advance,
            )
        description = source.description
    figures = {
        "corpus": description,
        "tokens": result.tokens,
        "bytes": result.bytes,
        "loss": result.loss,
        "bits_per_byte": result.bits_per_byte,
        "perplexity": result.perplexity,
    }
    if json_output:
        _print_json({"model": str(lm.folder), **figures})
    else:
        render.make_console(stderr=False).print(render.eval_table(figures))


# -- info, models --------------------------------------------------------------------------


def info(model: ModelOption = "default") -> None:
    """Architecture, parameter count, tokenizer and training summary of a model."""
    from textgen import modeldir

    folder = resolve(model)
    meta = modeldir.read_config(folder)
    parameters = modeldir.count_parameters(folder)
    console.print(render.info_panel(model, meta, parameters, modeldir.read_metrics(folder)))


def models() -> None:
    """List the models under models/ (or $TEXTGEN_HOME)."""
    from textgen import modeldir

    home = modeldir.models_home()
    rows = []
    for folder in sorted(p for p in home.glob("*") if (p / modeldir.CONFIG).exists()):
        try:
            meta = modeldir.read_config(folder)
            params = render.count(modeldir.count_parameters(folder))
        except TextgenError as exc:
            render.notice(console, str(exc), warning=True)
            continue
        m, training = meta["model"], meta.get("training", {})
        bpb = training.get("val_bits_per_byte")
        rows.append(
            {
                "name": folder.name,
                "parameters": params,
                "shape": f"{m['n_layer']}×{m['n_embd']}",
                "vocab": m["vocab_size"],
                "context": m["context_window"],
                "steps": f"{training.get('steps', 0):,}",
                "bpb": f"{bpb:.3f}" if bpb is not None else "-",
            }
        )
    if not rows:
        render.notice(console, f"no models in {home}/ yet: try `textgen train --model NAME`")
        return
    console.print(render.models_table(rows))
