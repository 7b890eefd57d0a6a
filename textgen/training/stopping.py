"""How a training run stops early: Ctrl-C (SIGINT), SIGTERM (what schedulers and
`docker stop` send) and SIGHUP (a closed terminal) all ask the loop to stop at the next
step boundary, save a checkpoint and return; a second signal stops at once.

A step is never cut in half: a checkpoint taken at a boundary holds the weights, the
optimizer and every random state of one moment, so a resumed run repeats the
uninterrupted one exactly.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

from textgen.errors import Interrupted

SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def stopped_by(number: int) -> str:
    """What happened, in words: 'interrupted (Ctrl-C)', 'stopped by SIGTERM', ..."""
    if number == signal.SIGINT:
        return "interrupted (Ctrl-C)"
    name = signal.Signals(number).name
    return f"stopped by {name} (the terminal closed)" if name == "SIGHUP" else f"stopped by {name}"


class StopRequests:
    """While active (a context manager), the signals above set `signal` instead of
    interrupting; the loop reads it between steps. Outside the main thread, where Python
    delivers no signals, it does nothing."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._requested)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _requested(self, number: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # asked twice: stop now
            raise Interrupted(number)
        self.signal = number

    def request(self, number: int = signal.SIGINT) -> None:
        """Ask for a stop from inside the process (a Ctrl-C that arrived as an exception)."""
        if self.signal is None:
            self.signal = number
