"""Shadow mirroring: a share of an alias's traffic scored again by another version, on a thread of
its own, its answer logged (with whether it agrees) and never returned."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import orjson

from .. import metrics
from ..errors import MISError
from ..logs import log_shadow
from ..threads import DaemonPool
from .models import Prediction

log = logging.getLogger(__name__)

QUEUE = 64  # mirrored requests waiting for the shadow thread; more are dropped, not queued


class ShadowMirror:
    def __init__(self, score: Callable[[str, Any, tuple[str, ...]], Prediction]):
        self.score = score
        # One thread: mirrored requests wait for each other, never for the callers' answers.
        self.pool = DaemonPool(1, "mis-shadow")
        self.pending = 0
        self.lock = threading.Lock()  # not the registry's lock, which a model load holds for seconds

    def mirror(self, model_id: str, payload: Any, outputs: tuple[str, ...], primary: Prediction,
               request_id: str | None) -> None:
        """Dropped when the shadow thread is behind."""
        with self.lock:
            dropped = self.pending >= QUEUE
            self.pending += not dropped
        if dropped:
            metrics.shadow(model_id, "", "dropped", None)
            log_shadow(request_id=request_id, model=model_id, outcome="dropped", primary=primary.model_id)
            return

        def run() -> None:
            started, version, fields = time.perf_counter(), "", {}
            try:
                result = self.score(model_id, payload, outputs)
                outcome, version = "ok", result.model_version
                fields = dict(version=version, predict_ms=round(result.predict_ms, 3), prediction=result.prediction,
                              agrees=same_answer(result.prediction, primary.prediction))
            except MISError as exc:
                outcome = exc.code
            except Exception:  # logged here: the pool's future is read by nobody
                log.exception("the shadow call of %s failed", model_id)
                outcome = "error"
            finally:
                with self.lock:
                    self.pending -= 1
            metrics.shadow(model_id, version, outcome, time.perf_counter() - started)
            log_shadow(request_id=request_id, model=model_id, outcome=outcome, primary=primary.model_id, **fields)

        self.pool.submit(run)


def same_answer(a: Any, b: Any) -> bool:
    """Whether two models answered alike, whatever their answers are made of (numpy arrays too)."""
    try:
        return orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY) == orjson.dumps(b, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return False
