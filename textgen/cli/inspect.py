"""The commands that look inside a trained model: tokenize, score, attention and eval.

Each reads its input, makes one library call and hands the numbers to `textgen.ui`.
In a terminal the view goes to stdout with colour; piped, stdout gets plain text (or
JSON with --json) and never an escape code.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Annotated

import typer

from textgen.cli.options import (
    CorpusArgument,
    DeviceOption,
    FieldOption,
    JsonOption,
    ModelOption,
    OverwriteOption,
    SaveOption,
    TemplateOption,
    check_picture,
    console,
    corpus_reading,
    read_text_argument,
    resolve,
    save_picture,
)
from textgen.errors import SettingError
from textgen.ui import inspection, jsonout
from textgen.ui.console import make_console, notice


def tokenize(
    text: Annotated[
        str | None,
        typer.Argument(help="Text to tokenize; - or a pipe reads stdin.", metavar="TEXT"),
    ] = None,
    model: ModelOption = "default",
    ids: Annotated[bool, typer.Option("--ids", help="Print only the token ids.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Show how the model's tokenizer splits TEXT: token boundaries, ids and compression."""
    from textgen.store.folder import load_tokenizer

    source = read_text_argument(text)
    tokenizer = load_tokenizer(resolve(model))
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
        jsonout.write(jsonout.tokenization(stats, token_ids, tokenizer.token_text))
    elif sys.stdout.isatty():
        out = make_console(stderr=False)
        out.print(inspection.tokens_view([tokenizer.render(i) for i in token_ids], stats))
        out.print(" ".join(str(i) for i in token_ids), style="dim", soft_wrap=True)
    else:
        sys.stdout.write("".join(f"{i}\t{tokenizer.render(i)}\n" for i in token_ids))
        notice(console, inspection.compression_line(stats))


def score(
    text: Annotated[
        str | None, typer.Argument(help="Text to score; - or a pipe reads stdin.", metavar="TEXT")
    ] = None,
    model: ModelOption = "default",
    json_output: JsonOption = False,
    device: DeviceOption = "auto",
) -> None:
    """How surprised the model is by TEXT: each token coloured by its probability, with
    bits per byte and perplexity. --json gives the per-token figures."""
    from textgen.model.device import choose_device
    from textgen.store.folder import load
    from textgen.training.evaluate import score_text

    source = read_text_argument(text)
    lm = load(resolve(model), choose_device(device))
    scored = score_text(lm, source)
    token_text = lm.tokenizer.token_text
    if json_output:
        jsonout.write(
            jsonout.scored(
                str(lm.folder), source, scored.result, scored.token_ids, scored.nlls, token_text
            )
        )
        return
    pairs = list(zip(scored.token_ids, scored.nlls, strict=True))
    if sys.stdout.isatty():
        pieces = [(token_text(i), math.exp(-nll)) for i, nll in pairs]
        out = make_console(stderr=False)
        out.print(inspection.surprisal_view(pieces, scored.result), soft_wrap=True)
    else:  # piped: one token per line: id, surprisal in bits, token
        render_token = lm.tokenizer.render
        sys.stdout.write(
            "".join(f"{i}\t{nll / math.log(2):.3f}\t{render_token(i)}\n" for i, nll in pairs)
        )
        notice(console, inspection.score_line(scored.result))


def attention(
    prompt: Annotated[
        str | None, typer.Argument(help="Text to look at; - reads stdin.", metavar="PROMPT")
    ] = None,
    model: ModelOption = "default",
    layer: Annotated[int, typer.Option(help="Layer, from 0; negative counts from the end.")] = -1,
    head: Annotated[str, typer.Option(help="Head number, from 0, or 'all' for a grid.")] = "all",
    last: Annotated[
        int, typer.Option(help="Show the last N tokens (long prompts are cut, and said so).")
    ] = 24,
    json_output: JsonOption = False,
    save: SaveOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Draw where each token attends: the attention pattern of a layer's head(s) for PROMPT,
    queries down and keys across, future positions masked."""
    import torch

    from textgen.decode.loop import truncate_to_window
    from textgen.inside.readout import attention_patterns
    from textgen.store.folder import load

    source = read_text_argument(prompt)
    lm = load(resolve(model))
    config = lm.model_config
    if not -config.n_layer <= layer < config.n_layer:
        raise SettingError(f"--layer: the model has layers 0 to {config.n_layer - 1}")
    heads = list(range(config.n_head))
    if head != "all":
        if not head.isdigit() or int(head) >= config.n_head:
            raise SettingError(f"--head: use 'all' or a head from 0 to {config.n_head - 1}")
        heads = [int(head)]
    if last < 1:
        raise SettingError("--last must be at least 1")
    check_picture(save, overwrite)
    layer %= config.n_layer
    ids, _ = truncate_to_window(lm.tokenizer.encode_document(source), config.context_window)
    patterns = attention_patterns(lm.model, torch.tensor([ids]))[layer]  # (H, T, T)
    if json_output:
        matrices = {h: patterns[h].tolist() for h in heads}
        jsonout.write(
            jsonout.attention(str(lm.folder), layer, ids, matrices, lm.tokenizer.token_text)
        )
        return
    shown = min(last, len(ids))
    first = len(ids) - shown
    if first:
        notice(console, f"showing the last {shown} of {len(ids)} tokens (--last)")
    cut = patterns[:, first:, first:].tolist()
    labels = [lm.tokenizer.render(i) for i in ids[first:]]
    if len(heads) == 1:
        title = f"layer {layer}, head {heads[0]}: rows attend to columns"
        view = inspection.attention_heatmap(cut[heads[0]], labels, first, title)
    else:
        view = inspection.attention_grid([cut[h] for h in heads], labels, first, layer)
    make_console(stderr=False).print(view)
    if save is not None:
        from textgen.ui.pictures import attention_picture

        picture = attention_picture([cut[h] for h in heads], heads, labels, first, layer)
        save_picture(picture, save)


def evaluate(
    corpus: CorpusArgument = None,
    model: ModelOption = "default",
    field: FieldOption = None,
    template: TemplateOption = None,
    json_output: JsonOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Validation loss, bits per byte and perplexity of the model on any text."""
    from textgen.model.device import choose_device
    from textgen.store.folder import load
    from textgen.text.corpus import open_corpus
    from textgen.training.evaluate import evaluate_corpus

    lm = load(resolve(model), choose_device(device))
    with (
        open_corpus(corpus or [], reading=corpus_reading(field, template)) as source,
        inspection.TokenProgress(console, "scoring") as bar,
    ):
        result = evaluate_corpus(lm, source, bar.update)
        source.report_warnings(lambda event: notice(console, event.message, event.warning))
    if json_output:
        jsonout.write(jsonout.evaluation(str(lm.folder), source.description, result))
    else:
        make_console(stderr=False).print(inspection.eval_table(source.description, result))
