"""The local store's directory (MIS_DATA_DIR/store) and the file discipline every local role keeps:
its layout, staging in tmp/ and removal out of sight, the one lock its shared files are written
under, what a storage fault means for the client, and the sweep of what dead processes staged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

from ..errors import InsufficientStorage, MISError, StoreUnavailable

log = logging.getLogger(__name__)

# A staging entry nothing has written to for this long belongs to a process that died (killed
# mid-upload, crashed): far longer than any upload, extraction or model load takes.
STALE_STAGING_S = 3600.0

# What the errno of a failed store operation means for the client; any other errno is a bug (500).
_FULL = {errno.ENOSPC, errno.EDQUOT}
_UNAVAILABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT, errno.ESTALE, errno.ENOTCONN,
                errno.ETIMEDOUT, errno.EHOSTDOWN, errno.EHOSTUNREACH}


def storage_fault(exc: OSError, action: str) -> MISError | None:
    """The typed error for a store operation (`action`, e.g. "save the upload") that failed with
    `exc`, or None when `exc` is no storage fault. The message says what failed, not where."""
    if exc.errno in _FULL:
        return InsufficientStorage(f"the model store is full: could not {action} ({exc.strerror})")
    if exc.errno in _UNAVAILABLE:
        return StoreUnavailable(f"the model store is unavailable: could not {action} ({exc.strerror})")
    return None


@contextlib.contextmanager
def typed_faults(action: str) -> Iterator[None]:
    """Runs one store operation: an OSError that is a storage fault leaves as a typed error."""
    try:
        yield
    except OSError as exc:
        fault = storage_fault(exc, action)
        if fault is None:
            raise
        log.warning("could not %s: %s", action, exc)  # the operator's log keeps the path
        raise fault from exc


class StoreDir:
    def __init__(self, root: Path):
        self.root = root
        self.uploads = root / "uploads"
        self.artifacts = root / "artifacts"
        self.tmp = root / "tmp"
        self.state_file = root / "state.json"
        self.quarantine_file = root / "quarantine.json"

    def prepare(self) -> None:
        """At a worker's start: laid out where the disk allows, and swept of what processes that
        died left in tmp/."""
        try:
            self.make_layout()
        except OSError as exc:
            # A read-only or absent store must not stop the worker: its operations answer 503
            # until the store is back, and the first write then lays it out.
            if storage_fault(exc, "prepare the store") is None:
                raise
            log.warning("the model store cannot be prepared yet: %s", exc)
        sweep_staging(self.root)

    def make_layout(self) -> None:
        for directory in (self.uploads, self.artifacts, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)

    def new_staging_dir(self) -> Path:
        self.make_layout()  # the store may have been read-only when this process started
        return Path(tempfile.mkdtemp(dir=self.tmp))

    def remove_tree(self, path: Path) -> None:
        """Rename out of sight first so no reader sees a half-deleted directory. Renamed to a new
        name in tmp/ rather than into a new folder there: a full disk may have no room for one."""
        if not path.exists():
            return
        doomed = self.tmp / f"deleted-{uuid.uuid4().hex}"
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    @contextlib.contextmanager
    def locked(self, timeout_s: float | None = None) -> Iterator[None]:
        """Every writer of the shared files (state.json, quarantine.json, an upload's metadata)
        holds this lock."""
        self.make_layout()  # the store may have been read-only when this process started
        with open(self.root / "state.lock", "a") as lock:
            if timeout_s is None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            else:
                _flock_within(lock, timeout_s)
            yield


def _flock_within(lock, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the store's state lock was held for over {timeout_s} s") from None
            time.sleep(0.01)


def sweep_staging(root: Path, older_than_s: float = STALE_STAGING_S) -> None:
    """Delete what uploads, extractions and state writes killed midway left in the store's tmp/.

    Workers start (and are restarted) while others are mid-upload, so by default only entries
    nothing has written to for `older_than_s` go. gunicorn's master, before it forks the workers,
    passes a much shorter age.
    """
    deadline = time.time() - older_than_s
    tmp = root / "tmp"
    try:
        for entry in list(tmp.iterdir()) if tmp.is_dir() else []:
            try:
                if _last_written(entry) > deadline:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except FileNotFoundError:
                continue  # another worker swept it first
    except OSError as exc:  # a read-only or failing store: a later start sweeps
        log.warning("could not sweep the store's staging leftovers: %s", exc)


def _last_written(path: Path) -> float:
    """The newest mtime in a staging entry: an extraction in progress keeps writing its files."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return newest
