"""The models a server offers, each loaded on first use with an engine of its own, and
a bounded number kept loaded (the least recently used idle one goes first)."""

from __future__ import annotations

import os
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

    def __init__(self, name: str, served: list[str]) -> None:
        known = ", ".join(served) or "none"
        super().__init__(f"no model named {name!r} is served here (served: {known})")


@dataclass
class Served:
    name: str
    lm: LoadedModel
    engine: BatchEngine
    checkpoint: tuple | None  # the published checkpoint it was loaded from (`checkpoint`)

    @property
    def step(self) -> int | None:
        return self.lm.config["training"].get("steps")


def checkpoint(folder: Path) -> tuple | None:
    """What identifies the checkpoint a folder publishes: its weights and config files
    (each replaced whole by training, or the folder swapped); None where there is none."""
    try:
        return tuple(
            (s.st_ino, s.st_mtime_ns, s.st_size)
            for s in (os.stat(folder / model_folder.WEIGHTS), os.stat(folder / model_folder.CONFIG))
        )
    except OSError:
        return None


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
        return {p.name: p for p in model_folder.published(home) if model_folder.has_weights(p)}

    def get(self, name: str) -> Served:
        """The model and its engine, loading it now if it is not loaded (blocking: call it
        from a worker thread, not the event loop)."""
        with self.lock:
            if self.closed:
                raise EngineBusy("the server is stopping; try again when it is back")
            served = self.loaded.get(name)
            if served is not None:
                if served.checkpoint == checkpoint(served.lm.folder) or served.engine.busy():
                    self.loaded.move_to_end(name)  # unchanged, or changed under requests
                    return served  # under way: it is reloaded once they are done
                self.loaded.pop(name).engine.close()
                self.log(f"{name} changed on disk (a new checkpoint): reloading it")
            folder = self.available().get(name)
            if folder is None:
                raise UnknownModel(name, list(self.available()))
            self._make_room()
            started, published = time.perf_counter(), checkpoint(folder)
            lm = model_folder.load(folder, dtype="auto")
            engine = BatchEngine(lm, self.slots, self.queue, self.threads)
            served = Served(name, lm, engine, published)
            step = "" if served.step is None else f", step {served.step:,}"
            self.log(
                f"loaded {name}{step}: {count(lm.model.num_parameters())} parameters, "
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

    def entries(self) -> list[dict]:
        """`/v1/models`' list: each model, `created` when its checkpoint was published,
        and (textgen's) the training step it is at and the one being served."""
        entries = []
        for name, folder in self.available().items():
            try:
                published = int(os.stat(folder / model_folder.WEIGHTS).st_mtime)
                steps = model_folder.read_json_config(folder).get("training", {}).get("steps")
            except (OSError, TextgenError, AttributeError):
                continue  # gone, or not whole, since it was listed
            served = self.loaded.get(name)  # no lock: a model loading would hold it
            entry = {"id": name, "object": "model", "created": published, "owned_by": "textgen"}
            entry["step"] = steps if isinstance(steps, int) else None
            entry["served_step"] = served.step if served is not None else None
            entries.append(entry)
        return entries

    def public(self, message: str) -> str:
        """`message` without the server's own paths (a client learns nothing of its disk):
        a model's folder shown as the model's name."""
        try:
            folders = self.available()
            places = {str(model_folder.models_home().resolve()): "models"}
        except TextgenError:
            return "the models folder cannot be read"
        places |= {str(p.resolve()): n for n, p in folders.items()}
        places |= {str(p): n for n, p in folders.items()}
        for place in sorted(places, key=len, reverse=True):
            message = message.replace(place, places[place])
        return message

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
