"""gunicorn settings: `gunicorn -c python:web.gunicorn_conf "web:create_app()"` (cutout serve, containers)."""

import os
import resource

worker_class = "gthread"
threads = 16  # each SSE stream holds a thread while it waits on Redis
timeout = 300  # the synchronous endpoints wait up to CUTOUT_SYNC_TIMEOUT for the workers
graceful_timeout = 30
accesslog = None  # the app logs each request as one JSON line with its user and duration

# A large upload holds one temporary file per photo until the request ends (web/uploads.py), and
# each thread may hold one: the soft limit on open files (often 1,024) goes up to the hard one.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))


def child_exit(server, worker):
    # Multiprocess metrics: a dead worker's live gauges must not linger in the merged view.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
