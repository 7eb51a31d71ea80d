"""A worker's model memory budget (MIS_MAX_LOADED_MODELS): the models held in this worker's memory,
least recently used first. Loaded models beyond the budget are unloaded here (`evicted`) yet stay
loaded for the server: the next request for one loads it again (ModelMesh's idea), paying the load
time once. Models named in MIS_PRELOAD (`pinned`) are never unloaded to make room."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from typing import Callable

from .. import metrics
from .models import LoadedModel

log = logging.getLogger(__name__)


class MemoryBudget:
    def __init__(self, max_models: int, pinned: frozenset[str], lock: threading.RLock,
                 reopen: Callable[[str], LoadedModel]):
        self.max_models = max_models  # 0: no limit
        self.pinned = pinned
        self.lock = lock  # the registry's: held by whoever changes what is loaded
        self.reopen = reopen  # opens a model again for this worker
        self.models: OrderedDict[str, LoadedModel] = OrderedDict()
        self.evicted: set[str] = set()
        self.evictions = 0

    def ids(self) -> set[str]:
        """Every model loaded for the server as this worker knows it, in its memory or not."""
        return set(self.models) | self.evicted

    def keep(self, model_id: str, loaded: LoadedModel) -> None:
        """Hold a freshly opened model (the most recently used), unloading the least recently used
        unpinned others while over the budget. The caller holds the lock."""
        self.models[model_id] = loaded
        self.evicted.discard(model_id)
        while self.max_models and len(self.models) > self.max_models:
            # list(): one copy under the GIL, which a request thread's move_to_end cannot interrupt
            victim = next((m for m in list(self.models) if m != model_id and m not in self.pinned), None)
            if victim is None:
                return  # all pinned: the budget gives way to the configuration
            self.models.pop(victim).runtime.close()
            self.evicted.add(victim)
            self.evictions += 1
            metrics.model_evicted(victim)
            log.info("model %s unloaded from this worker to stay within %d models", victim, self.max_models)

    def drop(self, model_id: str) -> None:
        """Unloaded for the server: gone from this worker too. The caller holds the lock."""
        self.evicted.discard(model_id)
        if model_id in self.models:
            self.models.pop(model_id).runtime.close()

    def keep_only(self, wanted: set[str] | frozenset[str]) -> None:
        """What another worker unloaded goes here too. The caller holds the lock."""
        for model_id in set(self.models) - wanted:
            self.models.pop(model_id).runtime.close()
        self.evicted &= wanted

    def in_memory(self, model_id: str) -> tuple[LoadedModel | None, float]:
        """The model, loaded again first if this worker had unloaded it (with the load time, ms)."""
        loaded = self.models.get(model_id)
        if loaded is not None:
            with contextlib.suppress(KeyError):  # removed meanwhile by another thread
                self.models.move_to_end(model_id)
            return loaded, 0.0
        if model_id not in self.evicted:
            return None, 0.0
        with self.lock:
            if model_id in self.models:  # another thread brought it back meanwhile
                return self.models[model_id], 0.0
            started = time.perf_counter()
            loaded = self.reopen(model_id)
            self.keep(model_id, loaded)
            return loaded, 1000 * (time.perf_counter() - started)

    def stats(self) -> dict:
        return {"max_models": self.max_models or None, "in_memory": len(self.models),
                "unloaded_here": sorted(self.evicted), "evictions": self.evictions}
