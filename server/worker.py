"""The gunicorn worker class: asyncio reads HTTP, a thread pool runs the WSGI app.

gunicorn's sync worker gives each connection a whole process, so a few clients trickling their
headers, or as many requests as there are workers to a model that hangs, stop everything. Here
one event loop per worker reads every connection (server/connection.py) with httptools and enforces
the header, body and idle deadlines; only a complete request (body buffered, spooled to disk when
large) reaches the app, on one of a few threads. So:

- slow or idle clients cost a socket and a timer, never a thread;
- a request the app has not answered within `MIS_TIMEOUT_S`, or whose predict ran past
  `MIS_PREDICT_TIMEOUT_S` (the request's thread runs predict itself; the loop keeps the deadline,
  see `Deadlines`), is answered 504 and its thread abandoned; a worker with too many abandoned
  threads stops accepting, finishes what it holds and exits, and gunicorn starts a fresh one;
- every answer the worker writes itself (400, 405, 408, 413, 414, 431, 503, 504) is JSON shaped like
  the app's errors, and a too-large body is drained (bounded) before the 413 so the client,
  still sending, can read it;
- chunked bodies and `Expect: 100-continue` work, with the same limits as Content-Length ones;
- SIGTERM drains the worker (`Worker._drain`): readiness turns false, the listening sockets close
  (new connections are refused), and what was already sent is answered before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time

import uvloop
from gunicorn.workers.base import Worker as GunicornWorker

from .config import Config
from .connection import Connection, Deadlines, Limits
from .hosting import HostedApp
from .threads import DaemonPool

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0


class Worker(GunicornWorker):
    """gunicorn worker class `server.worker.Worker`."""

    def init_process(self) -> None:
        guard_exit_codes()  # before the app loads: its warmup thread runs model code
        super().init_process()

    def run(self) -> None:
        if not isinstance(self.wsgi, HostedApp):
            raise TypeError(f"server.worker.Worker serves server.app's App, not {type(self.wsgi).__name__}")
        config = Config.from_env()
        self.limits = Limits(self.cfg, config, self.wsgi)
        self.pool = DaemonPool(self.cfg.threads, "mis-request")
        self.deadlines = Deadlines()
        self.abandoned = 0  # app calls still running after their client was answered 504
        self.max_abandoned = max(1, self.cfg.threads // 2)
        self.connections: set[Connection] = set()
        try:
            uvloop.run(self._serve())  # libuv's loop: several times less overhead per request than asyncio's
        finally:
            self.wsgi.on_shutdown()
            # Threads stuck in a model must not hold the process: leave without interpreter teardown.
            logging.shutdown()
            self.tmp.close()
            os._exit(0)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.create_task(self.deadlines.keep())
        self.accepting: set[asyncio.Task] = set()  # accepted sockets not yet made Connections
        stopping = asyncio.Event()
        # gunicorn's graceful stop (the master's SIGTERM, or our own recycling): drain at once, not
        # at the next heartbeat, so that the listening sockets close promptly.
        loop.add_signal_handler(signal.SIGTERM, self._stop, stopping)
        listeners = [listener.sock for listener in self.sockets] + self._own_listeners()
        for sock in listeners:
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._accept, loop, sock)
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            if self.abandoned >= self.max_abandoned:
                self.log.warning("worker %s holds %d abandoned requests: recycling", self.pid, self.abandoned)
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), HEARTBEAT_S)
        await self._drain(loop, listeners)

    def _stop(self, stopping: asyncio.Event) -> None:
        self.alive = False
        stopping.set()

    def _own_listeners(self) -> list[socket.socket]:
        """A listening socket of this worker's own beside each shared TCP one, in the same
        SO_REUSEPORT group (gunicorn.conf.py sets reuse_port): the kernel spreads new connections
        over the group's sockets, so a burst of keep-alive connections (a client pool opening at
        once) lands on every worker. On the shared socket alone, whichever worker woke first took
        most of them, and served them alone, on one core, for as long as they lived."""
        own = []
        for listener in self.sockets:
            if listener.sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            sock = socket.socket(listener.sock.family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(listener.sock.getsockname())
                sock.listen(self.cfg.backlog)
            except OSError as exc:  # the shared socket is not in a reuse_port group: it serves alone
                log.warning("worker %s listens on the shared socket only: %s", self.pid, exc)
                sock.close()
                continue
            own.append(sock)
        return own

    def _accept(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bool:
        """One connection per wake-up, so that accepting takes turns with serving. True when one
        was accepted."""
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return False  # another worker took it
        except OSError as exc:  # out of file descriptors, say: the connection waits in the backlog
            log.warning("could not accept a connection: %s", exc)
            return False
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(loop.connect_accepted_socket(lambda: Connection(self), conn))
        self.accepting.add(task)
        task.add_done_callback(self.accepting.discard)
        return True

    async def _drain(self, loop: asyncio.AbstractEventLoop, listeners: list) -> None:
        """Leave in order: readiness turns false; every listening socket, the shared ones too, is
        closed once the connections already in its backlog are accepted (closing it with any there
        would reset them; closed, it refuses new ones at once); idle keep-alive connections close;
        what was sent before is answered (`Connection: close`) within graceful_timeout; then out."""
        self.alive = False
        self.wsgi.on_drain()
        for sock in listeners:
            loop.remove_reader(sock.fileno())
            while self._accept(loop, sock):
                pass
            sock.close()  # the shared ones stay open in the other workers until they close them too
        if self.accepting:
            await asyncio.wait(self.accepting)
        await asyncio.sleep(0.01)  # a turn of the loop to read what the connections have already received
        for connection in list(self.connections):
            if connection.idle():
                connection.close()
        deadline = time.monotonic() + max(1, self.cfg.graceful_timeout - 2)  # before the master's SIGKILL
        while any(c.owes_answer() for c in self.connections) and time.monotonic() < deadline:
            self.notify()
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()


def guard_exit_codes() -> None:
    """gunicorn's master shuts the whole server down when a worker exits with code 3 or 4 (its
    "failed to boot" / "app failed to load" codes). Once booted, a model calling os._exit(3) must
    only cost its worker, so those codes become 1 here."""
    real_exit = os._exit

    def _exit(code: int) -> None:
        real_exit(1 if code in (3, 4) else code)

    os._exit = _exit
