"""Loads the configured models in the background so the worker answers liveness at once and
readiness only when they are in (and no longer once the worker drains to leave).

A store that fails (read-only, full, unreachable) is waited for, not reported as a failure: the
warmup retries with capped exponential backoff, so readiness comes back by itself with the store.
A model that fails to load is a failure, reported by readiness until the worker restarts.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Iterator

from .errors import InsufficientStorage, MISError, ServiceUnavailable, StoreUnavailable
from .core.registry import Registry

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
_STORE_FAULTS = (StoreUnavailable, InsufficientStorage, ServiceUnavailable)  # an OCI backend's outage too


def retry_delays() -> Iterator[float]:
    """0.5, 1, 2, 4, 8, 10, 10, ... seconds."""
    for attempt in itertools.count():
        yield min(RETRY_FIRST_S * 2**attempt, RETRY_MAX_S)


class Warmup:
    def __init__(self, registry: Registry, preload: tuple[str, ...] | None):
        self.registry = registry
        self.preload = preload
        self.pending: set[str] = set()
        self.failed: dict[str, str] = {}
        self.draining = False  # the worker is leaving (SIGTERM): readiness says so before anything else
        self._done = threading.Event()

    def start(self) -> "Warmup":
        threading.Thread(target=self.run, name="mis-warmup", daemon=True).start()
        return self

    def run(self) -> None:
        try:
            wanted = None
            for delay in retry_delays():
                try:
                    if wanted is None:  # listing a remote catalog may meet its outage too
                        wanted = self.preload if self.preload is not None else tuple(self.registry.all_catalog_ids())
                        self.pending = set(wanted)
                    self._load_pending(wanted)
                    return
                except _STORE_FAULTS as exc:
                    log.warning("warmup waits for the model store, next try in %g s: %s", delay, exc.message)
                    time.sleep(delay)
        except Exception as exc:  # never let a broken catalog kill the worker: report it as not ready
            log.exception("warmup failed")
            self.failed["*"] = f"{type(exc).__name__}; the server log has the details"  # readiness is open to all
        finally:
            self._done.set()

    def _load_pending(self, wanted: tuple[str, ...]) -> None:
        """Load what is still pending, in the configured order; a store fault stops the pass."""
        self.registry.sync()  # what other workers (or the last run) already loaded
        for model_id in [m for m in wanted if m in self.pending]:
            try:
                self.registry.load(model_id)
            except _STORE_FAULTS:
                raise
            except MISError as exc:
                log.error("preloading %s failed: %s", model_id, exc.message)
                self.failed[model_id] = exc.message
            self.pending.discard(model_id)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def drain(self) -> None:
        self.draining = True

    @property
    def ready(self) -> bool:
        return self.done and not self.failed and not self.draining
