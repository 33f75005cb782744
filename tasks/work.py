"""The tasks: short adapters that load bytes by key, call the core, store the result, return a small dict.

infer (gpu) -> finish (cpu) per image, chained; package (cpu) is the chord body.
A bad image returns a failed dict instead of raising, so the chord body always runs.
"""

import time

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_prerun
from celery.utils.log import get_task_logger

from matting_core import decode, encode, pipeline
from matting_core.errors import CutoutError, ImageTooLargeError, UnsupportedImageError
from matting_core.options import Options
from tasks import keys, metrics
from tasks.app import app
from tasks.context import batchers, jobs, settings, storage
from tasks.packaging import write_zip
from tasks.storage import TRANSIENT_ERRORS, KeyNotFound

log = get_task_logger(__name__)
# What a task still queued for a job the user deleted (or the sweep removed) returns, doing nothing.
_DELETED = {"status": "failed", "error": "the job was deleted"}
# Countdowns between tries of a storage call that failed transiently: 64 s in all, so a
# restart of the store (20-30 s) is outlasted. The waits are task retries, not sleeps, so
# no worker slot is held meanwhile; each stays under the visibility timeout's 20 s in the
# tests (the worker holds a countdown task unacked, and Redis would hand it out again).
RETRY_COUNTDOWNS = (2, 4, 8, 10, 10, 10, 10, 10)
# An upload that fails to decode (not an image, truncated, too many pixels) never will.
_UNREADABLE = (UnsupportedImageError, ImageTooLargeError)


def _fail(job: str, i: int, reason: str, force: bool = False) -> dict:
    # The one place an item fails: its reason is logged here, once.
    if not jobs().update_item(job, i, "failed", force=force, error=reason) and jobs().exists(job):
        return _as_finished(job, i)  # a duplicate's late failure leaves a done item done
    log.warning("item failed", extra={"job": job, "item": i, "reason": reason})
    metrics.images_total.labels("failed").inc()
    return {"i": i, "status": "failed", "error": reason}


def _as_finished(job: str, i: int) -> dict:
    """The result of an item that already finished, for a second delivery of its task (its
    worker died after the work, before the ack): returned as it stands, nothing redone."""
    item = jobs().item(job, i)
    if item.get("state") == "done":
        return {"i": i, "status": "done", "key": item.get("output_key")}
    return {"i": i, "status": "failed", "error": item.get("error", "")}


def _outcome(task, job: str, i: int, name: str, stage: str, err: Exception) -> dict:
    """What an error in a stage means for its item: a reason the user can act on, or a retry."""
    if isinstance(err, CutoutError):
        return _fail(job, i, str(err))
    if isinstance(err, KeyNotFound):
        return _fail(job, i, f"{name}: its stored upload or alpha map is gone (job deleted or expired); "
                             "upload it again")
    if isinstance(err, SoftTimeLimitExceeded):
        return _fail(job, i, f"{name}: took longer than {settings().soft_time_limit} s to {stage}")
    if isinstance(err, TRANSIENT_ERRORS):
        return _retry_or_fail(task, job, i, err)
    return _unexpected(job, i, name, err)  # a bug or a misconfiguration


def _unexpected(job: str, i: int, name: str, err: Exception) -> dict:
    # Logged with its traceback for the operator; the user sees what happened and what to do.
    log.exception("job %s item %d (%s) failed unexpectedly", job, i, name)
    return _fail(job, i, f"{name}: internal error ({type(err).__name__}: {err}); retry the job later")


def _poisoned(task, job: str, i: int) -> dict | None:
    """Fail an item whose task keeps killing its worker, instead of requeueing it forever."""
    # Keyed by retry number too: a retry keeps its task id, and counting it as a death would
    # cut storage retries short and blame the image.
    attempt = f"{task.request.id}:{task.request.retries}"
    attempts = jobs().count_attempt(attempt, ttl_s=int(settings().retention_hours * 3600))
    if attempts > settings().max_attempts:
        return _fail(job, i, f"a worker died {attempts - 1} times processing this image; it was set aside")
    return None


def _retry_or_fail(task, job: str, i: int, err: Exception) -> dict:
    """Transient trouble (storage, network) is retried with backoff; after the last try the item fails."""
    if task.request.retries < task.max_retries:
        raise task.retry(exc=err, countdown=_countdown(task))
    return _fail(job, i, f"storage kept failing for {sum(RETRY_COUNTDOWNS)} s ({err}); retry the job")


def _countdown(task) -> int:
    return min(RETRY_COUNTDOWNS[task.request.retries], settings().visibility_timeout // 2)


def _unreadable(job: str, i: int, err: Exception) -> dict:
    """The item fails with the reason, and its upload is deleted now rather than kept for the retention
    period: nobody can use it, and a retry skips an item whose input is gone (tasks/submit.py)."""
    result = _fail(job, i, str(err))
    if result["status"] == "failed":  # not a late duplicate of an item that is done
        storage().delete(keys.input_key(job, i))
    return result


def _kept(job: str) -> bool:
    """After a write: False, with the job's objects deleted again, when the job was deleted while this
    task ran (the DELETE removed what was stored then, not what this task wrote after it)."""
    if not jobs().deleted(job):
        return True
    storage().delete_prefix(keys.job_prefix(job))
    return False


def _start(task, job: str, i: int, stage: str) -> dict | None:
    """Mark the item as in `stage`; or, where it must not run, the result to return at once:
    the job was deleted, the item already finished (a second delivery), or it kills workers."""
    if not jobs().update_item(job, i, stage):
        return _as_finished(job, i) if jobs().exists(job) else _DELETED | {"i": i}
    return _poisoned(task, job, i)


@app.task(name="cutout.infer", bind=True, max_retries=len(RETRY_COUNTDOWNS))
def infer(self, job: str, i: int) -> dict:
    if (early := _start(self, job, i, "inferring")) is not None:
        return early
    name, model, timings = jobs().item(job, i)["name"], jobs().model(job), pipeline.Timings()
    try:
        data = storage().get(keys.input_key(job, i))
        batcher = batchers().get(model)  # the job's model's own batcher: a batch never mixes models
        try:
            x = pipeline.prepare(data, name, batcher.model.spec, max_pixels=settings().max_pixels, timings=timings)
        except _UNREADABLE as err:
            return _unreadable(job, i, err)
        with timings.stage("infer"):
            alpha, batch_size = batcher.predict(x, timeout=settings().soft_time_limit)
        storage().put(keys.alpha_key(job, i), encode.encode_mask(alpha))
        if not _kept(job):
            return _DELETED | {"i": i}
    except Exception as err:  # noqa: BLE001 - sorted out by _outcome; none fails the chord
        return _outcome(self, job, i, name, "infer", err)
    metrics.infer_duration.labels(model).observe(timings.ms["infer"] / 1000)
    # The item records the model that made its alpha: a recompose reuses it, a retry remakes it.
    jobs().update_item(job, i, "inferring", batch_size=batch_size, model=batcher.name, timings=_rounded(timings))
    return {"i": i, "status": "inferred"}


@app.task(name="cutout.finish", bind=True, max_retries=len(RETRY_COUNTDOWNS))
def finish(self, previous: dict, job: str, i: int) -> dict:
    if previous.get("status") == "failed":
        return previous
    if (early := _start(self, job, i, "finishing")) is not None:
        return early
    record, item = jobs().job(job), jobs().item(job, i)
    if record is None:  # deleted since _start: nothing to finish
        return _DELETED | {"i": i}
    opts = Options(**record["options"])
    timings = pipeline.Timings()
    timings.ms.update(item.get("timings", {}))
    try:
        data = storage().get(keys.input_key(job, i))
        alpha = decode.decode_mask(storage().get(keys.alpha_key(job, i)), item["name"])
        try:
            result = pipeline.finish(data, item["name"], alpha, opts, max_pixels=settings().max_pixels,
                                     timings=timings)
        except _UNREADABLE as err:  # the alpha map decoded above: the full-size decode of the upload failed
            return _unreadable(job, i, err)
        key = keys.output_key(job, i, opts.extension)
        with timings.stage("store"):
            storage().put(key, result)
        if not _kept(job):
            return _DELETED | {"i": i}
    except Exception as err:  # noqa: BLE001 - sorted out by _outcome; none fails the chord
        return _outcome(self, job, i, item["name"], "finish", err)
    jobs().update_item(job, i, "done", output_key=key, timings=_rounded(timings))
    metrics.images_total.labels("done").inc()
    metrics.observe_timings(timings.ms)
    log.info("item done", extra={"job": job, "item": i, "ms": _rounded(timings)})
    return {"i": i, "status": "done", "key": key}


@app.task(name="cutout.package", bind=True, max_retries=len(RETRY_COUNTDOWNS))
def package(self, job: str) -> dict:
    """Chord body: the zip and manifest from the job record (the record, not the header results,
    is the truth, so a retry that re-ran only some items still packages all of them)."""
    if not jobs().exists(job):
        return {"zip": None}
    start = time.perf_counter()
    try:
        zip_key = _zip_what_is_stored(job)
        if not _kept(job):
            return {"zip": None}
    except TRANSIENT_ERRORS as err:
        raise self.retry(exc=err, countdown=_countdown(self)) from err
    metrics.stage_duration.labels("package").observe(time.perf_counter() - start)
    metrics.jobs_total.labels("done").inc()
    jobs().set_status(job, "done", zip_key=zip_key, finished=time.time())
    log.info("job done", extra={"job": job, "zip": zip_key})
    return {"zip": zip_key}


def _zip_what_is_stored(job: str) -> str:
    """The zip, after failing (with the reason) every done item whose output the store lost,
    e.g. an S3-compatible server that keeps objects in memory and was restarted."""
    while True:  # each pass fails at least one item, so it ends
        try:
            return write_zip(storage(), jobs(), job)
        except KeyNotFound as err:
            lost = [(i, it) for i, it in jobs().items(job).items()
                    if it["state"] == "done" and it.get("output_key") == err.args[0]]
            if not lost:
                raise
            for i, item in lost:
                _fail(job, i, f"{item['name']}: its output is gone from storage (the store lost it); retry the job",
                      force=True)


@task_prerun.connect
def _taken(task, **_):
    """Which queue and priority the workers are taking images from now, for the watchdog (JobStore.stalled)."""
    sent_at = getattr(task.request, "cutout_sent_at", None)
    if task.name in ("cutout.infer", "cutout.finish") and sent_at:
        info = task.request.delivery_info or {}
        jobs().taken(info.get("routing_key") or "unknown", int(info.get("priority") or 0), float(sent_at))


@app.task(name="cutout.launch")
def launch(job: str, indices: list[int], with_infer: bool) -> int:
    """Fan out a submitted job's chord (see tasks/submit.py); a job deleted meanwhile is left alone."""
    record = jobs().job(job)
    if record is None:
        return 0
    from tasks.submit import fan_out

    queue, lowest = fan_out(job, indices, with_infer, live_jobs=jobs().live_jobs(record["owner"]))
    jobs().launched(job, time.time(), queue, lowest)
    return len(indices)


@app.task(name="cutout.mark_failed")
def mark_failed(request, exc, traceback, job: str) -> None:
    """Errback of the chord body: a job whose packaging died says so instead of staying `running`."""
    if not jobs().exists(job):  # deleted while it packaged (its record went first): nothing to mark
        return
    log.error("job failed", extra={"job": job, "reason": str(exc)})
    metrics.jobs_total.labels("failed").inc()
    jobs().set_status(job, "failed", error=f"packaging failed: {exc}; retry the job")


def _rounded(timings: pipeline.Timings) -> dict:
    return {k: round(v, 1) for k, v in timings.ms.items()}
