"""gunicorn settings for the container (`gunicorn -c gunicorn.conf.py app:app`).

Reads PORT (default 8000), WEB_CONCURRENCY (workers, default 2), WEB_THREADS (threads per
worker, default 4) and PROMETHEUS_MULTIPROC_DIR (default: a fresh temporary folder per master). Command-line flags and GUNICORN_CMD_ARGS
override what is set here.
"""

import glob
import os
import shutil
import sys
import tempfile

from environs import Env, EnvError
from marshmallow.validate import Range

# Threads, so a slow reader of a long answer (an audit export) holds one thread, not a whole
# worker: the platform's calls and /healthz go on beside it. The main thread keeps telling the
# master the worker is alive, so `timeout` below never cuts off a long export either.
worker_class = "gthread"

# Every setting is checked below, in the master, before any worker is forked: a bad one stops
# gunicorn with one line and no traceback (credits_service/config.py). The import comes after
# PROMETHEUS_MULTIPROC_DIR is set, since it loads prometheus_client.

# SIGTERM stops accepting connections and lets requests in flight finish for up to
# graceful_timeout seconds; keep it below the orchestrator's kill deadline (Kubernetes 30 s,
# compose's stop_grace_period). A worker silent for `timeout` seconds is killed and replaced.
graceful_timeout = 20
timeout = 30

# Nothing here uses gunicorn's control socket, and it would need a writable $HOME.
control_socket_disable = True

# Prometheus counts across workers only in multiprocess mode: every worker writes its samples
# to files in this folder. The variable must be set before a worker imports prometheus_client,
# so it is set here, in the master, and inherited by the workers it forks.
own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    own_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="credits-prometheus-")


from credits_service.config import EXIT_INVALID_CONFIGURATION, Config, exit_when_misconfigured  # noqa: E402

env = Env()
try:
    try:
        port = env.int("PORT", 8000, validate=Range(min=1, max=65535))
        workers = env.int("WEB_CONCURRENCY", 2, validate=Range(min=1))
        threads = env.int("WEB_THREADS", 4, validate=Range(min=1, max=64))
    except EnvError as error:
        # One line naming the variable, not a traceback from gunicorn's config loader, and the
        # status every other bad setting exits with.
        print(f"gunicorn.conf.py: {error}", file=sys.stderr)
        sys.exit(EXIT_INVALID_CONFIGURATION)
    with exit_when_misconfigured():
        Config.from_environment()
except SystemExit:
    if own_metrics_dir:  # on_exit never runs for a master that did not start
        shutil.rmtree(own_metrics_dir, ignore_errors=True)
    raise

bind = f"0.0.0.0:{port}"


def on_starting(server):
    """Samples left by an earlier master would be added to this one's: start with no sample files."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(folder, exist_ok=True)
    for stale in glob.glob(os.path.join(folder, "*.db")):
        os.remove(stale)


def on_exit(server):
    if own_metrics_dir:
        shutil.rmtree(own_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    """Drop a dead worker's live gauges; its counters stay, so totals never go backwards."""
    from prometheus_client import multiprocess  # imported only once the folder variable is set

    multiprocess.mark_process_dead(worker.pid)


# The application writes one JSON access line per request itself (logger credits_service.access,
# with request id, principal, route, status and duration), so gunicorn's own access log stays off:
# accesslog is unset and the gunicorn.access logger goes nowhere. The root logger is left to the
# application's JSON handler; gunicorn's own messages get the same JSON shape here.
accesslog = None
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            # The application's own formatter: the same fields and UTC times as its lines.
            "()": "credits_service.logs.UtcJsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level"},
        },
    },
    "handlers": {
        "json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
    },
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["json"], "propagate": False},
        "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
    },
}
