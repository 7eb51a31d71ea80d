"""The contract between our gunicorn worker (server/worker.py) and the app it hosts (server/app.py).

The worker reads every request's head itself, before the app runs; what it asks the app then, and
what it hands the app with each complete request, is written here and nowhere else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, runtime_checkable

from .auth import Caller

REQUEST_ID_HEADER = "X-Request-ID"
# What the worker puts in each request's WSGI environ:
REQUEST_ID_ENVIRON = "mis.request_id"  # the request id it chose (it logs its own answers under it)
ADMISSION_ENVIRON = "mis.admission"  # the Admission the app gave for the request's head
ANSWERED_ENVIRON = "mis.answered"  # set when the worker answered for the app (504, 500): its answer is the one counted

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # a client's own id is kept only if it is this tame


@dataclass(frozen=True)
class Admission:
    """What a request's head settles before its body is read (HostedApp.admit): how many body bytes
    it may send, who sent it, and the state change it asks for (for the worker's own refusals' logs)."""

    body_limit: int
    caller: Caller | None = None
    audit: str | None = None
    resource: object = None  # the route it was admitted to
    route: str | None = None  # that route's URI template (a metrics label)


@runtime_checkable
class HostedApp(Protocol):
    """What the worker needs of the WSGI app it serves."""

    on_drain: Callable[[], None]  # called first when the worker is told to leave (readiness turns false)
    on_shutdown: Callable[[], None]  # called when the worker leaves in order

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]: ...

    def admit(self, path: str, *, method: str, authorization: str | None, request_id: str,
              client: str | None) -> Admission:
        """From the head alone: the request's body limit and caller, or the MISError to answer
        instead (401, 403), already logged and counted."""


def choose_request_id(header: str | None) -> str:
    return header if header and _REQUEST_ID.match(header) else os.urandom(16).hex()
