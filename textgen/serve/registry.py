"""The models a server offers, each loaded on first use with an engine of its own, and
a bounded number kept loaded (the least recently used idle one goes first)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textgen.decode.batching import BatchEngine, EngineBusy
from textgen.errors import TextgenError
from textgen.model.loaded import LoadedModel
from textgen.store import folder as model_folder
from textgen.units import count


class UnknownModel(TextgenError):
    """No model of that name is served."""


@dataclass
class Served:
    name: str
    lm: LoadedModel
    engine: BatchEngine


class Registry:
    def __init__(
        self,
        names: list[str] | None,
        slots: int,
        queue: int,
        max_loaded: int = 4,
        threads: int | None = None,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        """`names` None: every model under the models folder, found at each request."""
        self.fixed = None if names is None else _named(names)
        self.slots, self.queue, self.max_loaded = slots, queue, max_loaded
        self.threads = threads
        self.closed = False
        self.log = log
        self.loaded: OrderedDict[str, Served] = OrderedDict()
        self.lock = threading.Lock()

    def available(self) -> dict[str, Path]:
        """Model name -> folder, for every model served."""
        if self.fixed is not None:
            return dict(self.fixed)
        home = model_folder.models_home()
        return {p.name: p for p in sorted(home.glob("*")) if model_folder.has_weights(p)}

    def get(self, name: str) -> Served:
        """The model and its engine, loading it now if it is not loaded (blocking: call it
        from a worker thread, not the event loop)."""
        with self.lock:
            if self.closed:
                raise EngineBusy("the server is stopping; try again when it is back")
            if name in self.loaded:
                self.loaded.move_to_end(name)
                return self.loaded[name]
            folder = self.available().get(name)
            if folder is None:
                known = ", ".join(self.available()) or "none"
                raise UnknownModel(f"no model named {name!r} is served here (served: {known})")
            self._make_room()
            started = time.perf_counter()
            lm = model_folder.load(folder, dtype="auto")
            served = Served(name, lm, BatchEngine(lm, self.slots, self.queue, self.threads))
            self.log(
                f"loaded {name}: {count(lm.model.num_parameters())} parameters, "
                f"{lm.model_config.context_window}-token window, {self.slots} slots "
                f"({time.perf_counter() - started:.1f}s)"
            )
            self.loaded[name] = served
            return served

    def _make_room(self) -> None:
        while len(self.loaded) >= self.max_loaded:
            idle = [name for name, s in self.loaded.items() if s.engine.busy() == 0]
            if not idle:
                raise EngineBusy(
                    f"{len(self.loaded)} models are loaded and busy; try again shortly"
                )
            self.loaded.pop(idle[0]).engine.close()
            self.log(f"unloaded {idle[0]} (at most {self.max_loaded} models loaded at once)")

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for served in self.loaded.values():
                served.engine.close()
            self.loaded.clear()


def _named(names: list[str]) -> dict[str, Path]:
    """--model values -> the names clients ask for (a folder's own name)."""
    served: dict[str, Path] = {}
    for given in names:
        folder = model_folder.resolve(given)
        name = folder.resolve().name
        if name in served and served[name].resolve() != folder.resolve():
            raise TextgenError(
                f"--model: two models named {name!r} ({served[name]} and {folder}); "
                "rename one folder"
            )
        served[name] = folder
    return served
