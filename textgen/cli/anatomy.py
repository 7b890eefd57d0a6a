"""The commands that look through the model's layers: lens, neighbors, heads and explore.

Like the other inspection commands, each reads its input, makes its library calls and
hands plain records to `textgen.ui`: a view on stdout in a terminal, plain text in a
pipe, JSON with --json, and a picture with --save (or an HTML page, for explore).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from textgen.cli.options import (
    CorpusArgument,
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
from textgen.store.guard import check_new_file
from textgen.ui import anatomy, jsonout
from textgen.ui.console import make_console, notice

MAX_TOP = 50

TopOption = Annotated[
    int, typer.Option("--top", "-k", help=f"Candidates to list (1 to {MAX_TOP}).")
]


def _check(name: str, value: int, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        top = f" to {high}" if high is not None else " or more"
        raise SettingError(f"{name} takes {low}{top}")


def _report_prompt(text: str, counted: int | None, kept: int) -> int | None:
    """Say on stderr how the prompt was read, where that needs saying (cut to the context
    window, empty); returns the tokens left out (None: too many to count)."""
    from textgen.ui.generation import prompt_notice

    dropped = None if counted is None else counted + 1 - kept
    message = prompt_notice(text, counted, kept)
    if message:
        notice(console, message, warning=dropped != 0)
    return dropped


def _prompt_ids(lm, text: str) -> tuple[list[int], int | None]:  # noqa: ANN001 - LoadedModel
    """The ids the model reads for `text` (its end, if longer than the context window) and
    how many of the text's tokens were left out (None: too many to count); says so on
    stderr when any were."""
    from textgen.decode.completion import prompt_window

    ids, counted = prompt_window(lm.tokenizer, text, lm.model_config.context_window)
    return ids, _report_prompt(text, counted, len(ids))


def _read_lens(lm, ids: list[int], dropped: int | None, last: int, top: int):  # noqa: ANN001, ANN202
    """The logit lens over the last `last` of `ids`, saying so when that cuts them."""
    from textgen.inside.readout import logit_lens

    reading = logit_lens(lm.model, ids, last, top, dropped)
    if reading.first_position:
        notice(console, f"showing the last {last} of {len(ids)} positions (--last)")
    return reading


def lens(
    prompt: Annotated[
        str | None, typer.Argument(help="Text to read; - or a pipe reads stdin.", metavar="PROMPT")
    ] = None,
    model: ModelOption = "default",
    top: TopOption = 5,
    last: Annotated[
        int, typer.Option(help="Show the last N positions (a longer text is cut, and said so).")
    ] = 10,
    json_output: JsonOption = False,
    save: SaveOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """The logit lens: at each depth of the model (after the embedding, after each layer),
    the token it would predict if it stopped there, for each position of PROMPT. The last
    row is the model's real prediction."""
    _check("--top", top, 1, MAX_TOP)
    _check("--last", last, 1)
    check_picture(save, overwrite)
    from textgen.store.folder import load

    lm = load(resolve(model))
    ids, dropped = _prompt_ids(lm, read_text_argument(prompt))
    reading = _read_lens(lm, ids, dropped, last, top)
    render = lm.tokenizer.render
    if json_output:
        jsonout.write(jsonout.lens(str(lm.folder), reading, lm.tokenizer.token_text))
    elif sys.stdout.isatty():
        out = make_console(stderr=False)
        out.print(anatomy.lens_grid(reading, render))
        out.print()
        out.print(anatomy.lens_top(reading, render))
    else:
        sys.stdout.write(anatomy.lens_text(reading, render))
    if save is not None:
        from textgen.ui.pictures import lens_picture

        probs = [[cell[0].prob for cell in row] for row in reading.top]
        predicted = [[render(cell[0].token_id) for cell in row] for row in reading.top]
        labels = [render(i) for i in reading.token_ids]
        save_picture(
            lens_picture(probs, predicted, reading.depths, labels, reading.first_position), save
        )


def neighbors(
    text: Annotated[
        str,
        typer.Argument(
            help='A word, a phrase, or an analogy of words joined by + and -: "king - man + '
            'woman".',
            metavar="TEXT",
        ),
    ],
    model: ModelOption = "default",
    top: TopOption = 10,
    json_output: JsonOption = False,
    save: SaveOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """The tokens whose embedding vectors point most nearly the way TEXT's does (cosine
    similarity). A word of several tokens is the mean of their vectors; an analogy adds
    and subtracts unit vectors. With --save, a 2-D map of the embedding space."""
    _check("--top", top, 1, MAX_TOP)
    check_picture(save, overwrite)
    from textgen.inside.embedding import neighbours
    from textgen.store.folder import load

    lm = load(resolve(model))
    found = neighbours(lm.model, lm.tokenizer, text, top)
    render = lm.tokenizer.render
    if any(len(term.token_ids) > 1 for term in found.terms):
        notice(console, "a word of several tokens stands for the mean of their vectors")
    if json_output:
        jsonout.write(jsonout.neighbours(str(lm.folder), text, found, lm.tokenizer.token_text))
    elif sys.stdout.isatty():
        make_console(stderr=False).print(anatomy.neighbours_view(found, render))
    else:
        notice(console, anatomy.describe_terms(found, render))
        sys.stdout.write(anatomy.neighbours_text(found, render))
    if save is not None:
        save_picture(_embedding_figure(lm, found), save)


def _embedding_figure(lm, found):  # noqa: ANN001, ANN202 - a LoadedModel, Neighbours -> Figure
    """The map of the embedding space: its principal plane, the query, its neighbours and
    the corpus's most frequent tokens named."""
    from textgen.inside.embedding import embedding_map, frequent_tokens, merged_tokens
    from textgen.ui.pictures import embedding_picture

    render = lm.tokenizer.render
    kinds: dict[int, str] = dict.fromkeys(frequent_tokens(lm.tokenizer, 30), "frequent")
    kinds.update(dict.fromkeys((n.token_id for n in found.neighbours), "neighbour"))
    kinds.update(dict.fromkeys((i for t in found.terms for i in t.token_ids), "query"))
    basis = merged_tokens(lm.tokenizer)
    if len(basis) < 3:  # a vocabulary of bytes alone
        basis = list(range(lm.tokenizer.vocab_size))
    named = list(kinds)
    points, explained = embedding_map(lm.model, basis + named, basis)
    labelled = [
        (xy, render(i), kinds[i]) for xy, i in zip(points[len(basis) :], named, strict=True)
    ]
    return embedding_picture(points[: len(basis)], labelled, explained, "The embedding space")


def heads(
    corpus: CorpusArgument = None,
    model: ModelOption = "default",
    field: FieldOption = None,
    template: TemplateOption = None,
    tokens: Annotated[int, typer.Option(help="Tokens of the text to measure over.")] = 8192,
    json_output: JsonOption = False,
) -> None:
    """What each attention head does over a sample of text (CORPUS, or the built-in one):
    its entropy, how much it attends to the previous token, the first position, earlier
    copies of the same token and what followed them (induction), and a label where one
    clearly fits."""
    _check("--tokens", tokens, 3)
    from textgen.inside.heads import LABELS, measure_heads, sample_windows
    from textgen.store.folder import load
    from textgen.text.corpus import open_corpus

    lm = load(resolve(model))
    window = lm.model_config.context_window
    with open_corpus(corpus or [], reading=corpus_reading(field, template)) as source:
        texts = source.texts(max_bytes=tokens * lm.tokenizer.max_token_bytes)
        windows = sample_windows(lm.tokenizer, texts, window, tokens)
        source.report_warnings(lambda event: notice(console, event.message, event.warning))
        description = source.description
    measured = sum(len(w) for w in windows)
    sample = f"{measured:,} tokens of {description}"
    if measured < min(tokens, 4 * window):
        notice(console, f"only {sample}: figures from so little text are rough", warning=True)
    stats = measure_heads(lm.model, windows)
    if json_output:
        jsonout.write(jsonout.heads(str(lm.folder), description, measured, stats, LABELS))
    elif sys.stdout.isatty():
        make_console(stderr=False).print(anatomy.heads_table(stats, sample))
    else:
        notice(console, f"over {sample}")
        sys.stdout.write(anatomy.heads_text(stats))


def explore(
    prompt: Annotated[
        str | None,
        typer.Argument(help="Text to explore; - or a pipe reads stdin.", metavar="PROMPT"),
    ] = None,
    html: Annotated[
        Path,
        typer.Option(
            "--html",
            metavar="FILE",
            help="The page to write (- writes it to stdout).",
            show_default=False,
        ),
    ] = ...,
    model: ModelOption = "default",
    max_new_tokens: Annotated[
        int,
        typer.Option("--max-new-tokens", "-n", help="First continue PROMPT by N tokens."),
    ] = 0,
    temperature: Annotated[
        float, typer.Option("--temperature", "-t", help="For the continuation: 0 to 2.")
    ] = 0.8,
    seed: Annotated[int | None, typer.Option(help="For the continuation.")] = None,
    top: TopOption = 5,
    last: Annotated[
        int, typer.Option(help="Show the last N positions (a longer text is cut, and said so).")
    ] = 256,
    overwrite: OverwriteOption = False,
) -> None:
    """Write one self-contained HTML page (no network, no server) to explore PROMPT, or
    the model's continuation of it: hover a token for the model's top candidates, click it
    for where each head of each layer attends from it, and the logit lens grid."""
    _check("--top", top, 1, MAX_TOP)
    _check("--last", last, 1)
    _check("--max-new-tokens", max_new_tokens, 0)
    to_stdout = str(html) == "-"
    if not to_stdout:
        check_new_file(html, "--html", "an .html file", overwrite)
    from textgen.files import write_text
    from textgen.inside.readout import attention_rows
    from textgen.store.folder import load
    from textgen.ui.explore import page, page_data

    lm = load(resolve(model))
    text = read_text_argument(prompt)
    if max_new_tokens:
        ids, dropped, generated_at = _continued(lm, text, max_new_tokens, temperature, seed)
    else:
        (ids, dropped), generated_at = _prompt_ids(lm, text), None
    reading = _read_lens(lm, ids, dropped, last, top)
    if generated_at is not None:  # its index among the positions shown
        generated_at = max(generated_at - reading.first_position, 0)
    attention = attention_rows(lm.model, ids, reading.first_position)
    tokenizer = lm.tokenizer
    data = page_data(
        lm.folder.name, reading, attention, tokenizer.token_text, tokenizer.render, generated_at
    )
    document = page(data, f"textgen explore · {lm.folder.name}")
    if to_stdout:
        sys.stdout.write(document)
        return
    write_text(html, document)
    notice(console, f"wrote {html}: open it in a browser")


def _continued(lm, text: str, tokens: int, temperature: float, seed: int | None):  # noqa: ANN001, ANN202
    """PROMPT and the model's continuation of it, as the ids the model read and wrote (the
    last context window of them), the ids left out before them, and where the
    continuation starts among them."""
    from textgen.decode.completion import Completion
    from textgen.settings import SampleConfig

    settings = SampleConfig(temperature=temperature, max_new_tokens=tokens, seed=seed)
    completion = Completion(lm, text, settings)
    dropped = _report_prompt(text, completion.prompt_tokens, len(completion.prompt_ids))
    for _ in completion:
        pass
    written = [r.token_id for r in completion.samples[0].tokens if r.token_id is not None]
    every = completion.prompt_ids + written
    ids = every[-lm.model_config.context_window :]
    cut = len(every) - len(ids)
    notice(
        console, f"continued the prompt by {len(written)} tokens (seed {completion.settings.seed})"
    )
    return ids, None if dropped is None else dropped + cut, len(completion.prompt_ids) - cut
