"""Running the HTTP server: uvicorn on the app, logs on stderr in the CLI's style, and a
graceful stop on Ctrl-C, SIGTERM or SIGHUP: requests under way are cancelled at once, each
stream ending with an error event that says the server stopped."""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import threading
from collections.abc import Callable, Iterator

from textgen.errors import TextgenError
from textgen.serve.protocol import Limits
from textgen.serve.registry import Registry

HANGUP = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, or an error saying why there is none and what to do."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise TextgenError(
            f"--host {host}: not an address of this machine ({exc.strerror})"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        advice = {
            errno.EADDRINUSE: "another program uses it; choose another --port",
            errno.EADDRNOTAVAIL: "not an address of this machine; check --host",
            errno.EACCES: "ports below 1024 need root; choose another --port",
        }.get(exc.errno, "check --host and --port")
        raise TextgenError(
            f"cannot listen on {host}:{port}: {exc.strerror.lower()}; {advice}"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(
    registry: Registry,
    sock: socket.socket,
    api_key: str | None,
    limits: Limits,
    log: Callable[[str], None],
    host: str = "127.0.0.1",
) -> int:
    """Serve on `sock` (bound to `host`) until stopped; returns the signal that stopped it
    (0 for none)."""
    import uvicorn

    from textgen.serve.app import create_app
    from textgen.serve.gate import allowed_hosts

    app = create_app(registry, api_key, limits, log, allowed_hosts(host))
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="off",
    )
    stopped_by = [0]

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:  # noqa: ANN001
            if not stopped_by[0]:  # the first signal: cancel what runs, its streams end now
                stopped_by[0] = sig
                registry.close()
            super().handle_exit(sig, frame)  # a second Ctrl-C: uvicorn stops at once

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """uvicorn's (SIGINT, SIGTERM), and SIGHUP (a closed terminal) the same way."""
            with super().capture_signals():
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                hup = {n: signal.signal(n, self.handle_exit) for n in HANGUP}
                try:
                    yield
                finally:
                    for number, handler in hup.items():
                        signal.signal(number, handler)

    server = Server(config)

    def caught(number: int, frame: object) -> None:
        """uvicorn raises the signals it caught again once it has stopped: they end here."""

    stopping = (signal.SIGINT, signal.SIGTERM, *HANGUP)
    previous = {n: signal.signal(n, caught) for n in stopping}
    try:
        server.run(sockets=[sock])
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        registry.close()
    return stopped_by[0]
