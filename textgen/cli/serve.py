"""`textgen serve`: the models over OpenAI's HTTP API."""

from __future__ import annotations

import os
import signal
from typing import Annotated

import typer

from textgen.cli.options import console
from textgen.errors import Interrupted, TextgenError, install_hint
from textgen.ui.console import notice


def serve(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="A model to serve (repeatable). Default: every model under the models "
            "folder, each loaded on its first request.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TEXTGEN_API_KEY",
            help="Require `Authorization: Bearer KEY` (or set TEXTGEN_API_KEY).",
            show_default=False,
        ),
    ] = None,
    slots: Annotated[
        int, typer.Option(help="Requests a model decodes at once, in one batch.")
    ] = 16,
    queue: Annotated[int, typer.Option(help="Requests that may wait for a slot.")] = 64,
    max_tokens: Annotated[int, typer.Option(help="The most tokens a request may ask for.")] = 2048,
    max_models: Annotated[int, typer.Option(help="Models kept loaded at once.")] = 4,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads for the model's work. Default: all cores but one, which is "
            "left to the HTTP side.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve models over the OpenAI API (completions, chat, streaming, logprobs), with
    concurrent requests decoded together in one batch."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise TextgenError(
            f"textgen serve needs FastAPI and uvicorn: {install_hint('serve')}"
        ) from None
    from textgen.serve.protocol import Limits
    from textgen.serve.registry import Registry
    from textgen.serve.server import listen
    from textgen.serve.server import serve as run_server
    from textgen.store.folder import where_models_live

    if min(slots, queue, max_tokens, max_models, threads or 1) < 1:
        raise TextgenError(
            "--slots, --queue, --max-tokens, --max-models and --threads take 1 or more"
        )
    if not 0 < port < 65536:
        raise TextgenError(f"--port {port}: ports run from 1 to 65535")
    threads = threads or max(1, len(os.sched_getaffinity(0)) - 1)
    log = lambda line: notice(console, line)  # noqa: E731
    registry = Registry(model, slots, queue, max(max_models, len(model or ())), threads, log)
    for name in registry.available():  # named ones: checked and loaded now, not at a request
        if model:
            registry.get(name)
    names = ", ".join(registry.available()) or "none yet (train one with `textgen train`)"
    sock = listen(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        notice(
            console,
            f"listening on {host}: other machines can reach this server"
            + ("" if api_key else "; --api-key keeps it to those with the key"),
            warning=True,
        )
    notice(console, f"models: {names}" + ("" if model else f" ({where_models_live()})"))
    shown = f"[{host}]" if ":" in host else host
    notice(console, f"serving http://{shown}:{port}/v1 (OpenAI API); Ctrl-C stops")
    stopped_by = run_server(
        registry,
        sock,
        api_key or None,
        Limits(max_tokens=max_tokens),
        log,
        host,
    )
    if stopped_by:  # the shell's status for the signal, as during start-up: 130, 143, 129
        raise Interrupted(stopped_by, f"stopped ({signal.Signals(stopped_by).name})")
