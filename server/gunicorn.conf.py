"""gunicorn settings, all derived from the MIS_* variables (server/config.py)."""

from server.config import Config

_config = Config.from_env()

wsgi_app = "server.app:get_app()"
bind = [_config.bind]
workers = _config.workers
worker_class = "sync"
timeout = _config.timeout_s
graceful_timeout = 30
loglevel = _config.log_level
errorlog = "-"


def on_starting(server):
    """Once, in the master before any worker forks: build the demo models into an empty local catalog."""
    if _config.catalog == "local" and _config.demo_models:
        from server.demo import ensure_demo_catalog

        ids = ensure_demo_catalog(_config.catalog_dir, env=_config.env or "dev")
        server.log.info("demo models in %s: %s", _config.catalog_dir, ", ".join(ids))
