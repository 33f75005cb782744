"""gunicorn settings: `gunicorn -c python:web.gunicorn_conf "web:create_app()"` (cutout serve, containers)."""

import os

worker_class = "gthread"
threads = 16  # each SSE stream holds a thread while it waits on Redis
timeout = 300  # the synchronous endpoints wait up to CUTOUT_SYNC_TIMEOUT for the workers
graceful_timeout = 30
accesslog = None  # the app logs each request as one JSON line with its user and duration


def child_exit(server, worker):
    # Multiprocess metrics: a dead worker's live gauges must not linger in the merged view.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
