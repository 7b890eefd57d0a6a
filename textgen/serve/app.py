"""The HTTP server: OpenAI's completions and chat endpoints on FastAPI.

Each request becomes one job per prompt and choice on its model's `BatchEngine`
(`serve.runs`); the engine's thread hands each token to the event loop, which streams
it (Server-Sent Events, as OpenAI sends them) or gathers the answer (`serve.views`).
No model work runs on the event loop: loading and tokenizing run in worker threads,
decoding in the engine's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from textgen.decode.batching import EngineBusy
from textgen.errors import SettingError, TextgenError
from textgen.serve import protocol
from textgen.serve.gate import LOOPBACK, Gate
from textgen.serve.gate import error_response as _error
from textgen.serve.protocol import ChatRequest, CompletionRequest, Limits
from textgen.serve.registry import Registry, UnknownModel
from textgen.serve.runs import Prompt, Stopping, submit
from textgen.serve.views import ChatView, CompletionView

Log = Callable[[str], None]


def create_app(
    registry: Registry,
    api_key: str | None,
    limits: Limits,
    log: Log,
    hosts: frozenset[str] | None = LOOPBACK,
) -> FastAPI:
    """The OpenAI API over `registry`'s models, with `limits` on each request, the API key
    checked (None: none asked for), requests for `hosts` only (`allowed_hosts`; None:
    any) and an access-log line a request to `log`."""
    app = FastAPI(title="textgen", docs_url=None, redoc_url=None)
    app.state.registry = registry
    app.add_middleware(Gate, api_key=api_key, limits=limits, hosts=hosts, log=log)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(TextgenError, _refused)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models_loaded": list(registry.loaded)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entries = await run_in_threadpool(registry.entries)
        return {"object": "list", "data": entries}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        entries = await run_in_threadpool(registry.entries)
        found = next((e for e in entries if e["id"] == name), None)
        if found is None:
            raise UnknownModel(name, [e["id"] for e in entries])
        return found

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):  # noqa: ANN202
        served = await run_in_threadpool(registry.get, body.model)
        prompts = await _prompts(served, _checked(body.prompts(), body, limits))
        settings = body.sampling(16, served.lm.tokenizer.vocab_size)
        view = CompletionView(served, body, prompts)
        await run_in_threadpool(view.score_prompts)
        run = submit(served, prompts, settings, body.n, body.logprobs or 0)
        return await _respond(view, run, body.stream, request)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):  # noqa: ANN202
        served = await run_in_threadpool(registry.get, body.model)
        texts = _checked([protocol.chat_prompt(body.messages)], body, limits)
        prompts = await _prompts(served, texts)
        vocab = served.lm.tokenizer.vocab_size
        settings = body.sampling(limits.max_tokens, vocab, extra_stops=(protocol.TURN_END,))
        run = submit(served, prompts, settings, body.n, body.candidates())
        return await _respond(ChatView(served, body, prompts[0]), run, body.stream, request)

    return app


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that is not JSON, or not of the request's shape: 400, naming the field (of
    the ways a field may be given, the error that got deepest into it)."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors) or not errors:
        return _error(400, "the body is not valid JSON", param=None)
    paths = [_field_path(e.get("loc", ())) for e in errors]
    deepest = max(range(len(errors)), key=lambda i: (len(paths[i]), -i))
    where = ".".join(paths[deepest]) or "body"
    message = str(errors[deepest].get("msg", "invalid")).removeprefix("Value error, ")
    return _error(400, f"{where}: {message}", param=where)


def _field_path(loc: tuple) -> list[str]:
    """pydantic's error location as the request's fields (`messages.0.content`): without
    "body", nor the tags of a union's members (`list[str]`, `function-after[...]`)."""
    tags = {"str", "int", "float", "bool", "list", "dict", "none"}
    return [
        str(part) for part in loc[1:] if isinstance(part, int) or not ("[" in part or part in tags)
    ]


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """An unknown route (404) or method (405), in OpenAI's error shape."""
    if exc.status_code == 404:
        message = f"no such route: {request.method} {request.url.path[:200]}"
    elif exc.status_code == 405:
        message = f"{request.method} is not a method of {request.url.path[:200]}"
    else:
        message = str(exc.detail)
    response = _error(
        exc.status_code, message, code="not_found" if exc.status_code == 404 else None
    )
    for name, value in (exc.headers or {}).items():  # Allow, for a 405
        response.headers[name] = value
    return response


async def _refused(request: Request, exc: TextgenError) -> JSONResponse:
    """What the library refused, in OpenAI's error shape and status."""
    if isinstance(exc, UnknownModel):
        return _error(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, EngineBusy):
        return _error(429, str(exc), "rate_limit_error")
    if isinstance(exc, SettingError):
        param = protocol.api_name(exc.setting)
        return _error(400, exc.phrased(param), param=param)
    if isinstance(exc, Stopping):
        return _error(503, str(exc), "server_error")
    message = await run_in_threadpool(request.app.state.registry.public, str(exc))
    return _error(503, f"the model cannot be served: {message}", "server_error")


async def _prompts(served, texts: list) -> list[Prompt]:  # noqa: ANN001 - texts or ids
    """The texts tokenized for the model, off the event loop."""
    return await run_in_threadpool(lambda: [Prompt(served, t) for t in texts])


async def _respond(view, run, stream: bool, request: Request):  # noqa: ANN001, ANN202
    """The run as a stream of events, or as one answer when it is done."""
    if stream:
        return _stream(view.chunks(run, request))
    return JSONResponse(await view.answer(run, request))


def _checked(texts: list, body, limits: Limits) -> list:  # noqa: ANN001 - texts or ids
    if body.n > limits.n:
        raise SettingError(f"{{name}}: at most {limits.n} choices a request", "n")
    tokens = body.max_completion_tokens or body.max_tokens
    if tokens is not None and tokens > limits.max_tokens:
        raise SettingError(f"{{name}}: at most {limits.max_tokens} a request", "max_tokens")
    if not texts:
        raise SettingError("{name}: give a text, or a list of texts", "prompt")
    if (
        sum(len(t.encode()) if isinstance(t, str) else 4 * len(t) for t in texts)
        > limits.prompt_bytes
    ):
        raise SettingError(f"{{name}}: at most {limits.prompt_bytes:,} bytes a request", "prompt")
    return texts


def _event(chunk: dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


def _stream(chunks: AsyncIterator[dict[str, Any] | None]) -> StreamingResponse:
    """Server-Sent Events as OpenAI sends them: one event a chunk, `data: [DONE]` last;
    the events that are ready together (None marks the moment) go out in one write."""

    async def events() -> AsyncIterator[str]:
        pending: list[str] = []
        try:
            async for chunk in chunks:
                if chunk is not None:
                    pending.append(_event(chunk))
                elif pending:
                    yield "".join(pending)
                    pending = []
        except Stopping as exc:  # cut short: an error event says so (clients raise it)
            yield "".join(pending) + _event(protocol.error_body(str(exc), "server_error"))
            return
        yield "".join(pending) + "data: [DONE]\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
