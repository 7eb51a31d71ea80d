"""A pool of daemon threads that hands back futures.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits, so one thread
stuck in a model's predict would keep a finished worker process alive forever. These threads are
daemons: a process that is done can exit whatever its threads are doing.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable


class DaemonPool:
    def __init__(self, size: int, name: str, on_start: Callable[[int], None] | None = None):
        self.size = size
        self.name = name
        self._on_start = on_start  # called in each new thread with its index (for per-thread state)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn, args))
        with self._lock:
            if self._idle:  # an idle thread will take the job
                self._idle -= 1
            elif self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._serve, args=(self._threads - 1,), name=f"{self.name}-{self._threads}",
                                 daemon=True).start()
            # else every thread is busy: the job waits in the queue
        return future

    def _serve(self, index: int) -> None:
        if self._on_start:
            self._on_start(index)
        while True:
            future, fn, args = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1
