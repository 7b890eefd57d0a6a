"""`textgen generate`: a prompt in, a streamed continuation out."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer

from textgen.cli.options import (
    DeviceOption,
    JsonOption,
    MinPOption,
    ModelOption,
    TopKOption,
    TopPOption,
    console,
    read_text_argument,
    resolve,
    unescape,
)
from textgen.errors import SettingError
from textgen.settings import DTYPES, SampleConfig
from textgen.ui import jsonout
from textgen.ui.console import notice
from textgen.ui.generation import GenerateView, prompt_notice
from textgen.ui.temperatures import TemperatureView, parse_temperatures

if TYPE_CHECKING:
    from textgen.decode.completion import Completion
    from textgen.model.loaded import LoadedModel

MAX_SHOW_TOP = 20  # candidates a step: more would not fit a screen, nor tell more


def generate(
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="Text to continue; - or a pipe reads stdin.", show_default=False, metavar="PROMPT"
        ),
    ] = None,
    model: ModelOption = "default",
    temperature: Annotated[
        str,
        typer.Option(
            "--temperature",
            "-t",
            help="0 (greedy) to 2 (the cap); higher is wilder. Several, comma-separated "
            "(0.2,0.8,1.5): one sample each from the same seed, side by side.",
            metavar="T[,T...]",
        ),
    ] = "0.8",
    top_k: TopKOption = None,
    top_p: TopPOption = None,
    min_p: MinPOption = None,
    repetition_penalty: Annotated[
        float, typer.Option(help="Above 1 discourages repeating tokens.")
    ] = 1.0,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", "-n", help="Tokens to generate per sample.")
    ] = 200,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text.")] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option(
            help="Stop before this string (repeatable); \\n and \\t are understood.",
            metavar="TEXT",
        ),
    ] = None,
    num_samples: Annotated[int, typer.Option(help="Independent samples, drawn as one batch.")] = 1,
    show_top: Annotated[
        int,
        typer.Option(
            help=f"Show the K (up to {MAX_SHOW_TOP}) most likely tokens of each step: live in "
            "a terminal, and after the text for the steps the model found least likely."
        ),
    ] = 0,
    all_steps: Annotated[
        bool, typer.Option("--all-steps", help="With --show-top: list every step after the text.")
    ] = False,
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
            help="Weights' precision: auto (float32 on CPU, bfloat16 on GPUs), float32, "
            "bfloat16 or float16."
        ),
    ] = "auto",
) -> None:
    """Continue PROMPT with text sampled from the model, streamed to stdout.

    With --json, stdout gets one JSON object per sample, one per line (JSON Lines), once
    generation ends: the text, the settings, token counts and, for every generated token,
    its id, text, log-probability and the top alternatives (--show-top, default 5).
    """
    try:
        temperatures = parse_temperatures(temperature)
    except ValueError as exc:
        raise SettingError(f"--temperature {temperature}: {exc}") from None
    if len(temperatures) > 1 and num_samples != 1:
        raise SettingError(
            "--num-samples: several temperatures write one sample each; give one "
            "temperature for several samples"
        )
    if len(temperatures) > 1 and seed is None:
        seed = secrets.randbits(63)  # one seed for all: the samples differ by temperature
    settings = SampleConfig(
        temperature=temperatures[0],
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        max_new_tokens=max_new_tokens,
        seed=seed,
        stop=tuple(unescape(s) for s in stop or ()),
        num_samples=num_samples,
    )
    every = [replace(settings, temperature=t) for t in temperatures]  # each one checked
    if not 0 <= show_top <= MAX_SHOW_TOP:
        raise SettingError(
            f"--show-top must be 0 (off) to {MAX_SHOW_TOP}; `textgen score --json` gives "
            "every token's probability"
        )
    if dtype not in DTYPES:
        raise SettingError(f"--dtype: use one of {', '.join(DTYPES)}")
    text = read_text_argument(prompt)

    from textgen.decode.completion import Completion
    from textgen.model.device import choose_device
    from textgen.store.folder import load

    lm = load(resolve(model), choose_device(device), dtype)
    top = show_top or (5 if json_output else 0)
    completions = [Completion(lm, text, one, show_top=top) for one in every]  # one a temperature
    first = completions[0]
    message = prompt_notice(text, first.prompt_tokens, len(first.prompt_ids))
    if message:
        notice(console, message, warning=first.truncated)
    if json_output:
        for completion in completions:
            for _ in completion:
                pass
            generated = completion.result()
            for i in range(generated.settings.num_samples):
                jsonout.write(
                    jsonout.generation(generated, i, str(lm.folder), lm.tokenizer.token_text)
                )
        return
    if len(completions) > 1:
        _temperatures(lm, text, completions, show_top, color_probs)
        return
    view = GenerateView(
        console, text, settings, show_top, lm.tokenizer.render, color_probs, all_steps
    )
    with view:
        for record in first:
            view.add(record)
        view.finish(first.result())


def _temperatures(
    lm: LoadedModel, text: str, completions: list[Completion], show_top: int, color_probs: bool
) -> None:
    """One sample per temperature, from the same prompt and seed, one after another."""
    temperatures = [completion.settings.temperature for completion in completions]
    view = TemperatureView(console, text, temperatures, show_top, lm.tokenizer.render, color_probs)
    with view:
        for index, completion in enumerate(completions):
            view.start(index)
            for record in completion:
                view.add(record)
        view.finish([completion.result() for completion in completions])
