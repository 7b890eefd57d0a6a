"""The HTTP server: OpenAI's completions and chat endpoints on FastAPI.

Each request becomes one job per prompt and choice on its model's `BatchEngine`
(`serve.runs`); the engine's thread hands each token to the event loop, which streams
it (Server-Sent Events, as OpenAI sends them) or gathers the answer (`serve.views`).
No model work runs on the event loop: loading and tokenizing run in worker threads,
decoding in the engine's.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from textgen.decode.batching import EngineBusy
from textgen.errors import SettingError, TextgenError
from textgen.serve import protocol
from textgen.serve.protocol import ChatRequest, CompletionRequest, Limits
from textgen.serve.registry import Registry, UnknownModel
from textgen.serve.runs import Prompt, Stopping, submit
from textgen.serve.views import ChatView, CompletionView

Log = Callable[[str], None]


def create_app(registry: Registry, api_key: str | None, limits: Limits, log: Log) -> FastAPI:
    """The OpenAI API over `registry`'s models, with `limits` on each request, the API key
    checked (None: none asked for) and an access-log line a request to `log`."""
    app = FastAPI(title="textgen", docs_url=None, redoc_url=None)
    app.state.registry = registry
    app.add_middleware(_Gate, api_key=api_key, log=log)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(TextgenError, _refused)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models_loaded": list(registry.loaded)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = await run_in_threadpool(registry.available)
        entries = [{"id": n, "object": "model", "created": 0, "owned_by": "textgen"} for n in names]
        return {"object": "list", "data": entries}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):  # noqa: ANN202
        served = await run_in_threadpool(registry.get, body.model)
        prompts = await _prompts(served, _checked(body.prompts(), body, limits))
        run = submit(served, prompts, body.sampling(default_tokens=16), body.n, body.logprobs or 0)
        return await _respond(CompletionView(served, body, prompts), run, body.stream, request)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):  # noqa: ANN202
        served = await run_in_threadpool(registry.get, body.model)
        texts = _checked([protocol.chat_prompt(body.messages)], body, limits)
        prompts = await _prompts(served, texts)
        settings = body.sampling(default_tokens=limits.max_tokens, extra_stops=(protocol.TURN_END,))
        run = submit(served, prompts, settings, body.n, body.candidates())
        return await _respond(ChatView(served, body, prompts[0]), run, body.stream, request)

    return app


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that is not JSON, or not of the request's shape: 400, naming the field."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
    if first.get("type") == "json_invalid":
        return _error(400, "the body is not valid JSON", param=None)
    return _error(400, f"{where}: {first.get('msg', 'invalid')}", param=where)


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
    return _error(503, f"the model cannot be served: {exc}", "server_error")


async def _prompts(served, texts: list[str]) -> list[Prompt]:  # noqa: ANN001
    """The texts tokenized for the model, off the event loop."""
    return await run_in_threadpool(lambda: [Prompt(served, t) for t in texts])


async def _respond(view, run, stream: bool, request: Request):  # noqa: ANN001, ANN202
    """The run as a stream of events, or as one answer when it is done."""
    if stream:
        return _stream(view.chunks(run, request))
    return JSONResponse(await view.answer(run, request))


class _Gate:
    """Every request: the API key checked (under /v1) and one access-log line when its
    response is complete. Plain ASGI, so that a stream's chunks pass straight through."""

    def __init__(self, app, api_key: str | None, log: Log) -> None:  # noqa: ANN001
        self.app, self.api_key, self.log = app, api_key, log

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, done = time.perf_counter(), [0], [False]

        async def sending(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done[0] = True

        try:
            if self.api_key and scope["path"].startswith("/v1") and not self._authorized(scope):
                refusal = _error(
                    401,
                    "a valid API key is needed: Authorization: Bearer KEY",
                    code="invalid_api_key",
                )
                return await refusal(scope, receive, sending)
            return await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            ending = "" if done[0] else " (the client left)"
            self.log(f"{scope['method']} {scope['path']} {status[0]} {seconds:.2f}s{ending}")

    def _authorized(self, scope) -> bool:  # noqa: ANN001
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(given, f"Bearer {self.api_key}".encode())


def _error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    return JSONResponse(protocol.error_body(message, kind, param, code), status_code=status)


def _checked(texts: list[str], body, limits: Limits) -> list[str]:  # noqa: ANN001
    if body.n > limits.n:
        raise SettingError(f"{{name}}: at most {limits.n} choices a request", "n")
    tokens = body.max_completion_tokens or body.max_tokens
    if tokens is not None and tokens > limits.max_tokens:
        raise SettingError(f"{{name}}: at most {limits.max_tokens} a request", "max_tokens")
    if not texts:
        raise SettingError("{name}: give a text, or a list of texts", "prompt")
    if sum(len(t.encode("utf-8")) for t in texts) > limits.prompt_bytes:
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
