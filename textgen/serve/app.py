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
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


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
    app.add_middleware(_Gate, api_key=api_key, limits=limits, hosts=hosts, log=log)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(TextgenError, _refused)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models_loaded": list(registry.loaded)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entries = await run_in_threadpool(registry.entries)
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


async def _prompts(served, texts: list[str]) -> list[Prompt]:  # noqa: ANN001
    """The texts tokenized for the model, off the event loop."""
    return await run_in_threadpool(lambda: [Prompt(served, t) for t in texts])


async def _respond(view, run, stream: bool, request: Request):  # noqa: ANN001, ANN202
    """The run as a stream of events, or as one answer when it is done."""
    if stream:
        return _stream(view.chunks(run, request))
    return JSONResponse(await view.answer(run, request))


class _Gate:
    """Every request, before the app sees it: the Host header checked (a server on a
    loopback address answers loopback names only, so that a web page cannot reach it
    through a DNS name of its own), the API key checked (every route), the body bounded
    (413 past `limits.body_bytes`, announced or streamed); and one access-log line when
    its response is complete. Plain ASGI, so that a stream's chunks pass straight through."""

    def __init__(self, app, api_key: str | None, limits: Limits, hosts, log: Log) -> None:  # noqa: ANN001
        self.app, self.api_key, self.limits, self.hosts, self.log = (
            app,
            api_key,
            limits,
            hosts,
            log,
        )

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, done = time.perf_counter(), [0], [False]

        async def sending(message) -> None:  # noqa: ANN001
            if answered[0]:
                return  # the body was refused: what the app says after that goes nowhere
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done[0] = True

        received, answered = [0], [False]

        async def receiving():  # noqa: ANN202 - a body without a length, counted as it comes
            if answered[0]:
                return {"type": "http.disconnect"}
            message = await receive()
            received[0] += len(message.get("body", b""))
            if received[0] > self.limits.body_bytes and not status[0]:
                await self._too_large()(scope, receive, sending)
                answered[0] = True
                return {"type": "http.disconnect"}  # the app stops reading
            return message

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                return await refusal(scope, receive, sending)
            return await self.app(scope, receiving, sending)
        finally:
            seconds = time.perf_counter() - started
            ending = "" if done[0] else " (the client left)"
            self.log(f"{scope['method']} {scope['path']} {status[0]} {seconds:.2f}s{ending}")

    def _refusal(self, scope) -> JSONResponse | None:  # noqa: ANN001
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if self.hosts is not None and _hostname(host) not in self.hosts:
            return _error(
                400,
                f"the Host header names {host[:100]!r}, not this server; use "
                "http://localhost or http://127.0.0.1 (serve --host to listen on others)",
                param=None,
            )
        if self.api_key and not self._authorized(headers):
            return _error(
                401,
                "a valid API key is needed: Authorization: Bearer KEY",
                code="invalid_api_key",
            )
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limits.body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> JSONResponse:
        return _error(
            413, f"the request body is over the server's {self.limits.body_bytes:,} bytes"
        )

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, key = headers.get(b"authorization", b"").partition(b" ")
        expected = self.api_key.encode()  # type: ignore[union-attr]
        return scheme.lower() == b"bearer" and hmac.compare_digest(key.strip(), expected)


def allowed_hosts(host: str) -> frozenset[str] | None:
    """The names a request's Host header may give for a server on `host`: loopback names
    for a loopback address (None: any, for a server other machines reach)."""
    return LOOPBACK | {host} if host in LOOPBACK else None


def _hostname(header: str) -> str:
    """A Host header's name, without its port ("[::1]:8000" -> "::1")."""
    header = header.lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rpartition(":")[0] if header.count(":") == 1 else header


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
