#!/bin/sh
# Container entrypoint for every cutout process, in compose and on Kubernetes alike:
# both name a role (`web`, `worker-cpu`, `worker-gpu`, `beat`, `flower`) and this script
# is the one place that turns it into a command line, so the Deployments run exactly
# what the compose test ran. Any other command is run as given.
#   cutout-entrypoint ROLE            run the role's process (PID 1, exec)
#   cutout-entrypoint probe ready|alive ROLE   a health check (compose, k8s probes)
#   CUTOUT_ENTRYPOINT_PRINT=1 cutout-entrypoint ROLE   print the argv, one per line (tests)
# Role settings, from the environment: WEB_CONCURRENCY (gunicorn processes, 2),
# FORWARDED_ALLOW_IPS (proxies whose X-Forwarded-* gunicorn trusts), WORKER_CONCURRENCY
# (pool size: 2 on the cpu queue, 16 threads on the gpu queue), WORKER_NAME (Celery's
# node name after `worker@`: the pod's name on Kubernetes, else the host name).
set -eu

node="worker@${WORKER_NAME:-$(hostname)}"

# The health checks, as argv: compose's healthcheck and the pods' exec probes run these.
probe() {
    case "$1 $2" in
    "ready web" | "alive web")
        set -- python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)" ;;
    "ready flower" | "alive flower")
        set -- python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5555/healthcheck', timeout=3)" ;;
    # Ready once the worker answers a broadcast ping through the broker under its own name.
    "ready worker-cpu" | "ready worker-gpu")
        set -- celery -A tasks.app inspect ping -d "$node" --timeout 5 ;;
    # Liveness must not go through Redis: an outage would fail every worker's ping at once and
    # restart them all, dropping the images in hand. PID 1 running or sleeping, not a zombie.
    "alive worker-cpu" | "alive worker-gpu" | "alive beat" | "ready beat")
        set -- grep -Eq '^State:[[:space:]]+[RSD]' /proc/1/status ;;
    *)
        echo "cutout-entrypoint: no probe '$1' for '$2'" >&2
        exit 2 ;;
    esac
    run "$@"
}

run() {
    if [ -n "${CUTOUT_ENTRYPOINT_PRINT:-}" ]; then
        printf '%s\n' "$@"
        exit 0
    fi
    exec "$@"
}

case "${1:-}" in
probe)
    probe "${2:-}" "${3:-}" ;;
web)
    set -- gunicorn -c python:web.gunicorn_conf --bind 0.0.0.0:8000 --workers "${WEB_CONCURRENCY:-2}" \
        ${FORWARDED_ALLOW_IPS:+--forwarded-allow-ips "$FORWARDED_ALLOW_IPS"} "web:create_app()" ;;
worker-cpu)
    set -- celery -A tasks.app worker -Q cpu,control --pool prefork -c "${WORKER_CONCURRENCY:-2}" \
        -n "$node" -l INFO ;;
# Threads, not prefork: the threads decode and feed the worker's one model (Batcher).
worker-gpu)
    set -- celery -A tasks.app worker -Q gpu --pool threads -c "${WORKER_CONCURRENCY:-16}" -n "$node" -l INFO ;;
# The beat schedule (the hourly sweep) runs exactly once, apart from the workers.
beat)
    set -- celery -A tasks.app beat -l INFO -s /tmp/celerybeat-schedule ;;
flower)
    set -- celery -A tasks.app flower --port=5555 --address=0.0.0.0 ;;
esac

if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ] && [ -z "${CUTOUT_ENTRYPOINT_PRINT:-}" ]; then
    # Samples left by an earlier run of this container (an emptyDir survives a restart
    # of the container) would be merged into /metrics as if those processes were alive.
    rm -rf "$PROMETHEUS_MULTIPROC_DIR"
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi

# exec: gunicorn or Celery becomes PID 1 and receives SIGTERM itself: a Celery worker then
# does a warm shutdown (finishes the images in hand), gunicorn drains.
run "$@"
