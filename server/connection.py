"""One client connection of our gunicorn worker (server/worker.py): httptools parses it; the head,
body and idle deadlines and the size limits are kept on the worker's event loop; a complete request
goes to the app (server/hosting.py's HostedApp) on one of the worker's threads, and its answer, or
the worker's own (400, 405, 408, 413, 414, 431, 503, 504: JSON shaped like the app's errors; the
request target is read by server/targets.py), is written back in turn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

import httptools

from .config import Config
from .errors import MISError
from .guard import watched
from .hosting import (
    ADMISSION_ENVIRON,
    ANSWERED_ENVIRON,
    REQUEST_ID_ENVIRON,
    REQUEST_ID_HEADER,
    Admission,
    HostedApp,
    choose_request_id,
)
from .protocols.common import account, error_document
from .targets import ALLOWED_METHODS, ASTERISK, BadTarget, logged_path, parse_target

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

SPOOL_BYTES = 1024 * 1024  # request bodies above this go to a temporary file
DRAIN_BYTES = 128 * 1024 * 1024  # read (and drop) at most this much of a refused body before closing
DRAIN_SECONDS = 10.0  # ... and for at most this long
DRAIN_IDLE_S = 2.0  # ... stopping sooner once the client has sent nothing for this long
DEADLINE_TICK_S = 0.05  # how often the event loop looks at predict deadlines (their resolution)

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 405: "Method Not Allowed",
           408: "Request Timeout",
           413: "Payload Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout"}


class Limits:
    """What one connection may send, from gunicorn's settings and the MIS_* ones."""

    def __init__(self, cfg, config: Config, app: HostedApp):
        self.request_line = cfg.limit_request_line or 8190
        self.header_count = cfg.limit_request_fields or 100
        self.header_bytes = cfg.limit_request_field_size or 8190
        # The whole head as sent, finished or not (nginx's 1K + 4 x 8K): an unfinished one may grow
        # no larger than the header limits let a finished one be.
        self.head_bytes = self.request_line + 4 * self.header_bytes
        self.header_timeout = config.header_timeout_s
        self.body_timeout = config.body_timeout_s
        self.keepalive = cfg.keepalive
        self.request_timeout = config.timeout_s
        self.admit = app.admit


class Deadlines:
    """The predict deadlines armed by request threads in the app (server/guard.py), kept by the
    event loop: arming and disarming are a dict write and a pop, with no wake-up of the loop."""

    def __init__(self):
        self.armed: dict[Watch, tuple[float, object]] = {}

    async def keep(self) -> None:
        while True:
            await asyncio.sleep(DEADLINE_TICK_S)
            now = time.monotonic()
            for watch, (deadline, on_expiry) in list(self.armed.items()):
                # pop decides the race with the thread's disarm(): exactly one of them gets the entry
                if deadline <= now and self.armed.pop(watch, None) is not None:
                    watch.expire(on_expiry())


class Watch:
    """One request's predict deadline (guard.Watchdog): when it runs out, the request is answered
    with the guard's error and its thread is abandoned to finish or hang."""

    def __init__(self, deadlines: Deadlines, loop: asyncio.AbstractEventLoop):
        self.deadlines = deadlines
        self.expired: asyncio.Future = loop.create_future()

    def arm(self, seconds: float, on_expiry) -> None:
        self.deadlines.armed[self] = (time.monotonic() + seconds, on_expiry)

    def disarm(self) -> bool:
        return self.deadlines.armed.pop(self, None) is not None

    def expire(self, error: MISError) -> None:
        if not self.expired.done():
            self.expired.set_result(error)


class Request:
    def __init__(self):
        self.url = b""
        self.path: bytes | None = None  # the target's path and query (server/targets.py), once the head is read
        self.query = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.headers_done = False
        self.body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        self.body_size = 0
        self.admission = Admission(0)  # until the app admits the head
        self.method = b"GET"
        self.version = "1.1"
        self.keep_alive = False
        self.started = time.perf_counter()  # for the access line's latency
        self.id: str | None = None  # the request id, once the head has been read

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name), None)


class Connection(asyncio.Protocol):
    """One client connection: parse, enforce limits and deadlines, hand complete requests to the app."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.limits = worker.limits
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None  # the one being read
        self.queue: list[Request] = []  # complete requests waiting for the app (pipelining)
        self.busy = False  # a request is with the app
        self.refused = False  # an error was answered: drain what the client still sends, then close
        self.drain_left = DRAIN_BYTES
        self.drain_until = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_callback = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.deferred: tuple | None = None  # refuse()'s arguments for a pipelined request, answered in turn
        self.peer: str | None = None
        self.answered = 0  # requests answered on this connection
        self.head_left: int | None = self.limits.head_bytes  # raw bytes the head being read may still take

    # -- transport events ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = str((transport.get_extra_info("peername") or ("",))[0])
        self.worker.connections.add(self)
        if len(self.worker.connections) > self.worker.cfg.worker_connections:
            self.refuse(503, "the server has too many open connections; retry shortly")
            return
        self.arm(self.limits.header_timeout, self.header_timeout)

    def connection_lost(self, exc) -> None:
        self.worker.connections.discard(self)
        self.disarm()
        for request in [self.request, *self.queue]:
            if request is not None:
                request.body.close()  # a spooled body on disk goes now, not when the GC gets to it
        self.writable.set()
        # Let go of everything at once: the parser holds this connection (its callbacks) as it holds
        # the parser, and the timer's callback is one of its methods, so these cycles would keep
        # the parser's buffers until a full GC. A request with the app keeps the transport (and so
        # this connection) only until its answer is dropped.
        self.parser = self.request = self.timer_callback = self.deferred = None
        self.queue.clear()
        if not self.busy:
            self.transport = None

    def pause_writing(self) -> None:
        self.writable.clear()  # the client reads slower than we answer: wait before the next answer

    def resume_writing(self) -> None:
        self.writable.set()

    def in_progress(self) -> bool:
        """A request is being read or answered, or an answer is still being sent."""
        return (self.busy or self.request is not None
                or (self.transport is not None and self.transport.get_write_buffer_size() > 0))

    def idle(self) -> bool:
        """Kept alive between requests: closed at once when draining (clients do not reuse closed ones)."""
        return self.answered > 0 and not self.in_progress()

    def owes_answer(self) -> bool:
        """A draining worker waits for this one: a request is under way, or the connection is new
        and its first request may be on its way (it gets the header timeout, as any other)."""
        return self.in_progress() or (self.answered == 0 and self.transport is not None
                                      and not self.transport.is_closing())

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self.drain_left -= len(data)
            if self.drain_left <= 0 or time.monotonic() > self.drain_until:
                self.close()
            else:
                self.arm(min(DRAIN_IDLE_S, self.drain_until - time.monotonic()), self.close)
            return
        while data and self.parser is not None and not self.refused:
            # httptools hands a header over only once it ends: a head's raw bytes are counted as
            # they come (head_left), and no more of them than its limit reach the parser, or one
            # endless header would grow without bound before any per-header check runs.
            if self.head_left is None:  # a body: its own limits apply
                piece, data = data, b""
            elif self.head_left <= 0:
                self.refuse(431, f"the request head is larger than {self.limits.head_bytes} bytes")
                return
            else:
                piece, data = data[:self.head_left], data[self.head_left:]
                self.head_left -= len(piece)
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                return  # the request is queued; answer it over HTTP/1.1 and ignore the upgrade (as gunicorn does)
            except httptools.HttpParserError as exc:
                self.refuse(400, f"malformed HTTP request: {exc}")

    def eof_received(self) -> bool:
        return self.busy or bool(self.queue)  # keep the socket to answer what was already sent

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.request = Request()
        if self.busy or self.queue:
            return  # pipelined behind a request with the app: its deadline starts when its turn comes
        if self.timer is None or self.timer_callback != self.header_timeout:  # the keep-alive wait ended
            self.arm(self.limits.header_timeout, self.header_timeout)

    def on_url(self, url: bytes) -> None:
        self.request.url += url
        if len(self.request.url) > self.limits.request_line:
            self.refuse(414, f"the request target is longer than {self.limits.request_line} bytes")
            raise httptools.HttpParserError("refused")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        request.headers.append((name, value))
        request.header_bytes += len(name) + len(value)
        if len(request.headers) > self.limits.header_count:
            self.refuse(431, f"the request has more than {self.limits.header_count} header fields")
            raise httptools.HttpParserError("refused")
        if request.header_bytes > self.limits.header_bytes * 4 or len(name) + len(value) > self.limits.header_bytes:
            self.refuse(431, f"the request headers are larger than {self.limits.header_bytes} bytes")
            raise httptools.HttpParserError("refused")

    def on_headers_complete(self) -> None:
        request = self.request
        request.headers_done = True
        self.head_left = None
        request.keep_alive = self.parser.should_keep_alive()
        request.method = self.parser.get_method()
        request.version = self.parser.get_http_version()
        request.id = choose_request_id(_text(request.header(REQUEST_ID_HEADER.lower().encode())))
        try:
            request.path, request.query = parse_target(request.method, request.url)
        except BadTarget as exc:
            self.refuse(exc.status, exc.message, headers=exc.headers)
            raise httptools.HttpParserError("refused") from None
        if request.path == ASTERISK:  # OPTIONS *: answered by the worker in its turn (call_app)
            self.arm(self.limits.body_timeout, self.body_timeout)
            return
        try:
            request.admission = self.limits.admit(
                unquote_to_bytes(request.path).decode("latin-1"), method=request.method.decode("latin-1"),
                authorization=_text(request.header(b"authorization")), request_id=request.id, client=self.peer)
        except MISError as exc:  # the app refuses this caller's body before any of it is read (and logs it)
            self.refuse(exc.status, exc.message, exc.to_dict(), exc.headers, logged=True)
            raise httptools.HttpParserError("refused") from None
        length = request.header(b"content-length")
        limit = request.admission.body_limit
        if length is not None and length.strip().isdigit() and int(length) > limit:
            self.refuse(413, f"the body of {int(length)} bytes is over the limit of {limit} bytes")
            raise httptools.HttpParserError("refused")
        if (request.header(b"expect") or b"").lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.arm(self.limits.body_timeout, self.body_timeout)

    def on_body(self, chunk: bytes) -> None:
        request = self.request
        request.body_size += len(chunk)
        if request.body_size > request.admission.body_limit:
            self.refuse(413, f"the body is over the limit of {request.admission.body_limit} bytes")
            raise httptools.HttpParserError("refused")
        request.body.write(chunk)
        self.arm(self.limits.body_timeout, self.body_timeout)  # the deadline is for silence, not for size

    def on_message_complete(self) -> None:
        self.disarm()
        self.queue.append(self.request)
        self.request = None
        self.head_left = self.limits.head_bytes  # the next head's count starts
        self.transport.pause_reading()  # one request at a time; the socket buffers the rest
        if not self.busy:
            self.loop.create_task(self.serve_queue())

    # -- answering -------------------------------------------------------------------------

    async def serve_queue(self) -> None:
        self.busy = True
        try:
            while self.queue and not self.transport.is_closing():
                request = self.queue.pop(0)
                try:
                    status, headers, body = await self.call_app(request)
                finally:
                    request.body.close()
                await self.writable.wait()
                keep_alive = request.keep_alive and self.worker.alive
                self.respond(status, headers, body, keep_alive, head=request.method == b"HEAD")
                self.answered += 1
                if not keep_alive:
                    self.close()
                    return
        except Exception:  # never leave a client without an answer or a socket half alive
            log.exception("the worker failed on a connection")
            self.close()
            return
        finally:
            self.busy = False
        if self.deferred:
            self.refuse(*self.deferred)
        elif not self.transport.is_closing():
            self.transport.resume_reading()
            if self.request is not None:  # a pipelined request is partly read: its head deadline starts now
                self.arm(self.limits.header_timeout, self.header_timeout)
            else:
                self.arm(self.limits.keepalive, self.idle_timeout)

    async def call_app(self, request: Request) -> tuple[str, list, bytes]:
        if request.path == ASTERISK:
            methods = ", ".join(ALLOWED_METHODS)
            return self.own_answer(request, 200, "", {"allow": list(ALLOWED_METHODS)}, {"Allow": methods})
        watch = Watch(self.worker.deadlines, self.loop)
        environ = self.environ(request)
        future = self.worker.pool.submit(run_wsgi, self.worker.wsgi, environ, watch)
        answer = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait((answer, watch.expired), timeout=self.limits.request_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if answer in done:
                return answer.result()
        except BaseException as exc:  # anything the app lets through (a model's KeyboardInterrupt...)
            if isinstance(exc, asyncio.CancelledError) and not future.done():
                raise  # our own task is being cancelled
            log.error("the app failed on request %s (%s): %r", request.id, _target(request), exc)
            return self.own_answer(request, 500, "internal server error; the server log has the details")
        # The client is answered now; the thread runs on (or hangs) and is counted until it ends.
        environ[ANSWERED_ENVIRON] = True  # its answer, if it ever comes, is not the one the client got
        self.worker.abandoned += 1
        answer.add_done_callback(self._unabandon)
        if watch.expired in done:
            error = watch.expired.result()
            status, payload = error.status, error.to_dict()
        else:
            log.error("request %s (%s) timed out after %s s; its thread is abandoned", request.id,
                      _target(request), self.limits.request_timeout)
            status, payload = 504, None
        # The app never answered, so it logged nothing yet (an abandoned thread logs when it ends).
        return self.own_answer(request, status, f"the server gave up on this request after "
                               f"{self.limits.request_timeout} s", payload)

    def _unabandon(self, answer: asyncio.Future) -> None:
        self.worker.abandoned -= 1
        if not answer.cancelled():
            answer.exception()  # retrieved: an abandoned failure is not "never retrieved" noise

    def own_answer(self, request: Request, status: int, message: str, payload: dict | None = None,
                   headers: dict | None = None, logged: bool = False) -> tuple[str, list, bytes]:
        """An answer the worker writes itself, with the request's id, and its access line and count
        (unless the app already wrote them)."""
        request.id = request.id or choose_request_id(None)
        if not logged:
            path = _text(request.path) if request.path is not None else logged_path(request.url)
            account(request_id=request.id, method=request.method.decode("latin-1") if request.headers_done else None,
                    path=path, status=status, started=request.started, client=self.peer,
                    caller=request.admission.caller, audit=request.admission.audit, route=request.admission.route)
        return _error(status, message, payload, {**(headers or {}), REQUEST_ID_HEADER: request.id})

    def environ(self, request: Request) -> dict:
        host, port = self.transport.get_extra_info("sockname")[:2]
        peer = self.transport.get_extra_info("peername") or ("", 0)
        request.body.seek(0)
        environ = {
            "REQUEST_METHOD": request.method.decode("latin-1"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(request.path).decode("latin-1"),
            "QUERY_STRING": request.query.decode("latin-1"),
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": f"HTTP/{request.version}",
            REQUEST_ID_ENVIRON: request.id,
            ADMISSION_ENVIRON: request.admission,
            "REMOTE_ADDR": str(peer[0]),
            "REMOTE_PORT": str(peer[1]),
            "CONTENT_LENGTH": str(request.body_size),  # also for chunked bodies: the app sees their length
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": request.body,
            "wsgi.input_terminated": True,
            "wsgi.errors": _LogStream(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in request.headers:
            if b"_" in name:
                continue  # X_Forwarded_For would pass for X-Forwarded-For in WSGI: dropped, as gunicorn does
            key = name.decode("latin-1").upper().replace("-", "_")
            if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                continue
            key = key if key == "CONTENT_TYPE" else f"HTTP_{key}"
            text = value.decode("latin-1")
            environ[key] = f"{environ[key]},{text}" if key in environ else text
        return environ

    def respond(self, status: str, headers: list, body: bytes, keep_alive: bool, head: bool = False) -> None:
        lines = [f"HTTP/1.1 {status}", f"Date: {formatdate(usegmt=True)}", "Server: mis"]
        lines += [f"{name}: {value}" for name, value in headers
                  if name.lower() not in ("content-length", "connection", "date", "server")]
        lines += [f"Content-Length: {len(body)}", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))

    def refuse(self, status: int, message: str, payload: dict | None = None, headers: dict | None = None,
               logged: bool = False) -> None:
        """Answer an error found before the app ran, then close once the client stops sending."""
        if self.refused or self.transport is None or self.transport.is_closing():
            return
        if self.busy or self.queue:  # earlier pipelined requests are answered first
            self.deferred = self.deferred or (status, message, payload, headers, logged)
            self.transport.pause_reading()
            return
        self.refused = True
        request = self.request or Request()  # refused before a request began: too many connections
        status_line, headers, body = self.own_answer(request, status, message, payload, headers, logged)
        self.respond(status_line, headers, body, keep_alive=False)
        # Closing now would make the kernel reset the connection while the client is still sending
        # its body, and it would never read the answer. So, as nginx's lingering close does: send
        # FIN after the answer (a client reading to the end sees it at once), then read and drop
        # what is left of a declared body, or what keeps coming, within bounds.
        length = self.request.header(b"content-length") if self.request else None
        if length is not None and length.strip().isdigit():
            self.drain_left = min(DRAIN_BYTES, int(length) - self.request.body_size)
        if self.drain_left <= 0:
            self.close()
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.drain_until = time.monotonic() + DRAIN_SECONDS
        self.transport.resume_reading()
        self.arm(DRAIN_IDLE_S, self.close)

    # -- deadlines -------------------------------------------------------------------------

    def arm(self, seconds: float, callback) -> None:
        self.disarm()
        self.timer_callback = callback
        self.timer = self.loop.call_later(seconds, callback)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def idle_timeout(self) -> None:
        self.close()  # no request started on this connection: nothing to answer

    def header_timeout(self) -> None:
        if self.request is not None:  # a request was begun: say why it is dropped
            self.refuse(408, f"the request headers did not arrive within {self.limits.header_timeout} s")
        self.close()

    def body_timeout(self) -> None:
        self.refuse(408, f"the request body stalled for {self.limits.body_timeout} s")
        self.close()

    def close(self) -> None:
        self.disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def run_wsgi(app, environ: dict, watch: Watch) -> tuple[str, list, bytes]:
    """Call the WSGI app on a pool thread and collect its whole answer."""
    started: list = []

    def start_response(status, headers, exc_info=None):
        started[:] = [status, headers]

    with watched(watch):
        result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return started[0], started[1], body


def _error(status: int, message: str, payload: dict | None = None, headers: dict | None = None
           ) -> tuple[str, list, bytes]:
    body = json.dumps(payload or error_document(message, REASONS[status].lower().replace(" ", "_"))).encode()
    return f"{status} {REASONS[status]}", [("Content-Type", "application/json"), *(headers or {}).items()], body


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _target(request: Request) -> str:
    return request.url[:200].decode("latin-1")


class _LogStream:
    """wsgi.errors: what the app writes there goes to the log."""

    def write(self, text: str) -> None:
        if text.strip():
            log.error("%s", text.rstrip())

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass
