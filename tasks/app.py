"""The Celery app: `celery -A tasks.app worker -Q gpu|cpu`. Every reliability setting says why."""

import os
import sys
import time

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    before_task_publish,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from tasks import kombu_patch
from tasks.backend import send_only
from tasks.queues import CONTROL, PRIORITY_STEPS, SEP
from tasks.resources import Resources
from tasks.settings import Settings

kombu_patch.apply()  # before any broker connection: see the module's docstring

def configure(app: Celery, settings: Settings) -> Celery:
    """Give `app` its Celery settings and this process's Resources, both from `settings`.

    Called once at a process's edge. Celery reads the configuration when it first needs it; an app
    configured before gets it at once, but keeps the broker connections it already made (a process
    that moves to another broker drops them itself: tests/conftest.py point_app_at)."""
    app.resources = Resources(settings)
    app.config_from_object(celery_config(settings))
    return app


def resources_of(app: Celery) -> Resources:
    """`app`'s Resources. In a process that never configured it (a script that only imports the tasks,
    or Celery not yet asked for its configuration) this is the edge: the environment is read now."""
    if getattr(app, "resources", None) is None:
        configure(app, Settings.from_env())
    return app.resources


def celery_config(settings: Settings) -> dict:
    vt = {
        "visibility_timeout": settings.visibility_timeout,
        # Sweep for abandoned (unacked, timed-out) messages every few seconds instead of
        # kombu's default ~100 s, so a killed worker's images come back soon after the timeout.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
    }
    return dict(
        broker_url=settings.broker_url,
        # Nothing here waits on a task's result (the job record is the truth), so no process
        # subscribes to result channels (tasks/backend.py).
        result_backend=send_only(settings.result_backend),
        task_routes={"cutout.infer": {"queue": "gpu"}, "cutout.launch": {"queue": CONTROL},
                     "cutout.*": {"queue": "cpu"}},
        task_default_queue="cpu",
        # Ack after the task ran, not when it arrived: a worker that dies mid-image
        # leaves the message to be redelivered instead of losing the image.
        task_acks_late=True,
        # ...and when the worker process is killed (OOM, kill -9), requeue it too. Brokers
        # do not count requeues, so tasks cap their own attempts (JobStore.count_attempt).
        task_reject_on_worker_lost=True,
        # One message reserved per pool slot: a long image must not hold others hostage
        # while idle workers wait. (GPU workers batch across their thread pool, not prefetch.)
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.soft_time_limit,
        task_time_limit=settings.time_limit,
        # Redis redelivers unacked messages after the visibility timeout; it must outlast
        # the hard time limit, and Celery reads it in these three places.
        broker_transport_options={**vt, "priority_steps": list(PRIORITY_STEPS), "sep": SEP},
        result_backend_transport_options=vt,
        visibility_timeout=settings.visibility_timeout,
        # Results (small dicts) live as long as the jobs they belong to.
        result_expires=int(settings.retention_hours * 3600),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Events for Flower.
        worker_send_task_events=True,
        # No task-sent events: they double the messages a submit publishes (Flower still sees
        # every task received, started and finished by the workers).
        task_send_sent_event=False,
        # Pooled broker connections: a chord's group holds one while each chain takes another, so
        # every submit in flight needs two; with the stock 10 a dozen concurrent submits deadlock.
        # 128 covers any thread count we run (gunicorn: 16 per process). None would disable the
        # pool: a new connection per message, measured 3x slower per submit.
        broker_pool_limit=128,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "sweep-expired-jobs": {"task": "cutout.sweep", "schedule": 3600.0},
            # A job whose messages were lost (a dead worker past its retries, a broker that lost
            # data) would otherwise stay `running` forever; this fails it with a reason.
            "fail-stalled-jobs": {"task": "cutout.watchdog", "schedule": 60.0},
            # Objects that tasks in flight wrote after their job was deleted: gone within a minute.
            "purge-deleted-jobs": {"task": "cutout.purge", "schedule": 20.0},
        },
    )


# Configured by its process: the web app's factory, tests and benchmarks call configure(); the
# `celery -A tasks.app` commands (worker, beat, Flower) leave it to _read_settings.
app = Celery("cutout", include=["tasks.work", "tasks.upkeep"])


@app.on_configure.connect
def _read_settings(sender: Celery, **_):
    """The edge of the `celery` commands' processes: the settings are read from the environment
    when Celery first needs its configuration, unless the process configured the app itself."""
    if getattr(sender, "resources", None) is None:
        try:
            settings = Settings.from_env()
        except ValueError as err:
            # SystemExit, because Celery logs and ignores an Exception raised by a signal handler:
            # the process would run on Celery's defaults instead of stopping with the fix.
            print(f"cutout: {err}", file=sys.stderr)
            raise SystemExit(2) from err
        configure(sender, settings)


@worker_process_init.connect
def _own_resources(**_):
    """Each prefork child builds its own connections, store and models, never its parent's."""
    app.resources = Resources(resources_of(app).settings)


def _runs_models(worker) -> bool:
    """Whether this worker consumes the gpu queue, the only one whose tasks run a model."""
    return worker is not None and "gpu" in worker.app.amqp.queues.consume_from


@worker_init.connect
def _check_device(sender=None, **_):
    """A worker told to use CUDA refuses to start without a usable GPU, instead of crawling on the CPU.

    Only a worker that runs models checks: the check imports torch, and a prefork cpu worker's
    children would inherit it from the parent (each then peaked at ~280 MB instead of
    95-160 MB; bench/worker_memory.py)."""
    settings = resources_of(app).settings
    if settings.gpu is not None:
        # Pins this worker before torch first touches CUDA: one worker per device.
        os.environ["CUDA_VISIBLE_DEVICES"] = settings.gpu
    if settings.device != "cpu" and _runs_models(sender):
        from matting_core.errors import DeviceUnavailableError
        from matting_core.model import resolve_device

        try:
            resolve_device(settings.device)
        except DeviceUnavailableError as err:
            # SystemExit, because Celery logs and ignores an Exception raised by a signal handler.
            print(f"cutout worker: {err}", file=sys.stderr)
            raise SystemExit(2) from err


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger, **_):
    from tasks import logs

    if resources_of(app).settings.log_format != "text":
        logs.use_json(logger)


@before_task_publish.connect
def _stamp_sent(headers, **_):
    # Read back in task_prerun: how long the message waited in its queue.
    headers.setdefault("cutout_sent_at", time.time())


@task_prerun.connect
def _queue_wait(task, **_):
    from tasks import metrics

    queue = (task.request.delivery_info or {}).get("routing_key") or "unknown"
    metrics.observe_queue_wait(queue, getattr(task.request, "cutout_sent_at", None))


@worker_init.connect
def _serve_metrics(**_):
    """The worker's /metrics (its pool children's samples merged), on CUTOUT_METRICS_PORT if set,
    at CUTOUT_METRICS_ADDR (loopback unless a container's scraper needs the pod's address)."""
    settings = resources_of(app).settings
    if settings.metrics_port:
        from prometheus_client import start_http_server

        from tasks import metrics

        start_http_server(settings.metrics_port, addr=settings.metrics_addr,
                          registry=metrics.registry(settings.broker_url))


@worker_init.connect
def _preload(sender=None, **_):
    """A gpu worker loads the models of CUTOUT_MODELS (with CUTOUT_WARMUP=1 and none named, the
    default one) before it takes any task, and with warm-up runs (and compiles) each, so the first
    images do not wait ~40 s for a compile. Only for the threads pool: a prefork parent must never
    hold a model (CUDA does not survive fork). Other models still load on first use."""
    settings = resources_of(app).settings
    if not settings.preload or not _runs_models(sender):
        return
    pool = getattr(sender, "pool_cls", None)
    if pool is not None and "thread" not in str(getattr(pool, "__module__", pool)):
        print("cutout worker: CUTOUT_MODELS and CUTOUT_WARMUP ignored outside --pool threads (a model must "
              "not load before a fork)", file=sys.stderr)
        return
    for name in settings.preload:
        batcher = resources_of(app).batchers.get(name)
        if settings.warm_up:
            print(f"cutout worker: {name} warm, batch sizes {batcher.warm_up()}", file=sys.stderr)
        else:
            batcher.load()
            print(f"cutout worker: {name} loaded", file=sys.stderr)


@worker_process_shutdown.connect
def _forget_child(pid, **_):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
