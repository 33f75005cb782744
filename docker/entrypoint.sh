#!/bin/sh
# Container entrypoint for every cutout process (web, workers, beat, Flower).
# It only prepares a fresh Prometheus multiprocess directory and then `exec`s the
# command, so gunicorn or Celery becomes PID 1 and receives SIGTERM itself: a Celery
# worker then does a warm shutdown (finishes the images in hand), gunicorn drains.
set -eu

if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    # Samples left by an earlier run of this container (an emptyDir survives a restart
    # of the container) would be merged into /metrics as if those processes were alive.
    rm -rf "$PROMETHEUS_MULTIPROC_DIR"
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi

exec "$@"
