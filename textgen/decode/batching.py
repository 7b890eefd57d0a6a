"""Many requests decoding at once on one model: continuous batching over a row cache.

A `BatchEngine` runs in a thread of its own (the model's work never runs on a server's
event loop). It holds `slots` rows; a request joins a free row between two steps (its
prompt read in one forward pass, into its row), and leaves it when it ends, is cancelled
or its reader goes away. Each step feeds every row one token: all rows are computed, the
free ones too, so what a request gets never depends on which others share the batch: the
same seed gives the same text, alone or among 31 others. (The C step computes each row
alone, in the same order whatever the others hold: there only the busy rows are computed.)

Each request samples with its own settings and seeded generator, by the same functions as
`textgen generate` (`decode.loop.choose`), and its text is made by the same `SampleText`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from textgen.decode.completion import SampleText, step_choices
from textgen.decode.loop import choose, new_seed, truncate_to_window
from textgen.errors import SettingError, TextgenError
from textgen.model.cache import KVCache, RowCache
from textgen.model.cpu_step import CpuStep
from textgen.model.device import numpy_threads
from textgen.model.loaded import LoadedModel
from textgen.model.memory import check_fits, decoding_bytes
from textgen.records import Sample, TokenRecord
from textgen.settings import SampleConfig

Emit = Callable[[TokenRecord | None, Sample], None]  # None: the request ended (see Sample)


class EngineBusy(TextgenError):
    """Every slot is taken and the queue is full: come back later."""


@dataclass
class Job:
    """One sample to decode: ids in, `emit(record, sample)` for each token (from the
    engine's thread), then `emit(None, sample)` once it ends."""

    prompt_ids: list[int]
    settings: SampleConfig  # num_samples 1; its seed, or a random one
    emit: Emit
    show_top: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop it at the next step and free its slot (its reader went away)."""
        self.cancelled.set()


@dataclass
class _Running:
    job: Job
    text: SampleText
    generator: torch.Generator
    history: list[int]  # the tokens in its row, oldest first
    logits: torch.Tensor  # (V,) for its next token
    produced: int = 0
    distribution: SampleConfig | None = None  # its settings.distribution(), made once


class BatchEngine:
    def __init__(
        self, lm: LoadedModel, slots: int = 16, queue: int = 64, threads: int | None = None
    ) -> None:
        """`threads`: the CPU threads the model's work uses (None: torch's setting)."""
        self.lm, self.model = lm, lm.model
        self.threads = threads
        config = self.model.config
        parameter = next(self.model.parameters())
        needed = decoding_bytes(config, slots, parameter.element_size())
        try:
            check_fits(needed, parameter.device, f"{slots:,} slots", "slots")
        except SettingError as exc:  # the server's setting, not a request's
            raise TextgenError(exc.phrased("--slots")) from None
        self.device, self.window = parameter.device, config.context_window
        self.cache = RowCache(config, slots, parameter.device, parameter.dtype)
        # a float32 model on the CPU steps in NumPy (model/cpu_step.py), as generate does
        self.fast_step = CpuStep(lm.model, self.cache) if CpuStep.for_model(lm.model) else None
        self.rows: list[_Running | None] = [None] * slots
        self.waiting: deque[Job] = deque()
        self.queue_limit = queue
        self.keep_on_slide = self.window - max(1, self.window // 4)
        self.changed = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="textgen-engine", daemon=True)
        self.thread.start()

    @property
    def slots(self) -> int:
        return len(self.rows)

    def busy(self) -> int:
        """Requests decoding or waiting."""
        return sum(row is not None for row in self.rows) + len(self.waiting)

    def submit(self, job: Job) -> None:
        with self.changed:
            if self.closed:
                raise EngineBusy("the server is stopping; try again when it is back")
            free = self.rows.count(None)
            if len(self.waiting) - free >= self.queue_limit:
                raise EngineBusy(
                    f"all {self.slots} slots are busy and {len(self.waiting)} requests wait; "
                    "try again shortly"
                )
            self.waiting.append(job)
            self.changed.notify()

    def close(self) -> None:
        """Stop after the current step; requests still running end as cancelled."""
        with self.changed:
            self.closed = True
            self.changed.notify()
        self.thread.join()

    # -- the engine's thread ------------------------------------------------------------------

    def _run(self) -> None:
        if self.threads is not None and self.device.type == "cpu":
            torch.set_num_threads(self.threads)
            numpy_threads(self.threads)
        while True:
            with self.changed:
                while not self.closed and not self.waiting and not any(self.rows):
                    self.changed.wait()
                if self.closed:
                    break
                joining = self._admissions()
            with torch.inference_mode():
                for row, job in joining:
                    self._start(row, job)
                if any(self.rows):
                    self._step()
        for row, running in enumerate(self.rows):
            if running is not None:
                running.job.cancel()
                self._end(row, "cancelled")
        with self.changed:
            waiting, self.waiting = list(self.waiting), deque()
        for job in waiting:  # never started: each ends at once, with nothing
            text = SampleText(self.lm.tokenizer, job.settings.stop)
            text.sample.finish_reason = "cancelled"
            job.emit(None, text.sample)

    def _admissions(self) -> list[tuple[int, Job]]:
        joining = []
        for row, running in enumerate(self.rows):
            while running is None and self.waiting:
                job = self.waiting.popleft()
                if not job.cancelled.is_set():
                    joining.append((row, job))
                    self.rows[row] = running = _Placeholder  # taken
        return joining

    def _start(self, row: int, job: Job) -> None:
        """Read the prompt into the row: its logits for the first token."""
        seed = job.settings.seed if job.settings.seed is not None else new_seed()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        history, _ = truncate_to_window(job.prompt_ids, self.window)
        text = SampleText(self.lm.tokenizer, job.settings.stop)
        logits = self._read(row, history)
        self.rows[row] = _Running(
            job, text, generator, history, logits, distribution=job.settings.distribution()
        )
        if job.settings.max_new_tokens == 0:
            self._end(row, "length")

    def _read(self, row: int, ids: list[int]) -> torch.Tensor:
        """`ids` into `row`, as `textgen generate` reads a prompt (in C, or one forward
        pass)."""
        if self.fast_step is not None and self.fast_step.reads_prompts:
            return self.fast_step.read(torch.tensor(ids, device=self.device), row)
        single = KVCache(self.model.config, 1, self.device, self.cache.keys.dtype)
        logits = self.model(torch.tensor([ids], device=self.device), cache=single, last_only=True)
        self.cache.store_row(row, single)
        return logits[0][0, -1]

    def _step(self) -> None:
        """Every running request picks its next token; then all rows take one step."""
        tokens = [0] * self.slots
        fed = [False] * self.slots  # rows whose token this step's forward pass reads
        active = []
        for row, running in enumerate(self.rows):
            if running is not None and running.job.cancelled.is_set():
                self._end(row, "cancelled")
            elif running is not None:
                active.append((row, running))
        chosen = self._choose([running for _, running in active])
        for (row, running), token in zip(active, chosen, strict=True):
            running.job.emit(running.text.add(*token), running.text.sample)
            running.produced += 1
            if running.text.done or running.produced >= running.job.settings.max_new_tokens:
                self._end(row, None)
            elif len(running.history) < self.window:
                running.history.append(token[0])
                tokens[row], fed[row] = token[0], True
            else:  # the window is full: keep its most recent tokens and read them again
                running.history = running.history[-(self.keep_on_slide - 1) :] + [token[0]]
                running.logits = self._read(row, running.history)
        if not any(fed):
            return
        if self.fast_step is not None and self.fast_step.reads_prompts:
            # in C each row is computed alone: only the fed ones, each after its history
            rows = [row for row in range(self.slots) if fed[row]]
            at = [len(self.rows[row].history) - 1 for row in rows]
            stepped = self.fast_step.step_rows(rows, at, [tokens[row] for row in rows])
            for row, logits in zip(rows, stepped, strict=True):
                self.rows[row].logits = logits
            return
        # where each row's step writes: after its history (a fed token: its last one); a
        # row that slid is not read but its keys are at 0 .. len - 1; a free one uses 0
        self.cache.lengths = self._lengths(minus=fed)
        ids = torch.tensor(tokens, device=self.device)
        if self.fast_step is not None:
            logits = self.fast_step(ids)  # (slots, V)
        else:
            logits = self.model(ids[:, None], cache=self.cache)[0][:, -1]
        self.cache.lengths = self._lengths()
        for row, running in enumerate(self.rows):
            if fed[row]:
                running.logits = logits[row]

    def _lengths(self, minus: list[bool] | None = None) -> torch.Tensor:
        """Each row's cached length as its history says (less one where `minus`)."""
        lengths = [0 if r is None else len(r.history) for r in self.rows]
        if minus is not None:
            lengths = [n - int(m) for n, m in zip(lengths, minus, strict=True)]
        return torch.tensor(lengths, device=self.device)

    def _choose(self, rows: list[_Running]) -> list[tuple[int, float, float, list]]:
        """Each row's next token, as `textgen generate` picks it: rows with the same
        settings in one call, each drawing from its own generator (the same draws as
        alone). A repetition penalty reads a row's own history: such a row goes alone."""
        groups: dict[tuple, list[int]] = {}
        for i, running in enumerate(rows):
            settings = running.job.settings
            key = (
                running.distribution,
                running.job.show_top,
                i if settings.repetition_penalty != 1.0 else None,
            )
            groups.setdefault(key, []).append(i)
        chosen: list = [None] * len(rows)
        for members in groups.values():
            group = [rows[i] for i in members]
            settings = group[0].job.settings
            history = group[0].history if settings.repetition_penalty != 1.0 else []
            step = choose(
                torch.stack([r.logits for r in group]),
                torch.tensor([history], dtype=torch.long, device=self.device),
                settings,
                [r.generator for r in group],
                group[0].job.show_top,
            )
            for i, token in zip(members, step_choices(step), strict=True):
                chosen[i] = token
        return chosen

    def _end(self, row: int, reason: str | None) -> None:
        running = self.rows[row]
        self.rows[row] = None
        if running is None or running is _Placeholder:
            return
        tail = running.text.finish()
        if reason is not None:
            running.text.sample.finish_reason = reason
        if tail is not None and reason != "cancelled":
            running.job.emit(tail, running.text.sample)
        running.job.emit(None, running.text.sample)


_Placeholder = object()  # a row taken by a request whose prompt is being read
