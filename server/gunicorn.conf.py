"""gunicorn settings, all derived from the MIS_* variables (server/config.py)."""

import errno
import gc
import os
import socket
import subprocess
import sys

from server.guard import make_run_dir, remove_run_dir, run_dir

# prometheus_client decides once, when first imported (server.app imports it), whether samples
# live in this process or in files that every worker writes and any scrape sums: so the run
# directory is made, and named to it, before that import. Once per master: a reload (SIGHUP) runs
# this file again and keeps the directory its workers already use.
if run_dir() is None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(make_run_dir())

from prometheus_client import multiprocess  # noqa: E402

from server.app import blame_dead_worker, build_master_gate, build_registry, check_backends  # noqa: E402
from server.auth import KeysFileError  # noqa: E402
from server.config import Config, ConfigError  # noqa: E402
from server.logs import configure_json_logs  # noqa: E402
from server.backends.store_dir import sweep_staging  # noqa: E402

try:
    _config = Config.from_env()
    _gate = build_master_gate(_config)  # a keys file that cannot be used stops the start here
    check_backends(_config)  # so do OCI credentials that cannot work
except (ConfigError, KeysFileError) as exc:
    remove_run_dir()
    sys.exit(f"The server cannot start: {exc}")  # one line saying what to set, not a traceback
configure_json_logs()  # the master audits the quarantines it decides (child_exit)

# One OpenMP thread per worker unless the operator says otherwise: small requests gain nothing
# from XGBoost's / LightGBM's thread pools, and workers x threads > cores makes them thrash.
os.environ.setdefault("OMP_NUM_THREADS", "1")

wsgi_app = "server.app:get_app()"
bind = [_config.bind]
# Workers add listening sockets of their own to the shared ones (server/worker.py): the kernel then
# spreads new connections over the workers.
reuse_port = True
workers = _config.workers
# Our own worker (server/worker.py): an event loop reads the sockets, a few threads run the app.
worker_class = "server.worker.Worker"
threads = _config.threads
keepalive = _config.keepalive_s
# The worker answers a request 504 after MIS_TIMEOUT_S on its own; the heartbeat limit is only for
# a worker whose event loop itself is frozen (a model holding the GIL in C code).
timeout = _config.timeout_s
# SIGTERM: each worker drains (server/worker.py) for at most this long before the master kills it.
graceful_timeout = _config.graceful_timeout_s
# gunicorn 25+ opens a management socket (gunicornc: reload, resize, stop) at a fixed path shared
# by every server of the user. Nothing here uses it, and it is one more way in: off.
control_socket_disable = True
loglevel = _config.log_level
errorlog = "-"


def on_starting(server):
    """Once, before any worker forks: build the demo models into an empty local catalog.

    In a child process: training starts OpenMP thread pools (XGBoost, LightGBM), and workers
    forked from a master that has them hang on their first prediction.
    """
    # No worker of this server runs yet, so staging untouched for a minute is a leftover of an
    # earlier run (a fresh upload writes its staging continuously: its body is already buffered).
    if list(server.cfg.bind) != [_config.bind]:  # the loopback rule of MIS_AUTH=off is MIS_BIND's
        remove_run_dir()
        sys.exit(f"The server cannot start: it would listen on {', '.join(server.cfg.bind)}, not MIS_BIND "
                 f"({_config.bind}): set MIS_BIND instead of gunicorn's --bind")
    if _taken(_config.bind) and "GUNICORN_FD" not in os.environ:  # (a re-executed master inherits its own)
        remove_run_dir()
        sys.exit(f"The server cannot start: another process already listens on MIS_BIND {_config.bind}: stop it, "
                 "or set MIS_BIND to a free host:port")
    sweep_staging(_config.store_dir, older_than_s=60)
    if _config.catalog == "local" and _config.demo_models:
        command = [sys.executable, "-m", "server.demo", str(_config.catalog_dir), "--env", _config.env or "dev"]
        subprocess.run(command, check=True)
    # One copy of each configured model for all workers: loaded here, inherited by every fork.
    try:
        registry = build_registry(_config, background=False)  # no threads in a process that forks
        registry.preopen(_config.preload if _config.preload is not None else list(registry.all_catalog_ids()))
    except Exception as exc:  # the workers load what they need themselves and report what fails
        server.log.warning("no model was loaded before the fork: %r", exc)
    # Objects that exist now are never collected in the workers: the collector's bookkeeping would
    # otherwise write to (and so copy) every page they share with the master.
    gc.freeze()


def _taken(bind: str) -> bool:
    """Whether another process listens on `bind`. gunicorn's sockets (reuse_port) would join its
    SO_REUSEPORT group, and the two servers would then share the address, each answering some of
    its connections; a socket without SO_REUSEPORT cannot bind beside a listening one."""
    host, port = bind.rsplit(":", 1)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no one's
            probe.bind(address)
    except OSError as exc:  # anything but a taken address, gunicorn's own bind reports
        return exc.errno == errno.EADDRINUSE
    return False


def pre_fork(server, worker):
    """The new worker inherits the master's keys: the current file's, or the last good ones."""
    if _gate.keys is not None:
        _gate.keys.refresh(force=True)


def child_exit(server, worker):
    """In the master, after a worker died: its live gauges (in flight) stop counting, and a model
    that killed it gets a strike (quarantine)."""
    multiprocess.mark_process_dead(worker.pid)
    try:
        models = blame_dead_worker(_config, worker.pid)
    except Exception as exc:  # a hook that raises would take the master down
        server.log.error("could not record what worker %s was running: %s", worker.pid, exc)
        return
    if models:
        server.log.error("worker %s died while predicting with %s", worker.pid, ", ".join(models))


def on_exit(server):
    remove_run_dir()
