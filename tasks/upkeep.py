"""Housekeeping on beat's schedule: the retention sweep, the purge of deleted jobs, the watchdog."""

import time

from celery.utils.log import get_task_logger

from tasks import keys, metrics
from tasks.app import app
from tasks.context import jobs, settings, storage
from tasks.jobs import JobStore

log = get_task_logger(__name__)
# The purge deletes a deleted job's objects again this long after the DELETE (beat runs it every 20 s):
# by then every task that wrote before the tombstone was set has written; later ones clean up after
# themselves (tasks/work.py _kept). 10 s + 20 s + a queue wait keeps "nothing left after a minute".
PURGE_AFTER_S = 10


@app.task(name="cutout.sweep")
def sweep() -> int:
    """Delete jobs older than the retention period (their objects, then their records), and object
    prefixes that no record points at; returns how many of each it deleted, together."""
    cutoff = time.time() - settings().retention_hours * 3600
    expired = jobs().created_before(cutoff)
    for job in expired:
        storage().delete_prefix(keys.job_prefix(job))
        jobs().delete(job)
    orphans = _orphans(time.time() - settings().orphan_s)
    for prefix in orphans:
        storage().delete_prefix(prefix)
    if orphans:
        log.warning("orphan prefixes deleted", extra={"count": len(orphans)})
    return len(expired) + len(orphans)


def _orphans(cutoff: float) -> list[str]:
    """Job prefixes in storage with no job record, whose newest object was written before `cutoff`
    (younger ones may be an upload whose record is not written yet: objects go first)."""
    prefixes = list(storage().prefixes("jobs/"))
    statuses = jobs().statuses([p.removeprefix("jobs/").rstrip("/") for p in prefixes])
    return [p for p, status in zip(prefixes, statuses, strict=True)
            if status is None and (storage().newest(p) or 0) <= cutoff]


@app.task(name="cutout.purge")
def purge(after_s: float = PURGE_AFTER_S) -> int:
    """Delete again the objects of jobs deleted `after_s` ago or more (see _kept); how many jobs."""
    due = jobs().deleted_before(time.time() - after_s)
    for job in due:
        storage().delete_prefix(keys.job_prefix(job))
    jobs().purged(due)
    return len(due)


@app.task(name="cutout.watchdog")
def watchdog() -> list[str]:
    """Fail every job that made no progress for the stall timeout, saying why: no job stays `running` forever."""
    return fail_stalled(jobs(), settings().stall_timeout)


def fail_stalled(store: JobStore, limit: float) -> list[str]:
    """The watchdog's work on `store`, at the store's clock: the jobs it failed."""
    now = store.clock()
    failed = []
    for job in store.stalled(now, limit):
        reason = f"no progress for {_duration(limit)} (a worker or the broker was lost); retry the job"
        if store.fail_if_stalled(job, now - limit, reason):
            log.error("job stalled", extra={"job": job, "reason": reason})
            metrics.jobs_total.labels("failed").inc()
            failed.append(job)
    return failed


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} s"
