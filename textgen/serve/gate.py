"""What every request passes before the API sees it: the Host header, the API key and
the size of its body; and one access-log line for each (`Gate`, plain ASGI middleware)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from fastapi.responses import JSONResponse

from textgen.serve import protocol
from textgen.serve.protocol import Limits

Log = Callable[[str], None]
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class Gate:
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
            left = not done[0] or scope.get("state", {}).get("client_left", False)
            ending = " (the client left)" if left else ""
            self.log(f"{scope['method']} {scope['path']} {status[0]} {seconds:.2f}s{ending}")

    def _refusal(self, scope) -> JSONResponse | None:  # noqa: ANN001
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if self.hosts is not None and _hostname(host) not in self.hosts:
            return error_response(
                400,
                f"the Host header names {host[:100]!r}, not this server; use "
                "http://localhost or http://127.0.0.1 (serve --host to listen on others)",
                param=None,
            )
        if self.api_key and not self._authorized(headers):
            return error_response(
                401,
                "a valid API key is needed: Authorization: Bearer KEY",
                code="invalid_api_key",
            )
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limits.body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> JSONResponse:
        return error_response(
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
    name, _, port = header.rpartition("]:" if header.startswith("[") else ":")
    if not name or not port.isdigit():  # no port (or no name): the whole is the name
        name = header
    return name.removeprefix("[").removesuffix("]")


def error_response(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    """A JSON response in OpenAI's error shape."""
    return JSONResponse(protocol.error_body(message, kind, param, code), status_code=status)
