"""A request under way: its jobs on a model's `BatchEngine`, and their tokens handed from
the engine's thread to the event loop.

The engine's thread puts each token in its request's inbox; a `Waker` wakes the event
loop once for all the tokens that came since it last looked. A reader that goes away
cancels its jobs, which frees their slots at the engine's next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi import Request

from textgen.decode.batching import EngineBusy, Job
from textgen.decode.completion import prompt_window
from textgen.errors import SettingError, TextgenError
from textgen.records import Sample, TokenRecord
from textgen.serve.registry import Served

Item = tuple[int, TokenRecord | None, Sample]  # (choice index, token, sample so far)


class Stopping(TextgenError):
    """The server stopped while the request was under way (its text is incomplete)."""


class Waker:
    """Wakes the event loop for the runs that have new tokens: once for all the tokens
    that arrived since it last woke, however many requests they belong to (a step of the
    engine, not each of its tokens, costs a wake-up)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.pending: set[Run] = set()

    def mark(self, run: Run) -> None:  # the engine's thread
        with self.lock:
            first = not self.pending
            self.pending.add(run)
        if first:
            with contextlib.suppress(RuntimeError):  # no loop: the server stopped
                self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self.lock:
            runs, self.pending = self.pending, set()
        for run in runs:
            run.ready.set()


DISCONNECT_CHECK = 0.5  # seconds between checks that a request's client is still there


class Run:
    """The jobs of one request, and their tokens handed from the engine's thread to the
    event loop as (choice index, record, sample); a record of None ends a choice. Tokens
    gather in an inbox until the event loop comes for them (see `Waker`)."""

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self.inbox: list[Item] = []
        self.lock = threading.Lock()
        self.ready = asyncio.Event()
        self.jobs: list[Job] = []

    def job(self, prompt_ids: list[int], settings, show_top: int) -> Job:  # noqa: ANN001
        index = len(self.jobs)

        def emit(record: TokenRecord | None, sample: Sample) -> None:  # the engine's thread
            with self.lock:
                self.inbox.append((index, record, sample))
            self.waker.mark(self)

        job = Job(prompt_ids, settings, emit, show_top)
        self.jobs.append(job)
        return job

    async def events(self, request: Request) -> AsyncIterator[Item | None]:
        """The items as they come; None after each batch of them (a moment to write)."""
        remaining = len(self.jobs)
        loop = asyncio.get_running_loop()
        checked = loop.time()
        try:
            while remaining:
                if not self.ready.is_set():  # (under load it often is: no wait to set up)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.ready.wait(), timeout=DISCONNECT_CHECK)
                # every half second, tokens flowing or not: a reader that writes nothing
                # until the end (a whole answer, not a stream) never fails a write to say
                # it went away
                if loop.time() - checked >= DISCONNECT_CHECK:
                    if await request.is_disconnected():
                        request.state.client_left = True  # for the request's log line
                        return
                    checked = loop.time()
                if not self.ready.is_set():
                    continue
                self.ready.clear()
                with self.lock:
                    items, self.inbox = self.inbox, []
                for item in items:
                    if item[1] is None and item[2].finish_reason == "cancelled":
                        raise Stopping("the server is stopping; try again when it is back")
                    remaining -= item[1] is None
                    yield item
                yield None
        finally:
            self.cancel()  # a reader gone, or done: nothing more to decode

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()


class Prompt:
    """A prompt as the model reads it: its ids (at most a context window of them) and its
    token counts. A text is read after the end-of-text marker, as `textgen generate`
    reads it; token ids are read as they are given (the model's tokenizer, and the Hugging
    Face export's, put the marker first)."""

    def __init__(self, served: Served, given: str | list[int]) -> None:
        tokenizer, window = served.lm.tokenizer, served.lm.model_config.context_window
        if isinstance(given, list):
            vocab = tokenizer.vocab_size
            wrong = next((i for i in given if not 0 <= i < vocab), None)
            if wrong is not None or not given:
                raise SettingError(
                    f"{{name}}: token ids of this model run from 0 to {vocab - 1}"
                    + ("" if wrong is None else f", not {wrong}"),
                    "prompt",
                )
            self.ids, self.text = given[-window:], tokenizer.decode(given)
            self.tokens, self.dropped = len(given), len(given) - len(given[-window:])
            self.scored = given[-(window + 1) :]
            return
        self.text = given
        self.scored = None  # made when asked for (`scored_ids`)
        self.ids, counted = prompt_window(tokenizer, given, window)
        # a very long prompt is tokenized from its end only; usage counts all of it
        self.tokens = counted if counted is not None else len(tokenizer.encode(given))
        self.dropped = max(0, self.tokens + 1 - len(self.ids))

    def scored_ids(self, served: Served) -> list[int]:
        """The ids a score of the prompt covers (`echo` with `logprobs`): one more than
        the window, since the last is predicted, not read."""
        if self.scored is None:
            window = served.lm.model_config.context_window
            self.scored = prompt_window(served.lm.tokenizer, self.text, window + 1)[0]
        return self.scored


def submit(served: Served, prompts: list[Prompt], settings, n: int, show_top: int) -> Run:  # noqa: ANN001
    """One job per prompt and choice; choice c of a seeded request takes seed + c."""
    run = Run(_waker())
    for prompt in prompts:
        for choice in range(n):
            seed = None if settings.seed is None else settings.seed + choice
            run.job(prompt.ids, replace(settings, seed=seed), show_top)
    try:
        for job in run.jobs:
            served.engine.submit(job)
    except EngineBusy:
        run.cancel()
        raise
    return run


_wakers: dict[asyncio.AbstractEventLoop, Waker] = {}


def _waker() -> Waker:
    """The running event loop's waker."""
    loop = asyncio.get_running_loop()
    if loop not in _wakers:
        _wakers.clear()  # a loop of an earlier server, stopped
        _wakers[loop] = Waker(loop)
    return _wakers[loop]
