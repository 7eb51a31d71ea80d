"""Loads the configured models in the background so the worker answers liveness at once and
readiness only when they are in."""

from __future__ import annotations

import logging
import threading

from .errors import MISError
from .registry import Registry

log = logging.getLogger(__name__)


class Warmup:
    def __init__(self, registry: Registry, preload: tuple[str, ...] | None):
        self.registry = registry
        self.preload = preload
        self.pending: set[str] = set()
        self.failed: dict[str, str] = {}
        self._done = threading.Event()

    def start(self) -> "Warmup":
        threading.Thread(target=self.run, name="mis-warmup", daemon=True).start()
        return self

    def run(self) -> None:
        try:
            self.registry.sync()  # what other workers (or the last run) already loaded
            wanted = self.preload if self.preload is not None else tuple(self.registry.all_catalog_ids())
            self.pending = set(wanted)
            for model_id in wanted:
                try:
                    self.registry.load(model_id)
                except MISError as exc:
                    log.error("preloading %s failed: %s", model_id, exc.message)
                    self.failed[model_id] = exc.message
                self.pending.discard(model_id)
        except Exception as exc:  # never let a broken catalog kill the worker: report it as not ready
            log.exception("warmup failed")
            self.failed["*"] = str(exc)
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def ready(self) -> bool:
        return self.done and not self.failed
