"""gunicorn settings: `gunicorn -c python:web.gunicorn_conf "web:create_app()"` (cutout serve, containers).

Every mode starts the web app with this file, so every mode gets the same worker and limits.
"""

import os
import resource
import tempfile

from tasks.settings import Settings
from web import server

# gunicorn's master reads the settings once, here (its edge), and hands the limits to the workers it
# forks; each worker's app factory reads its own (web.create_app). What this loads in the master
# (pydantic, numpy, OpenCV) makes no socket and no Python thread that gevent would have to patch
# (gunicorn itself already loaded ssl); the workers load it anyway and share these pages.
_settings = Settings.from_env()
server.use(_settings)
# gevent: each connection, SSE stream and synchronous wait is a greenlet, not one of a few threads,
# so slow or listening clients hold no worker. web.server.Worker adds the header and
# body timeouts and the per-address connection cap (CUTOUT_HEADER_TIMEOUT, CUTOUT_BODY_TIMEOUT,
# CUTOUT_MAX_CONNECTIONS_PER_IP).
worker_class = "web.server.Worker"
# Connections (greenlets) per worker process; past it new ones wait in the listen backlog. A greenlet
# and its socket cost a few KB; one address holds at most CUTOUT_MAX_CONNECTIONS_PER_IP of them.
worker_connections = _settings.worker_connections
# The gevent worker only reports to the master between greenlets: a CPU-bound request (a large
# zip inflating) must not get the worker killed; the synchronous endpoints wait without blocking.
timeout = 300
graceful_timeout = 30
# Non-zero so that gunicorn reads request heads under a timeout and keeps connections open; the
# length of that timeout is web.server's CUTOUT_HEADER_TIMEOUT, not this.
keepalive = 5
accesslog = None  # the app logs each request as one JSON line with its user and duration
# gunicornc's control socket (gunicorn >= 25.1) defaults to ~/.gunicorn/, which a read-only root
# (the containers, the pods) can't create: it goes to the temp dir, one per master (its pid).
control_socket = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(), f"gunicorn-{os.getpid()}.ctl")

# Each connection holds a socket and a large upload one temporary file per photo until the request
# ends (web/uploads.py): the soft limit on open files (often 1,024) goes up to the hard one.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))

pre_fork = server.assign_row  # the per-address connection counts live in memory shared with workers


def child_exit(server_, worker):
    server.release_row(worker)
    # Multiprocess metrics: a dead worker's live gauges must not linger in the merged view.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
