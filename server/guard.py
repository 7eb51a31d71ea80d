"""Running a model's own code under a deadline, with its output captured, and leaving a trace of
what each worker is running so that a worker's death can be pinned on the model that caused it.

- `PredictGuard.run` gives predict at most `timeout_s`. A predict past it answers `PredictTimeout`
  (504 naming the model), counts against the model (`on_timeout`), and its thread is left to finish
  or hang. The worker asks to be recycled (`on_stuck`) once half its threads are stuck, or once one
  predict has been stuck for `recycle_after_s` (a stuck thread may be spinning a core).
  Under our gunicorn worker the request's own thread runs predict and the worker's event loop keeps
  the deadline (a `Watchdog`, installed per request with `watched`): no thread handoff per score.
  Elsewhere (tests, other servers) predict runs on the guard's own pool and the caller waits.
- What model code prints to sys.stdout / sys.stderr while it runs is kept per thread, capped, and
  logged with the model id, instead of flooding the server log.
- Each pool thread owns a record in a small memory-mapped file per worker process (`Inflight`):
  the model id while a predict runs, blank otherwise. The gunicorn master reads a dead worker's
  file (`models_in_flight`) to learn which model killed it.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import mmap
import os
import shutil
import sys
import tempfile
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from .errors import MISError, PredictTimeout
from .threads import DaemonPool

log = logging.getLogger(__name__)

RECORD = 256  # bytes per in-flight record: a model id is at most 255 characters
_local = threading.local()
_run_dir: Path | None = None  # set in the gunicorn master by make_run_dir


class Watchdog(Protocol):
    """Keeps one request's deadline for the thread that runs it (server/connection.py implements it)."""

    def arm(self, seconds: float, on_expiry: Callable[[], MISError]) -> None:
        """After `seconds`, answer the request with `on_expiry()` (called once, off this thread)."""

    def disarm(self) -> bool:
        """Stop the clock; False when it had already run out (the client has had its answer)."""


@contextlib.contextmanager
def watched(watchdog: Watchdog) -> Iterator[None]:
    """Predicts run on this thread, for the rest of the block, under `watchdog`'s clock."""
    _local.watchdog = watchdog
    try:
        yield
    finally:
        _local.watchdog = None


def make_run_dir() -> Path:
    """The gunicorn master's private directory, made before any worker starts (its workers inherit
    the path) for what the processes of one server share: the in-flight records and the metrics'
    files (server/metrics.py). A fresh, unpredictable, private name (mkdtemp): a name made from the
    pid would meet a killed earlier server's leftover (pids repeat, in containers always), or a trap
    another local user planted (symlinks to make a worker truncate a file, records to get a model
    quarantined, samples to fake metrics)."""
    global _run_dir
    _run_dir = Path(tempfile.mkdtemp(prefix=f"mis-{os.getpid()}-"))
    return _run_dir


def run_dir() -> Path | None:
    """This master's run directory; None outside gunicorn, or before make_run_dir."""
    return _run_dir


def remove_run_dir() -> None:
    if _run_dir is not None:
        shutil.rmtree(_run_dir, ignore_errors=True)


def inflight_path(worker_pid: int) -> Path | None:
    """Where worker `worker_pid` of this gunicorn master keeps its records; None outside gunicorn."""
    return _run_dir / f"{worker_pid}.inflight" if _run_dir is not None else None


def models_in_flight(path: Path) -> list[str]:
    """The models a (dead) worker was running, read from its records; the file is removed."""
    try:
        data = path.read_bytes()
        path.unlink()
    except OSError:
        return []
    records = (data[i:i + RECORD].rstrip(b"\0").decode(errors="replace") for i in range(0, len(data), RECORD))
    return sorted({r for r in records if r})


class Inflight:
    def __init__(self, path: Path, records: int):
        self.path = path
        # O_NOFOLLOW: never write through a symlink someone left in the directory.
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(handle, records * RECORD)
            self._map = mmap.mmap(handle, records * RECORD)
        finally:
            os.close(handle)

    def set(self, index: int, model_id: str) -> None:
        self._map[index * RECORD:(index + 1) * RECORD] = model_id.encode()[:RECORD].ljust(RECORD, b"\0")

    def remove(self) -> None:
        """The worker leaves in order: nothing it was running is to blame."""
        with contextlib.suppress(OSError):
            self.path.unlink()


class PredictGuard:
    def __init__(self, *, timeout_s: float, threads: int, output_bytes: int, recycle_after_s: float,
                 inflight_file: Path | None = None, on_stuck: Callable[[], None] | None = None):
        self.timeout_s = timeout_s
        self.recycle_after_s = recycle_after_s
        self.output_bytes = output_bytes
        self.records = threads
        self.inflight = Inflight(inflight_file, threads) if inflight_file else None
        self.on_stuck = on_stuck
        self.stuck = 0  # predicts that outlived their deadline and have not returned yet
        self.recycle_at = max(1, threads // 2)
        self._lock = threading.Lock()
        self._indices = itertools.count()
        self._pool = DaemonPool(threads, "mis-predict")
        install_output_capture()

    def run(self, model_id: str, fn: Callable, *args, on_timeout: Callable[[], None] = lambda: None) -> Any:
        """fn(*args) within the deadline; `on_timeout` runs (off the request's path) if it is missed."""
        watchdog = getattr(_local, "watchdog", None)
        if watchdog is not None:
            return self._run_watched(watchdog, model_id, fn, args, on_timeout)
        future = self._pool.submit(self._call, model_id, fn, args)
        try:
            return future.result(self.timeout_s)
        except FutureTimeout:
            if future.done():  # the model raised TimeoutError itself (the same class): its own failure
                raise
            if future.cancel():  # it never started: every thread was busy, which is no fault of the model
                raise PredictTimeout(f"model {model_id!r} waited {self.timeout_s} s for a free thread",
                                     model_id=model_id, timeout_s=self.timeout_s, started=False) from None
            future.add_done_callback(lambda _: self._unstick())
            raise self._expired(model_id, future.done, on_timeout) from None

    def _run_watched(self, watchdog: Watchdog, model_id: str, fn: Callable, args: tuple,
                     on_timeout: Callable[[], None]) -> Any:
        returned = threading.Event()
        watchdog.arm(self.timeout_s, lambda: self._expired(model_id, returned.is_set, on_timeout))
        try:
            return self._call(model_id, fn, args)
        finally:
            returned.set()
            if not watchdog.disarm():  # too late: the client was answered 504 when the clock ran out
                self._unstick()

    def _expired(self, model_id: str, returned: Callable[[], bool], on_timeout: Callable[[], None]) -> PredictTimeout:
        """A predict missed its deadline: count it stuck until it returns, and recycle the worker if
        too many are, or if this one is still running `recycle_after_s` from now."""
        with self._lock:
            self.stuck += 1
            recycle = self.stuck >= self.recycle_at
        log.error("model %s: predict still running after %s s; %d predict(s) stuck in this worker",
                  model_id, self.timeout_s, self.stuck)
        # A strike writes the store: not on the event loop's time, and not queued behind stuck threads.
        threading.Thread(target=on_timeout, name="mis-strike", daemon=True).start()
        if recycle:
            self._recycle()
        else:
            timer = threading.Timer(self.recycle_after_s, lambda: returned() or self._recycle())
            timer.daemon = True
            timer.start()
        return PredictTimeout(f"model {model_id!r} did not answer within {self.timeout_s} s",
                              model_id=model_id, timeout_s=self.timeout_s)

    def _recycle(self) -> None:
        if self.on_stuck:
            self.on_stuck()

    def close(self) -> None:
        if self.inflight:
            self.inflight.remove()

    def _call(self, model_id: str, fn: Callable, args: tuple) -> Any:
        index = self._record_index()
        if self.inflight:
            self.inflight.set(index, model_id)
        try:
            with captured_output(model_id, self.output_bytes, "predict"):
                return fn(*args)
        finally:
            if self.inflight:
                self.inflight.set(index, "")

    def _record_index(self) -> int:
        """This thread's in-flight record (threads beyond the records share, which only blurs blame)."""
        index = getattr(_local, "index", None)
        if index is None:
            index = _local.index = next(self._indices) % self.records
        return index

    def _unstick(self) -> None:
        with self._lock:
            self.stuck -= 1


# -- model output ------------------------------------------------------------------------------

class _Capture:
    def __init__(self, limit: int):
        self.limit = limit
        self.kept = io.StringIO()
        self.total = 0

    def write(self, text: str) -> None:
        room = self.limit - self.kept.tell()
        if room > 0:
            self.kept.write(text[:room])
        self.total += len(text)


class _Routed(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr: a thread that is capturing writes to its capture,
    every other thread to the real stream."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        capture = getattr(_local, "capture", None)
        if capture is None:
            return self.stream.write(text)
        capture.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str):  # buffer, errors, ...: the real stream's
        return getattr(self.stream, name)


def install_output_capture() -> None:
    if not isinstance(sys.stdout, _Routed):
        sys.stdout = _Routed(sys.stdout)
    if not isinstance(sys.stderr, _Routed):
        sys.stderr = _Routed(sys.stderr)


@contextlib.contextmanager
def captured_output(model_id: str, limit: int, during: str) -> Iterator[None]:
    """Collect what this thread prints while model code runs; log it once, capped, with the model id."""
    outer = getattr(_local, "capture", None)
    _local.capture = capture = _Capture(limit)
    try:
        yield
    finally:
        _local.capture = outer
        if capture.total:
            more = f" ({capture.total - capture.kept.tell()} more characters dropped)" if capture.total > limit else ""
            log.info("model %s wrote during %s: %r%s", model_id, during, capture.kept.getvalue(), more)
