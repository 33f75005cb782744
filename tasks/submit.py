"""Starting work: a new job, a retry of what did not finish, a recompose with new options.

Each publishes one `cutout.launch` message (queue `control`); the cpu worker that takes
it fans out the job's chord: header chain(infer @ gpu -> finish @ cpu) per image (or
finish alone, from the stored alpha, for a recompose), body package @ cpu with an
errback that marks the job failed. So a submit of 10,000 images is one publish, not
10,000 inside an HTTP request. Tasks are named, not imported, so the web app
enqueues without importing the model or torch.

Fairness: every image's infer and finish carry a priority from its rank, its position in the
launch times the owner's live jobs, so the first images of every job (and the whole of a small
job) go ahead of a big job's tail, and one user's many jobs interleave instead of stacking.
On Redis, priority 0 is taken first (tasks/app.py PRIORITY_STEPS); launch and package carry
none, i.e. 0. A retry or a redelivery keeps a message's priority (kombu restores it to its list).
"""

import functools
from dataclasses import asdict
from typing import BinaryIO

from celery import chain, chord

from matting_core.options import Options
from matting_core.registry import DEFAULT_MODEL, get_spec
from tasks import keys
from tasks.app import app
from tasks.jobs import JobStore, new_job_id
from tasks.queues import PRIORITY_STEPS
from tasks.storage import MiB, Storage

_CHUNK = MiB
# Rank (position in the launch × the owner's live jobs) below each bound -> that step of PRIORITY_STEPS;
# past the last, the lowest priority. 4 images of every job ahead of all tails; ×8 per step.
RANK_BOUNDS = (4, 32, 256)


def create_job(storage: Storage, store: JobStore, owner: str, files: list[tuple[str, bytes | BinaryIO]],
               options: Options, rejected: dict[int, str] | None = None, model: str = DEFAULT_MODEL) -> str:
    """Store the uploads by key, record the job, enqueue it; returns the job id.

    `rejected` items (index -> reason, e.g. over the size limit) are recorded as failed and not run.
    `model` (a registry name) is the job's for good: a retry or a recompose keeps it.
    """
    rejected = rejected or {}
    job = record_job(storage, store, owner, files, options, rejected, model)
    _launch(store, job, [i for i in range(len(files)) if i not in rejected], with_infer=True)
    return job


def record_job(storage: Storage, store: JobStore, owner: str, files: list[tuple[str, bytes | BinaryIO]],
               options: Options, rejected: dict[int, str] | None = None, model: str = DEFAULT_MODEL) -> str:
    """Store the uploads and the job record, without enqueueing anything."""
    get_spec(model)  # an unknown name fails here, naming the choices, before anything is stored
    rejected = rejected or {}
    job = new_job_id()
    for i, (_, data) in enumerate(files):
        if i not in rejected:
            if isinstance(data, bytes):
                storage.put(keys.input_key(job, i), data)
            else:  # a stream (a spooled upload): copied in chunks, never whole in memory
                storage.put_stream(keys.input_key(job, i), iter(functools.partial(data.read, _CHUNK), b""))
    store.create(job, owner, [name for name, _ in files], asdict(options), rejected, model)
    return job


def retry_job(storage: Storage, store: JobStore, job: str) -> list[int]:
    """Re-run every item that failed or never finished, then package again.

    Items whose upload was refused (never stored), or failed to decode (deleted then), stay failed:
    running them again cannot help. A done job with nothing to re-run is left as it is (no re-package,
    so its zip stays downloadable); a failed one is packaged again.
    """
    todo = [i for i, item in store.items(job).items()
            if item["state"] != "done" and storage.exists(keys.input_key(job, i))]
    if not todo and store.status(job) == "done":
        return todo
    store.requeue(job, todo)
    store.set_status(job, "queued", error="")
    _launch(store, job, todo, with_infer=True)
    return todo


def recompose(storage: Storage, store: JobStore, job: str, options: Options) -> list[int]:
    """New options on a finished batch: finish and package again from the stored alpha maps, no GPU.

    The alpha maps are the job's model's, so the model stays what it was.
    """
    store.set_options(job, asdict(options))
    todo = [i for i in store.items(job) if storage.exists(keys.alpha_key(job, i))]
    store.requeue(job, todo)
    store.set_status(job, "queued", error="")
    _launch(store, job, todo, with_infer=False)
    return todo


def _launch(store: JobStore, job: str, indices: list[int], with_infer: bool) -> None:
    store.launched(job, None)  # until the launch task runs, the watchdog may take it for lost
    app.signature("cutout.launch", (job, indices, with_infer)).apply_async()


def priority(rank: int) -> int:
    """The message priority (a kombu step; 0 first) of an image at this rank."""
    for bound, step in zip(RANK_BOUNDS, PRIORITY_STEPS, strict=False):
        if rank < bound:
            return step
    return PRIORITY_STEPS[-1]


def fan_out(job: str, indices: list[int], with_infer: bool, live_jobs: int = 1) -> tuple[str, int]:
    """The job's chord (run by the launch task). Idempotent enough to redeliver: every task
    it starts writes keys derived from the job and item, and counts items as sets.
    `live_jobs`: the owner's queued or running jobs, this one included (see the module's docstring).
    Returns the queue its images start in and the lowest priority they got (what the watchdog reads)."""
    task = app.signature
    body = task("cutout.package", (job,), immutable=True).on_error(task("cutout.mark_failed", (job,)))
    if not indices:  # a chord with an empty header never calls its body
        body.apply_async()
        return "cpu", 0
    pri = [priority(n * max(1, live_jobs)) for n in range(len(indices))]
    if with_infer:
        header = [chain(task("cutout.infer", (job, i), immutable=True).set(priority=p),
                        task("cutout.finish", (job, i)).set(priority=p))
                  for i, p in zip(indices, pri, strict=True)]
    else:
        header = [task("cutout.finish", ({"i": i, "status": "inferred"}, job, i), immutable=True).set(priority=p)
                  for i, p in zip(indices, pri, strict=True)]
    chord(header)(body)
    return ("gpu" if with_infer else "cpu"), max(pri)
